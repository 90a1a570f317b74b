"""The journal: the rows a process's writer has not committed yet, appended to a local file
first, so that the writer may gather rows and commit them together without a crash losing
any.

The writer (:mod:`canny.ledger.writer`) commits the rows of a process's calls in groups,
up to :data:`~canny.ledger.writer.GROUP_SECONDS` after the first of them: one commit for
many rows, where one per row costs a busy process more than its calls do. In the
meantime each row lives in this process's journal, written in the calling thread with one
``write`` on an ``O_APPEND`` descriptor (a few microseconds, no ``fsync``: the page cache
outlives a killed process, as SQLite's ``synchronous=NORMAL`` does). That is every
finished attempt's row, before the call returns, and the row in flight of an attempt
where attempts take longer (a remote API; where they all end within moments, a row in
flight waits unwritten and is dropped when its attempt's row follows). A process killed
with ``kill -9`` leaves its journal behind; the next client or meter that opens the same
ledger (:func:`canny.ledger.open_for_calls`) writes its rows into the ledger (rows in
flight as rows in flight, which become ``lost`` at their lease end as always) and removes
it. A row written twice is harmless: the ledger keeps one per ``(call_id, attempt)``.

Files live in ``<data dir>/journal/`` (``CANNY_HOME`` when set), mode ``0600``, named
after the ledger (the spool's hash of its location), the process and a random part (a
reused pid never takes over a file an earlier process left). A live
process holds an exclusive ``flock`` on each of its journal files, so recovery takes
only the files of processes that are gone. Each process keeps two files and alternates:
the writer switches appends to the other file when it takes a batch, and empties the
first once the batch is committed (or spooled).

A line is a JSON array: the format version, ``"r"`` and the values of the ``attempts``
columns (:data:`canny.ledger._sql.COLUMNS`) as they are written, ``"b"`` and those of
the ``inflight`` columns (:data:`canny.ledger._sql.INFLIGHT_COLUMNS`), or ``"f"``, a call id
and an attempt number: that attempt's row in flight goes (it was never sent).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
import warnings
import weakref
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canny.ledger.records import AttemptRecord

__all__ = [
    "KINDS", "VERSION", "Forgotten", "Journal", "decode", "encode", "journal_dir", "others", "recover", "waiting",
]  # fmt: skip

VERSION = 1
_SUFFIX = ".jsonl"
#: Seconds after which a hidden file (``.<name>.new``) that a crash left between its
#: creation and its rename is removed by recovery (a live process holds one for microseconds).
STALE_HIDDEN_SECONDS = 600.0


def journal_dir(environ: dict[str, str] | None = None) -> Path:
    """Where the journals of every ledger are kept."""
    from canny.config import data_dir

    return data_dir(environ) / "journal"


def _prefix(location: str) -> str:
    """The part of a journal's name that names its ledger (the spool's digest)."""
    from canny.ledger.spool import spool_path

    return spool_path(location).stem


def encode(params: Sequence[Any], kind: str = "record") -> bytes:
    """One journal line: a finished attempt's row (``record``: ``attempts`` column values),
    a row in flight (``begin``: ``inflight`` column values), or the removal of a row in
    flight whose attempt was never sent (``forget``: call id and attempt)."""
    row = [VERSION, KINDS[kind], *params]
    return (json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


#: The one-letter name of each kind of queued operation, in journal lines and in the one
#: statement of a SQLite batch (:mod:`canny.ledger._batch_sqlite`).
KINDS = {"record": "r", "begin": "b", "forget": "f"}


@dataclass(frozen=True)
class Forgotten:
    """A journal line saying that the row in flight of attempt ``key`` goes: the attempt
    was never sent (a later middleware answered the meter's request)."""

    key: tuple[str, int]


def decode(line: bytes) -> AttemptRecord | tuple[Any, ...] | Forgotten:
    """What one journal line holds: the record of a finished attempt, the ``inflight``
    column values of a row in flight, or a :class:`Forgotten` row in flight;
    ``ValueError`` when it is not a journal line."""
    from canny.ledger._sql import COLUMNS, INFLIGHT_COLUMNS, record_from_row

    values = json.loads(line)
    if not isinstance(values, list) or len(values) < 2 or values[0] != VERSION:
        raise ValueError("not a journal line")
    kind, rest = values[1], values[2:]
    if kind == "b" and len(rest) == len(INFLIGHT_COLUMNS):
        return tuple(rest)
    if kind == "f" and len(rest) == 2 and isinstance(rest[0], str) and isinstance(rest[1], int):
        return Forgotten((rest[0], rest[1]))
    if kind != "r" or len(rest) != len(COLUMNS):
        raise ValueError("not a journal line")
    try:
        return record_from_row(rest)
    except (TypeError, KeyError, ArithmeticError) as exc:
        raise ValueError(str(exc)) from None


def _flock(fd: int, *, wait: bool) -> bool:
    """Take the exclusive lock of a journal file; ``False`` when another process holds it."""
    if sys.platform == "win32":  # pragma: no cover - no flock: recovery trusts names alone
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class Journal:
    """The two journal files of one ledger in this process (see the module's docstring).

    Not thread-safe by itself: the writer calls it under its own lock.
    """

    def __init__(self, location: str, directory: Path | None = None) -> None:
        self.location = location
        self._dir = directory or journal_dir()
        self._prefix = _prefix(location)
        # A random name part, not the pid alone: a pid is reused, and a file a process of
        # the same pid left behind must wait for recovery, not be replaced.
        self._token = secrets.token_hex(8)
        self._owner = [os.getpid()]
        self._fds: list[int | None] = [None, None]
        self._paths: list[Path | None] = [None, None]
        self._dirty = [False, False]
        #: Files holding rows the writer failed to write: never emptied, left for recovery.
        self._kept = [False, False]
        self.current = 0
        self.failed: OSError | None = None
        # A ledger never closed: its files are let go of when the journal is collected (not
        # at exit, where the writers close first and commit what their journals hold).
        finalizer = weakref.finalize(self, _let_go, self._fds, self._paths, self._dirty, self._owner)
        finalizer.atexit = False

    @property
    def _pid(self) -> int:
        return self._owner[0]

    def _open(self, which: int) -> int:
        fd = self._fds[which]
        if fd is not None:
            return fd
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{self._prefix}.{self._pid}.{self._token}.{which}{_SUFFIX}"
        path = self._dir / name
        # Created under a name recovery ignores, locked, and only then given its real
        # name: recovery never takes a live process's file for a dead one's.
        hidden = self._dir / f".{name}.new"
        fd = os.open(hidden, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _flock(fd, wait=True)
            os.replace(hidden, path)
        except BaseException:
            os.close(fd)
            raise
        self._fds[which], self._paths[which] = fd, path
        return fd

    @staticmethod
    def line(kind: str, params: Sequence[Any]) -> bytes:
        """The line of a queued operation of ``kind`` (``record``, ``begin``, ``forget``) with values
        ``params`` (:func:`encode`)."""
        return encode(params, kind)

    def append(self, line: bytes) -> bool:
        """Append ``line`` to the current file; ``False`` when the journal cannot be
        written (the row must then be committed at once)."""
        if self.failed is not None:
            return False
        try:
            fd = self._open(self.current)
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(f"short write to the journal ({written} of {len(line)} bytes)")
        except OSError as exc:
            self.failed = exc
            return False
        self._dirty[self.current] = True
        return True

    def switch(self) -> int | None:
        """Send appends to the other file; return the file to empty once the rows taken so
        far are committed (``None``: nothing was appended to it)."""
        taken = self.current
        self.current = 1 - taken
        return taken if self._dirty[taken] else None

    def empty(self, which: int) -> None:
        """Empty file ``which``: its rows are committed (or spooled)."""
        fd = self._fds[which]
        if fd is None or self._kept[which]:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError as exc:
            self.failed = exc  # the rows stay there, and recovery writes them again: harmless
            return
        self._dirty[which] = False

    def keep(self, which: int) -> None:
        """File ``which`` holds rows the writer could not write: it is never emptied, and
        stays for recovery; no row waits for a group any more."""
        self._kept[which] = True
        if self.failed is None:
            self.failed = OSError("journaled rows not written")

    def close(self) -> None:
        """Remove both files (every row is committed or spooled) and let go of them."""
        _let_go(self._fds, self._paths, self._dirty, self._owner)

    def forget_after_fork(self) -> None:
        """In a forked child: let go of the parent's files without touching them."""
        for which in (0, 1):
            fd = self._fds[which]
            if fd is not None:
                with suppress(OSError):
                    os.close(fd)  # the parent's descriptor, and its lock, stay with the parent
        # In place: the finalizer holds these lists.
        self._fds[:], self._paths[:], self._dirty[:], self._kept[:] = (
            [None, None],
            [None, None],
            [False, False],
            [False, False],
        )
        self._owner[0], self.current, self._token = os.getpid(), 0, secrets.token_hex(8)


def _let_go(fds: list[int | None], paths: list[Path | None], dirty: list[bool], owner: list[int]) -> None:
    """Close a journal's files, removing those with no rows waiting (in the process that made them)."""
    for which in (0, 1):
        fd, path = fds[which], paths[which]
        if fd is None or path is None:
            continue
        if not dirty[which] and os.getpid() == owner[0]:
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            os.close(fd)
        fds[which] = paths[which] = None


def _orphans(location: str, directory: Path, *, mine: bool = True) -> Iterator[Path]:
    """The journal files in ``directory`` of the ledger at ``location`` (``mine``), or of
    every other ledger."""
    prefix = _prefix(location) + "."
    try:
        names = sorted(os.listdir(directory))
    except OSError:  # no journals yet, or none this user may read
        return
    for name in names:
        if name.endswith(_SUFFIX) and name.startswith(prefix) == mine:
            yield directory / name


def _ended(location: str, directory: Path, *, mine: bool = True) -> Iterator[tuple[Path, int]]:
    """The journal files that processes which ended left for the ledger at ``location``
    (or, not ``mine``, for other ledgers), each open and locked while the caller holds it
    (closed, and so unlocked, after). A file whose process still runs, or that another
    process recovered meanwhile, is passed over."""
    for path in _orphans(location, directory, mine=mine):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue  # gone meanwhile (another process recovered it)
        try:
            # Locked: its process is gone; still there: nobody recovered it just before our lock.
            if _flock(fd, wait=False) and os.path.exists(path):
                yield path, fd
        finally:
            os.close(fd)


def waiting(location: str, directory: Path | None = None) -> int:
    """How many rows wait in the journals that processes which ended left for the ledger
    at ``location`` (:func:`recover` writes them at the next open for calls)."""
    count = 0
    for _, fd in _ended(location, directory or journal_dir()):
        with open(fd, "rb", closefd=False) as stream:
            count += sum(1 for line in stream if line.endswith(b"\n"))
    return count


def others(location: str, directory: Path | None = None) -> int:
    """How many journal files that ended processes left for ledgers other than the one at
    ``location`` hold rows (each is written into its own ledger when that ledger is next
    opened for calls; the journal of a ledger that was deleted stays until removed)."""
    count = 0
    for _, fd in _ended(location, directory or journal_dir(), mine=False):
        count += os.fstat(fd).st_size > 0
    return count


def recover(ledger: Any, directory: Path | None = None) -> int:
    """Write into ``ledger`` the rows that processes which ended without committing them
    left in their journals, and remove those journals; return how many rows were read.
    A journal whose process still runs is left alone. If the ledger fails, the journal
    stays for the next open; unreadable lines go to a ``.bad`` file beside it."""
    location = getattr(ledger, "location", None)
    if not isinstance(location, str) or not location:
        return 0
    directory = directory or journal_dir()
    _remove_stale_hidden(location, directory)
    return sum(_replay(ledger, path, fd) for path, fd in _ended(location, directory))


def _one_at_a_time(ledger: Any, items: list[tuple[bytes, AttemptRecord | tuple[Any, ...]]]) -> list[bytes]:
    """Write journaled rows one by one; return the lines of those the ledger refuses with
    ``ValueError`` (text it cannot encode, an outcome it does not know), as the spool does."""
    refused = []
    for line, item in items:
        try:
            if isinstance(item, tuple):
                ledger.record_all([], in_flight=[item])
            else:
                ledger.record_all([item])
        except ValueError:
            refused.append(line)
    return refused


def _remove_stale_hidden(location: str, directory: Path) -> None:
    """Remove the hidden files of this ledger's journals that a crash left between their
    creation and their rename (empty: nothing is written before the rename), once they are
    :data:`STALE_HIDDEN_SECONDS` old and no process holds them."""
    prefix = "." + _prefix(location) + "."
    try:
        names = [name for name in os.listdir(directory) if name.startswith(prefix) and name.endswith(".new")]
    except OSError:
        return
    now = time.time()
    for name in names:
        path = directory / name
        try:
            if now - path.stat().st_mtime < STALE_HIDDEN_SECONDS:
                continue
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _flock(fd, wait=False):
                path.unlink(missing_ok=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def _replay(ledger: Any, path: Path, fd: int) -> int:
    from canny.errors import CannyWarning, LedgerError

    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    records: list[AttemptRecord] = []
    in_flight: list[tuple[Any, ...]] = []
    items: list[tuple[bytes, AttemptRecord | tuple[Any, ...]]] = []
    forgotten: set[tuple[str, int]] = set()
    bad: list[bytes] = []
    for line in b"".join(chunks).splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            item = decode(line)
        except ValueError:
            bad.append(line if line.endswith(b"\n") else line + b"\n")
            continue
        if isinstance(item, Forgotten):
            forgotten.add(item.key)
            continue
        items.append((line, item))
    # A row in flight forgotten later in the journal never happened.
    items = [(line, item) for line, item in items if not (isinstance(item, tuple) and tuple(item[:2]) in forgotten)]
    for _, item in items:
        if isinstance(item, tuple):
            in_flight.append(item)
        else:
            records.append(item)
    if records or in_flight:
        try:
            try:
                ledger.record_all(records, in_flight=in_flight)
            except ValueError:  # a row this ledger cannot hold: the others are written, it is set aside
                bad.extend(_one_at_a_time(ledger, items))
        except LedgerError as exc:
            warnings.warn(
                f"{len(records)} journaled row(s) not written yet ({exc.message}); they stay in {path}",
                CannyWarning,
                stacklevel=3,
            )
            return 0
    if bad:
        with path.with_suffix(".bad").open("ab") as rejected:
            rejected.writelines(bad)
        warnings.warn(
            f"{len(bad)} unreadable or refused line(s) of {path} moved to {path.with_suffix('.bad')}",
            CannyWarning,
            stacklevel=3,
        )
    path.unlink(missing_ok=True)
    return len(records) + len(in_flight)
