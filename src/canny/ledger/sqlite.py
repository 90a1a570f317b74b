"""The default ledger: one SQLite file, safe across threads and processes.

The file is created (with its parent directories) readable by its owner only (``0600``;
SQLite gives the ``-wal`` and ``-shm`` files the same mode). Every connection runs in WAL
mode with ``synchronous=NORMAL`` (a committed row survives a process crash; a power cut
may lose the last few), a busy timeout (10 s by default) and foreign keys on.

Connections come from a small pool: each write is one short ``BEGIN IMMEDIATE``
transaction on a connection used by one thread at a time, and a scan (``records()``, a
report) reads a consistent snapshot on a connection of its own, so writers are never
blocked by a long export. Processes coordinate through SQLite's own file locks.

Anything SQLite reports (a corrupt file, a read-only file or directory, a full disk, a
lock held past the busy timeout) is raised as :class:`canny.errors.LedgerError` with one
clean line naming the file, so callers can keep showing the answer.
"""

from __future__ import annotations

import os
import random
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canny.errors import LedgerError
from canny.ledger._sql import Pool, SQLLedger
from canny.ledger.migrations import Dialect, split_sqlite_script

if TYPE_CHECKING:
    from canny.ledger.writer import Op

__all__ = ["SQLiteLedger"]

_HINTS = {
    "file is not a database": "the file is corrupt or not a canny ledger; move it aside to start a new one",
    "malformed": "the file is corrupt; move it aside to start a new one (sqlite3 .recover may save rows)",
    "readonly": "the ledger is read-only; check the file's permissions or set CANNY_LEDGER",
    "database is locked": "another process held the ledger too long; try again",
    "disk is full": "free some disk space",
    "unable to open": "check that the directory exists and is writable, or set CANNY_LEDGER",
}


class _Tx:
    """A :class:`canny.ledger.migrations.Transaction` over one sqlite3 connection."""

    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self._conn.execute(sql, tuple(params))
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._conn.executemany(sql, rows).close()

    def script(self, sql: str) -> None:
        for statement in split_sqlite_script(sql):
            self._conn.execute(statement).close()


