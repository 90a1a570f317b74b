"""A writer's batch in one SQLite statement (:meth:`canny.ledger.sqlite.SQLiteLedger.write_all`).

Why one statement: the writer thread shares the interpreter lock with the calling thread.
Python's ``sqlite3`` lets the lock go around every step of every statement, and a thread
that wants it back while the other one is busy waits for the switch interval (5 ms). A
group of rows written the usual way (``BEGIN``, a delete and an insert per row,
``COMMIT``) took the lock back dozens of times per commit. During a long stream, whose
thread is always busy, one commit then stretched over 10 to 16 ms, and each hand-over
interrupted the stream. One statement takes the lock back two or three times, whatever
the number of rows.

How: the batch goes to SQLite as one JSON array of ``[kind, values]`` items, which one
``INSERT`` hands, in order, to a temporary view whose ``INSTEAD OF`` triggers do what
:func:`canny.ledger._sql._apply` does for each kind:

* ``r``, an attempt's row (the :data:`~canny.ledger._sql.COLUMNS` values): its row in
  flight goes, a ``lost`` row of the same attempt gives way to a real one, the row is
  inserted unless the attempt already has one, and its tags are kept if it was;
* ``b``, a row in flight (the :data:`~canny.ledger._sql.INFLIGHT_COLUMNS` values);
* ``f``, the removal of a row in flight (call id and attempt).

The statement is a transaction of its own, as the batch was. The view and its triggers
are ``TEMP`` objects of the connection, made the first time it needs them; nothing is
added to the database's schema. A batch this cannot carry (text holding a NUL, which
SQLite's JSON functions do not return whole) or a SQLite without JSON functions takes
the usual path, as does any batch whose statement fails.
"""

# ruff: noqa: S608 - the SQL is made of this module's constants and "?" placeholders

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from canny.ledger._sql import COLUMNS, INFLIGHT_COLUMNS, op_values
from canny.ledger.journal import KINDS

if TYPE_CHECKING:
    from canny.ledger.writer import Op

__all__ = ["no_json", "payload", "write"]

_VIEW = "canny_batch"


def _at(index: int) -> str:
    return f"json_extract(NEW.v, '$[{index}]')"


_KEY = f"call_id = {_at(0)} AND attempt = {_at(1)}"
_TAGS = COLUMNS.index("tags")
_OUTCOME = COLUMNS.index("outcome")

#: The view and its triggers (``IF NOT EXISTS``: two ledger objects may share a connection's
#: file, never a connection, but making them twice is harmless).
_DDL: tuple[str, ...] = (
    f"CREATE TEMP VIEW IF NOT EXISTS {_VIEW} (kind, v) AS SELECT NULL, NULL WHERE 0",
    f"""CREATE TEMP TRIGGER IF NOT EXISTS {_VIEW}_r INSTEAD OF INSERT ON {_VIEW} WHEN NEW.kind = 'r' BEGIN
    DELETE FROM inflight WHERE {_KEY};
    DELETE FROM attempts WHERE {_at(_OUTCOME)} <> 'lost' AND {_KEY} AND outcome = 'lost';
    INSERT INTO attempts ({", ".join(COLUMNS)}, call_seq)
        SELECT {", ".join(_at(i) for i in range(len(COLUMNS)))},
            (SELECT count(*) FROM attempts WHERE call_id = {_at(0)})
        WHERE true ON CONFLICT (call_id, attempt) DO NOTHING;
    INSERT INTO attempt_tags (tag, attempt_id)
        SELECT DISTINCT tag.value, a.id FROM attempts AS a, json_each({_at(_TAGS)}) AS tag
        WHERE changes() > 0 AND a.{_KEY.replace(" AND ", " AND a.")}
        ON CONFLICT DO NOTHING;
END""",
    f"""CREATE TEMP TRIGGER IF NOT EXISTS {_VIEW}_b INSTEAD OF INSERT ON {_VIEW} WHEN NEW.kind = 'b' BEGIN
    INSERT INTO inflight ({", ".join(INFLIGHT_COLUMNS)})
        SELECT {", ".join(_at(i) for i in range(len(INFLIGHT_COLUMNS)))}
        WHERE true ON CONFLICT (call_id, attempt) DO NOTHING;
END""",
    f"""CREATE TEMP TRIGGER IF NOT EXISTS {_VIEW}_f INSTEAD OF INSERT ON {_VIEW} WHEN NEW.kind = 'f' BEGIN
    DELETE FROM inflight WHERE {_KEY};
END""",
)
_STATEMENT = (
    f"INSERT INTO {_VIEW} (kind, v) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?) ORDER BY key"
)


def payload(ops: Sequence[Op]) -> str | None:
    """The batch as the statement's one parameter, or ``None`` when one statement cannot
    carry it (a NUL in some text)."""
    items: list[list[Any]] = []
    for op in ops:
        values = op_values(op)
        if values is not None:
            items.append([KINDS[op.kind], values])
    text = json.dumps(items, ensure_ascii=False, separators=(",", ":"))
    return None if "\\u0000" in text else text


def write(conn: sqlite3.Connection, text: str) -> None:
    """Run the batch ``text`` (:func:`payload`) on ``conn``, in a transaction of its own."""
    try:
        conn.execute(_STATEMENT, (text,)).close()
    except sqlite3.OperationalError as exc:
        if f"no such table: {_VIEW}" not in str(exc):
            raise
        for statement in _DDL:
            conn.execute(statement).close()
        conn.execute(_STATEMENT, (text,)).close()


def no_json(exc: BaseException) -> bool:
    """Whether ``exc`` says this SQLite has no JSON functions (then every batch takes the
    usual path)."""
    text = str(exc)
    return "no such function: json" in text or "no such table: json_each" in text
