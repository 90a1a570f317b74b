"""``canny ledger export`` built by the database: each JSON line, or each CSV cell, is
made in the SELECT, so Python only writes what the cursor returns.

The bytes are exactly those of the reference path (:func:`canny.reports.export_text` over
:class:`~canny.ledger.AttemptRecord`\\ s): ``json.dumps`` with its default separators
(``", "`` and ``": "``) and ``ensure_ascii=False``; strings escaped as it escapes them
(``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t``, other control characters as ``\\u00xx``; both
SQLite's ``json_quote`` and PostgreSQL's ``to_json`` do the same); times as
``datetime.isoformat()`` in UTC (``2026-11-24T09:30:00.250000+00:00``, no fraction when
the microseconds are 0); the cost as plain decimal digits (:func:`canny.units.plain_digits`);
booleans as ``true``/``false``; ``tags`` and ``extra`` spliced in as stored (JSON text
written by ``json.dumps``). CSV takes the same cells, unquoted, and ``csv.writer`` quotes.
"""

# SQL here is built from the column names of the attempts table (constants); every value
# from a caller is a bound parameter.

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from typing import Any

from canny.ledger.migrations import Dialect

__all__ = ["TIME_COLUMNS", "csv_chunks", "csv_sql", "jsonl_chunks", "jsonl_sql"]

#: Export columns stored as integer microseconds, shown as ISO-8601 UTC text.
TIME_COLUMNS = ("started_at_us", "ended_at_us", "first_token_at_us")
_BOOLS = ("batch", "streamed")
_SPLICED = ("tags", "extra")
#: Integer columns that may be NULL (the others are NOT NULL).
_NULL_INTEGERS = ("status_code", "max_tokens")
_INTEGERS = (
    "attempt", "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests", "web_fetch_requests", "code_execution_requests", *_NULL_INTEGERS,
)  # fmt: skip
_NOT_NULL = ("call_id", "model", "outcome", "started_at_us", "ended_at_us", *_INTEGERS[:9], *_BOOLS, *_SPLICED)
_US = 1_000_000
#: Rows per chunk of text handed to the writer.
CHUNK_ROWS = 5000


def _iso_sql(dialect: Dialect, column: str) -> str:
    """SQL for ``from_us(column).isoformat()`` (``column`` not NULL; floored, so also
    right before 1970, where ``/`` and ``%`` round toward zero)."""
    seconds = f"{column} / {_US} - CASE WHEN {column} % {_US} < 0 THEN 1 ELSE 0 END"
    micro = f"({column} % {_US} + {_US}) % {_US}"
    if dialect == "sqlite":
        stamp = f"replace(datetime({seconds}, 'unixepoch'), ' ', 'T')"
        fraction = f"printf('.%06d+00:00', {micro})"
    else:
        stamp = f"to_char(to_timestamp({seconds}) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        fraction = f"'.' || lpad(({micro})::text, 6, '0') || '+00:00'"
    return f"{stamp} || CASE WHEN {column} % {_US} = 0 THEN '+00:00' ELSE {fraction} END"


def _digits_sql(dialect: Dialect, column: str) -> str:
    """SQL for :func:`canny.units.plain_digits` of the decimal text in ``column``."""
    dot = f"instr({column}, '.')" if dialect == "sqlite" else f"strpos({column}, '.')"
    trimmed = f"CASE WHEN {dot} > 0 THEN rtrim(rtrim({column}, '0'), '.') ELSE {column} END"
    return f"coalesce(nullif(nullif({trimmed}, '-0'), ''), '0')"


def _text_sql(dialect: Dialect, name: str) -> str:
    """SQL for the CSV cell of export column ``name`` (NULL for an empty cell)."""
    if name in TIME_COLUMNS:
        iso = _iso_sql(dialect, name)
        return iso if name in _NOT_NULL else f"CASE WHEN {name} IS NULL THEN NULL ELSE {iso} END"
    if name == "cost_usd":
        return f"CASE WHEN {name} IS NULL THEN NULL ELSE {_digits_sql(dialect, name)} END"
    if name in _BOOLS:
        return f"CASE WHEN {name} THEN 'true' ELSE 'false' END"
    return name


def _json_sql(dialect: Dialect, name: str) -> tuple[str, str]:
    """The ``printf`` slot (``%s`` or ``"%s"``) and SQL of the JSON value of export column
    ``name`` (never NULL: ``printf`` would write nothing)."""
    if name in TIME_COLUMNS or name == "cost_usd":
        text = _text_sql(dialect, name)
        if name in _NOT_NULL:
            return '"%s"', text
        return "%s", f"CASE WHEN {name} IS NULL THEN 'null' ELSE '\"' || {text} || '\"' END"
    if name in _BOOLS:
        return "%s", _text_sql(dialect, name)
    if name in _SPLICED or (name in _INTEGERS and name in _NOT_NULL):
        return "%s", name
    if name in _INTEGERS:
        return "%s", f"coalesce(CAST({name} AS TEXT), 'null')"
    if dialect == "sqlite":
        return "%s", f"json_quote({name})"  # 'null' for NULL
    return "%s", f"coalesce(to_json({name})::text, 'null')"


def _key(name: str) -> str:
    """The JSON key of export column ``name`` (the AttemptRecord field)."""
    return name[:-3] if name in TIME_COLUMNS else name


def jsonl_sql(dialect: Dialect, columns: Sequence[str]) -> str:
    """A SELECT list of one column: the JSON object of the export ``columns`` of a row
    (alias-free column names of ``attempts``), as ``json.dumps`` would write it. One
    ``printf``/``format`` call, not a chain of ``||`` (each of which copies the line so far)."""
    slots = [_json_sql(dialect, name) for name in columns]
    keys = ", ".join(f'"{_key(name)}": {slot}' for name, (slot, _) in zip(columns, slots, strict=True))
    values = ", ".join(sql for _, sql in slots)
    function = "printf" if dialect == "sqlite" else "format"
    return f"{function}('{{{keys}}}', {values})"


def csv_sql(dialect: Dialect, columns: Sequence[str]) -> str:
    """A SELECT list of the CSV cells of the export ``columns`` (NULL: an empty cell)."""
    return ", ".join(_text_sql(dialect, name) for name in columns)


def jsonl_chunks(rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    """Text chunks of JSON lines from rows of one line each (:func:`jsonl_sql`)."""
    it = iter(rows)
    while batch := list(islice(it, CHUNK_ROWS)):
        yield "\n".join([row[0] for row in batch]) + "\n"


def csv_chunks(header: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> Iterator[str]:
    """Text chunks of CSV: ``header``, then the rows of cells (:func:`csv_sql`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    it = iter(rows)
    while True:
        writer.writerows(islice(it, CHUNK_ROWS))  # None is written as an empty cell
        text = buffer.getvalue()
        if not text:
            return
        yield text
        buffer.seek(0)
        buffer.truncate()