class SQLiteLedger(SQLLedger):
    """The ledger in one SQLite file at ``path`` (created and migrated on open)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout: float = 10.0, read_only: bool = False) -> None:
        self.path = Path(path).expanduser()
        self.location = str(self.path)
        self.read_only = read_only
        self._busy_ms = int(busy_timeout * 1000)
        if not read_only:
            self._create_file()
        elif not self.path.is_file():
            raise LedgerError(f"ledger {self.location}: no such file")
        self._pool: Pool[sqlite3.Connection] = Pool(self._connect, _close)
        try:
            if not read_only:
                self.migrate()
                self.sweep_on_open()
            else:
                self.applied_migrations()
        except BaseException:
            self._pool.close()
            raise

    def _create_file(self) -> None:
        """Create the file (``0600``) unless it exists; an existing one must be writable. An
        existing file is never opened here: closing any descriptor of a file drops every
        POSIX lock this process holds on it, so the SQLite locks of this process's other
        connections would go with it (and another process could checkpoint and remove the
        WAL under their readers: "disk I/O error")."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.path.exists():
                if not os.access(self.path, os.R_OK | os.W_OK):
                    raise PermissionError(13, "Permission denied", str(self.path))
                return
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return  # another thread or process created it just now
            os.close(fd)
        except OSError as exc:
            raise LedgerError(f"ledger {self.location}: cannot create it ({exc.strerror or exc})") from exc

    def _connect(self) -> sqlite3.Connection:
        try:
            if self.read_only:
                uri = f"{self.path.resolve().as_uri()}?mode=ro"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            else:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}").close()
            if not self.read_only:
                self._ensure_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL").close()
            conn.execute("PRAGMA foreign_keys = ON").close()
            conn.execute("SELECT count(*) FROM sqlite_master").close()
        except sqlite3.Error as exc:
            conn.close()
            raise self._error(exc) from exc
        return conn

    def _ensure_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL once. The switch needs an exclusive lock and SQLite reports "locked"
        at once (without waiting) while another process is switching too, so retry briefly."""
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            try:
                cursor = conn.execute("PRAGMA journal_mode")
                mode = cursor.fetchone()
                cursor.close()
                if mode and str(mode[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL").close()
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.02))

    def _error(self, exc: BaseException) -> LedgerError:
        text = str(exc) or type(exc).__name__
        hint = next((h for needle, h in _HINTS.items() if needle in text.lower()), None)
        return LedgerError(f"ledger {self.location}: {text}", hint=hint)

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[_Tx]:
        """One transaction (``BEGIN IMMEDIATE`` when ``write``); rolled back on error."""
        with self._holding() if write else self._reading(), self._pool.connection() as conn:
            try:
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN").close()
                try:
                    yield _Tx(conn)
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK").close()
                    raise
                conn.execute("COMMIT").close()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    #: Whether a writer's batch may go as one statement (:meth:`write_all`); off for good
    #: once this SQLite turns out to have no JSON functions.
    _one_statement = True

    def write_all(self, ops: Sequence[Op]) -> bool:
        """Write a writer's batch of rows, rows in flight and their removals in one
        statement and one transaction (:mod:`canny.ledger._batch_sqlite`, which says why);
        ``False`` when it cannot go that way, and nothing was written."""
        from canny.ledger import _batch_sqlite

        if not self._one_statement:
            return False
        text = _batch_sqlite.payload(ops)
        if text is None:
            return False
        with self._holding(), self._pool.connection() as conn:
            try:
                _batch_sqlite.write(conn, text)
            except sqlite3.Error as exc:
                if _batch_sqlite.no_json(exc):
                    self._one_statement = False
                    return False
                raise self._error(exc) from exc
        return True

    def _write_one(self, sql: str, params: Sequence[Any]) -> None:
        with self._holding(), self._pool.connection() as conn:
            try:
                conn.execute(sql, tuple(params)).close()  # autocommit: its own transaction
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def change_stamp(self) -> int:
        """A value that changes whenever a budget limit is added, changed or removed, by any
        connection of any process (a counter bumped by triggers: migration
        ``budget.0004_limits_version``). One small read, which does not wait for the
        writer thread: rows of attempts never change it."""
        with self._pool.connection() as conn:
            try:
                cursor = conn.execute("SELECT version FROM budget_limits_version WHERE id = 1")
                row = cursor.fetchone()
                cursor.close()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            return -1 if row is None else int(row[0])

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        self._await_writes()
        with self._pool.connection() as conn:
            try:
                cursor = conn.execute(sql, tuple(params))
                try:
                    while rows := cursor.fetchmany(2000):
                        yield from rows
                finally:
                    cursor.close()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def _export_lines(
        self, head: bytes, line: str, where: str, params: Sequence[Any], *, text: bool
    ) -> Iterator[bytes]:
        """Chunks of lines, each one statement, all in one read transaction
        (:mod:`canny.ledger._export_sqlite`)."""
        from canny.ledger import _export_sqlite

        self._await_writes()
        if head:
            yield head
        rows = _export_sqlite.TEXT_CHUNK_ROWS if text else _export_sqlite.CHUNK_ROWS
        with self._pool.connection() as conn:
            try:
                yield from _export_sqlite.export_lines(conn, line, [where] if where else [], params, chunk_rows=rows)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc

    def close(self) -> None:
        """Write what the writer holds, run the close hooks (:meth:`on_close`), then close
        every pooled connection; further use raises :class:`LedgerError`."""
        self._stop()
        self._pool.close()


def _close(conn: sqlite3.Connection) -> None:
    try:
        if conn.in_transaction:
            conn.execute("ROLLBACK").close()
    except sqlite3.Error:
        pass
    finally:
        conn.close()
