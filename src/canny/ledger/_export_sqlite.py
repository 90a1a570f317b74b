"""``canny ledger export`` from SQLite: chunks of rows, each one statement, made on several
connections at once when CPUs are idle, every connection reading the same snapshot, and
handed on in order.

Building the lines (:mod:`canny.ledger._export_sql`) is nearly all of an export's time. The
rows, in export order (``started_at_us``, then ``id``), are cut into chunks of
``chunk_rows``, and a chunk is one statement: the ``group_concat`` of its lines, handed on
as one ``bytes`` object, never decoded to text. (SQLite keeps a subquery's ``ORDER BY``
under an aggregate other than ``count``/``min``/``max``, so the lines come in key order; a
test checks it over chunk edges.) A statement a row would cost Python a call and an object
per row; and as Python's ``sqlite3`` lets go of the GIL while SQLite runs a statement,
chunks can be built on worker connections in parallel, where one row a statement would
hand the GIL back and forth for every row. The calling thread finds each chunk's first
key (an index walk on its own connection) and yields the chunks in order, with at most
``2 × workers`` chunks made ahead, so memory stays bounded whatever the size of the ledger.

Threads pay only on idle CPUs (:func:`default_workers`); on a busy machine the calling
thread builds every chunk itself, on its own connection.

One snapshot: each connection starts a read transaction, the first one before the others;
then the first ends its own and starts another, and ``PRAGMA data_version`` tells it whether
anyone committed in between. If no one did, every connection reads the snapshot the first
one began with. If someone did, all start again, a few times at most; then the export reads
on the first connection alone (slower, and as consistent).
"""

# SQL here is built from the caller's SQL (made of constants) and integers; every value is
# a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import os
import queue
import sqlite3
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from typing import Any

__all__ = ["CHUNK_ROWS", "TEXT_CHUNK_ROWS", "default_workers", "export_lines", "one_snapshot"]

#: Rows a chunk (about 1 kB a line without stored text: about 1 MB a chunk).
CHUNK_ROWS = 1000
#: Rows a chunk when the stored prompt and response text are exported too.
TEXT_CHUNK_ROWS = 100
#: Connections building chunks at most (besides the one finding chunk edges).
MAX_WORKERS = 4
#: Times the connections try to start on one snapshot before one reads alone.
SNAPSHOT_TRIES = 5

_ORDER = " ORDER BY started_at_us, id"
_FROM = "(started_at_us > ? OR id >= ?) AND started_at_us >= ?"
_BEFORE = "(started_at_us < ? OR id < ?) AND started_at_us <= ?"

Key = tuple[int, int]
Connect = Callable[[], AbstractContextManager[sqlite3.Connection]]


def default_workers() -> int:
    """Connections to build chunks on beside the calling thread: one per idle CPU (the CPUs
    less the 1-minute load average), at most :data:`MAX_WORKERS`; none when fewer than two
    are idle. On a busy machine a second thread only takes turns with the first, and its
    hand-offs and memory churn made a 1,000,000-row export slower, not faster (measured on
    a shared 2-CPU machine: docs/benchmarks.md)."""
    cpus = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load average here (Windows): count every CPU idle
        busy = 0.0
    idle = int(cpus - busy)
    return min(MAX_WORKERS, idle) if idle >= 2 else 0


def _begin(conn: sqlite3.Connection) -> int:
    """Start a read transaction and its snapshot; return the connection's data version."""
    conn.execute("BEGIN").close()
    cursor = conn.execute("PRAGMA data_version")  # reads: the snapshot starts here
    try:
        return int(cursor.fetchone()[0])
    finally:
        cursor.close()


def _end(conns: Sequence[sqlite3.Connection]) -> None:
    for conn in conns:
        if conn.in_transaction:
            conn.execute("ROLLBACK").close()


def one_snapshot(first: sqlite3.Connection, others: Sequence[sqlite3.Connection], version: int) -> tuple[bool, int]:
    """Start read transactions on ``others`` while ``first`` holds one begun at data
    version ``version``; then restart ``first``'s. Return (whether all of them read one
    snapshot, ``first``'s data version now). When not, ``others`` are left outside any
    transaction; ``first`` is always in one."""
    for conn in others:
        _begin(conn)
    _end([first])
    now = _begin(first)
    if now != version:
        _end(others)
    return now == version, now


