"""The spool: ledger rows that could not be written after a billed call, kept on local disk
until the ledger takes them.

When a row cannot be written after the API billed an attempt (the ledger locked past its
busy timeout, a full disk, a PostgreSQL server gone mid-call), :class:`~canny._call.CallRun`
appends it here instead of dropping it. The next time a client or meter opens that ledger
(:func:`canny.ledger.open_for_calls`), the spooled rows are written into it and the spool
is emptied. ``canny doctor`` and ``canny report`` say how many rows wait.

One file per ledger, ``<data dir>/spool/<hash of the ledger location>.jsonl`` (the data dir
is ``CANNY_HOME`` when set), mode ``0600``. Each row is one JSON line written with a
single ``write`` on an ``O_APPEND`` descriptor and ``fsync``'d before the call returns, so
concurrent processes never interleave or lose lines. Writers hold a shared ``flock`` and
the drain an exclusive one, so a line appended while the spool is drained is never
truncated away. Writing a row twice is harmless: the ledger ignores a ``(call_id,
attempt)`` it already holds, so a drain interrupted half-way can simply run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canny.errors import LedgerError

if TYPE_CHECKING:
    from canny.ledger.records import AttemptRecord, Ledger

__all__ = ["decode", "drain", "encode", "keep", "location_of", "pending", "spool", "spool_path"]

_VERSION = 1
_TIMES = frozenset({"started_at", "ended_at", "first_token_at"})


def location_of(target: str | Path) -> str:
    """The ``location`` a ledger opened at ``target`` reports (a path, or a masked URL),
    computed without opening it."""
    text = str(target)
    if text.startswith(("postgres://", "postgresql://")):
        from canny.ledger.postgres import mask_url

        return mask_url(text)
    return str(Path(text.removeprefix("sqlite:///")).expanduser())


def spool_path(location: str, environ: dict[str, str] | None = None) -> Path:
    """Where the rows waiting for the ledger at ``location`` are kept."""
    from canny.config import data_dir

    where = location if "://" in location else os.path.abspath(location)
    digest = hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return data_dir(environ) / "spool" / f"{digest}.jsonl"


def encode(record: AttemptRecord, location: str) -> bytes:
    """One JSON line for ``record`` (money as exact strings, times in ISO 8601)."""
    from canny.ledger.records import record_values

    row: dict[str, Any] = {"v": _VERSION, "ledger": location}
    for name, raw in record_values(record).items():
        value = raw
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        row[name] = value
    return (json.dumps(row, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def decode(line: bytes) -> AttemptRecord:
    """The record of one spooled line; ``ValueError`` when it is not one."""
    from canny.ledger.records import ROW_FIELDS, record_from_values

    row = json.loads(line)
    if not isinstance(row, dict) or row.get("v") != _VERSION:
        raise ValueError("not a spooled row")
    values: dict[str, Any] = {}
    for name, raw in row.items():
        if name not in ROW_FIELDS:
            continue
        value: Any = raw
        if name in _TIMES and raw is not None:
            value = datetime.fromisoformat(raw)
        elif name == "cost_usd" and raw is not None:
            value = Decimal(raw)
        elif name == "tags":
            value = tuple(raw)
        values[name] = value
    try:
        return record_from_values(values)
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def _lock(fd: int, *, exclusive: bool) -> None:
    if sys.platform != "win32":
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)


def spool(location: str, record: AttemptRecord) -> Path:
    """Append ``record`` to the spool of the ledger at ``location``, durably; return the
    spool's path. Raises ``OSError`` when even that fails."""
    path = spool_path(location)
    line = encode(record, location)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        _lock(fd, exclusive=False)
        written = os.write(fd, line)  # one write: concurrent appends never interleave
        if written != len(line):
            raise OSError(f"short write to {path} ({written} of {len(line)} bytes)")
        os.fsync(fd)
    finally:
        os.close(fd)  # also releases the lock
    if created and sys.platform != "win32":
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def keep(ledger: object, record: AttemptRecord, error: LedgerError) -> str:
    """A row the ledger refused with ``error``: spool it (see the module's docstring) and
    return the warning that tells the caller where it waits, or that it is lost."""
    try:
        location = getattr(ledger, "location", None)
        if not isinstance(location, str) or not location:
            raise OSError("the ledger has no location to spool for")
        where = spool(location, record)
    except OSError as failure:
        return (
            f"ledger not written ({error.message}) and the row could not be spooled either "
            f"({failure.strerror or failure}): this attempt is not on the record"
        )
    return (
        f"ledger not written ({error.message}); the row waits in {where} and goes into the ledger "
        "the next time it opens"
    )


def pending(location: str) -> int:
    """How many rows wait in the spool of the ledger at ``location``."""
    try:
        with spool_path(location).open("rb") as stream:
            return sum(1 for line in stream if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


def _read_all(fd: int) -> bytes:
    chunks: list[bytes] = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def drain(ledger: Ledger) -> int:
    """Write the rows spooled for ``ledger`` into it and empty the spool; return how many
    were written. A row the ledger already holds is skipped by the ledger itself. If the
    ledger fails part-way, the spool is kept whole (its written rows are skipped next
    time) and a :class:`~canny._call.CannyWarning` says so. Lines that are not rows (a
    torn write) are moved to a ``.bad`` file next to the spool."""
    location = getattr(ledger, "location", None)
    if not isinstance(location, str) or not location:
        return 0
    path = spool_path(location)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        _warn(f"spooled rows not written: cannot open {path} ({exc.strerror or exc})")
        return 0
    try:
        _lock(fd, exclusive=True)
        data = _read_all(fd)
        if not data:
            return 0
        rows: list[tuple[bytes, AttemptRecord]] = []
        bad: list[bytes] = []
        for line in data.splitlines(keepends=True):
            try:
                if not line.endswith(b"\n"):
                    raise ValueError("torn line")
                rows.append((line, decode(line)))
            except ValueError:
                bad.append(line if line.endswith(b"\n") else line + b"\n")
        written = 0
        for line, record in rows:
            try:
                ledger.record(record)
            except ValueError:  # a row this ledger cannot hold (an outcome it does not know)
                bad.append(line)
            except LedgerError as exc:
                _warn(f"{len(rows)} spooled row(s) not written yet ({exc.message}); they stay in {path}")
                return 0
            else:
                written += 1
        if bad:
            with path.with_suffix(".bad").open("ab") as rejected:
                rejected.writelines(bad)
            _warn(f"{len(bad)} unreadable line(s) of {path} moved to {path.with_suffix('.bad')}")
        os.ftruncate(fd, 0)
        os.fsync(fd)
        return written
    finally:
        os.close(fd)


def _warn(message: str) -> None:
    from canny.errors import CannyWarning

    warnings.warn(message, CannyWarning, stacklevel=3)
