"""``canny ledger export`` from SQLite: the rows in chunks, each chunk one statement.

Building the lines (:mod:`canny.ledger._export_sql`) is nearly all of an export's time. The
rows, in export order (``started_at_us``, then ``id``), are cut into chunks of
``chunk_rows``, and a chunk is one statement: the ``group_concat`` of its lines, handed on
as one ``bytes`` object, never decoded to text. The order of the lines in a chunk is
promised by SQLite from 3.44 on, where the aggregate takes its own ``ORDER BY`` (used
there); before 3.44 the lines come in the order of the ordered subquery they are
aggregated from, which is what SQLite does but does not document, and a test checks it
over chunk edges. So Python makes one object a chunk, not one a row. Each
chunk's first key comes from a walk of the ``started_at_us`` index. The whole export is one
read transaction: one snapshot, so rows written meanwhile are not in it, and memory holds
a chunk or two whatever the size of the ledger.

Chunks built on several connections at once (threads, every connection on one snapshot)
were tried and dropped: on the 2-CPU machine of docs/benchmarks.md two threads took twice
as long as one, even with both CPUs idle (SQLite as Python ships it here counts every
allocation under one global mutex and has no lookaside, and a line costs dozens of them).
"""

# SQL here is built from the caller's SQL (made of constants) and integers; every value is
# a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["CHUNK_ROWS", "TEXT_CHUNK_ROWS", "export_lines"]

#: Rows a chunk (about 1 kB a line without stored text: about 1 MB a chunk).
CHUNK_ROWS = 1000
#: Rows a chunk when the stored prompt and response text are exported too.
TEXT_CHUNK_ROWS = 100

_ORDER = " ORDER BY started_at_us, id"
_FROM = "(started_at_us > ? OR id >= ?) AND started_at_us >= ?"
_BEFORE = "(started_at_us < ? OR id < ?) AND started_at_us <= ?"

Key = tuple[int, int]

#: A chunk's lines joined in key order: ``ORDER BY`` inside the aggregate where SQLite has it.
_CONCAT = (
    "group_concat(line, char(10) ORDER BY started_at_us, id)"
    if sqlite3.sqlite_version_info >= (3, 44, 0)
    else "group_concat(line, char(10))"
)


class _Chunks:
    """The statements of one export: chunk edges and chunk text, within ``where``."""

    def __init__(self, line: str, where: Sequence[str], params: Sequence[Any], chunk_rows: int) -> None:
        self.line, self.where, self.params, self.rows = line, list(where), list(params), chunk_rows

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
        lines = self._select(f"started_at_us, id, {self.line} AS line", conds)
        cursor = conn.execute(f"SELECT CAST({_CONCAT} || char(10) AS BLOB) FROM ({lines})", params)
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
    conn: sqlite3.Connection, line: str, where: Sequence[str], params: Sequence[Any], *, chunk_rows: int = CHUNK_ROWS
) -> Iterator[bytes]:
    """The lines (SQL ``line``, over the ``attempts`` rows matching every clause of
    ``where`` with ``params``) in export order, as chunks of bytes, read on ``conn`` (in
    autocommit mode) in one read transaction."""
    chunks = _Chunks(line, where, params, chunk_rows)
    conn.execute("BEGIN").close()
    try:
        start = chunks.first_key(conn)
        while start is not None:
            end = chunks.next_key(conn, start)
            yield chunks.text(conn, start, end)
            start = end
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK").close()