class _Chunks:
    """The statements of one export: chunk edges and chunk text, within ``where``."""

    def __init__(self, line: str, where: Sequence[str], params: Sequence[Any], chunk_rows: int) -> None:
        self.where, self.params, self.rows = list(where), list(params), chunk_rows
        self.line = line

    def _select(self, what: str, conds: Sequence[str]) -> str:
        clauses = [*self.where, *conds]
        return f"SELECT {what} FROM attempts" + (" WHERE " + " AND ".join(clauses) if clauses else "") + _ORDER

    def first_key(self, conn: sqlite3.Connection) -> Key | None:
        return _key(conn, self._select("started_at_us, id", []) + " LIMIT 1", self.params)

    def next_key(self, conn: sqlite3.Connection, key: Key) -> Key | None:
        """The first key of the chunk after the one starting at ``key`` (None: no more rows)."""
        sql = self._select("started_at_us, id", [_FROM]) + " LIMIT 1 OFFSET ?"
        return _key(conn, sql, [*self.params, key[0], key[1], key[0], self.rows])

    def text(self, conn: sqlite3.Connection, start: Key, end: Key | None) -> bytes:
        """The lines of the rows from key ``start`` up to (not including) ``end``, each
        ending in a line break."""
        conds, params = [_FROM], [*self.params, start[0], start[1], start[0]]
        if end is not None:
            conds.append(_BEFORE)
            params += [end[0], end[1], end[0]]
        lines = self._select(f"{self.line} AS line", conds)
        cursor = conn.execute(f"SELECT CAST(group_concat(line, char(10)) || char(10) AS BLOB) FROM ({lines})", params)
        try:
            row = cursor.fetchone()
        finally:
            cursor.close()
        return bytes(row[0]) if row and row[0] is not None else b""


def _key(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Key | None:
    cursor = conn.execute(sql, params)
    try:
        row = cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else (int(row[0]), int(row[1]))


def export_lines(
    connection: Connect,
    line: str,
    where: Sequence[str],
    params: Sequence[Any],
    *,
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> Iterator[bytes]:
    """The lines (SQL ``line``, over the ``attempts`` rows matching every clause of
    ``where`` with ``params``) in export order, as chunks of bytes; connections come from
    ``connection()`` (a pool's context manager). ``workers``: connections building chunks
    (default :func:`default_workers`; 0: the calling thread builds every chunk)."""
    chunks = _Chunks(line, where, params, chunk_rows)
    with ExitStack() as stack:
        first = stack.enter_context(connection())
        stack.callback(_end, [first])
        version = _begin(first)
        start = chunks.first_key(first)
        if start is None:
            return
        count = default_workers() if workers is None else workers
        others: list[sqlite3.Connection] = []
        if count and chunks.next_key(first, start) is not None:  # more than one chunk
            others = [stack.enter_context(connection()) for _ in range(count)]
            stack.callback(_end, others)
            for _ in range(SNAPSHOT_TRIES):
                same, version = one_snapshot(first, others, version)
                if same:
                    break
            else:
                others = []
            start = chunks.first_key(first)  # again: ``first`` may have a newer snapshot
        if start is None:
            return
        if others:
            yield from _in_parallel(chunks, first, start, others)
            return
        while start is not None:
            end = chunks.next_key(first, start)
            yield chunks.text(first, start, end)
            start = end


def _in_parallel(
    chunks: _Chunks, first: sqlite3.Connection, start: Key, others: Sequence[sqlite3.Connection]
) -> Iterator[bytes]:
    """The chunks from key ``start`` on, built on ``others``; ``first`` finds the edges."""
    idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
    for conn in others:
        idle.put(conn)

    def build(begin: Key, end: Key | None) -> bytes:
        conn = idle.get()  # never waits: no more chunks are built at once than connections
        try:
            return chunks.text(conn, begin, end)
        finally:
            idle.put(conn)

    ahead: deque[Future[bytes]] = deque()
    pool = ThreadPoolExecutor(max_workers=len(others), thread_name_prefix="canny-export")
    next_start: Key | None = start
    try:
        while True:
            while next_start is not None and len(ahead) < 2 * len(others):
                end = chunks.next_key(first, next_start)
                ahead.append(pool.submit(build, next_start, end))
                next_start = end
            if not ahead:
                return
            yield ahead.popleft().result()
    finally:
        if ahead:  # stopped early (an error, or the reader went away): stop the statements
            for future in ahead:
                future.cancel()
            for conn in others:
                conn.interrupt()
        pool.shutdown(wait=True, cancel_futures=True)
