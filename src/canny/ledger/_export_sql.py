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
written by ``json.dumps``). Each CSV line is made in the SELECT too, quoted as
``csv.writer`` quotes (:func:`csv_line_sql`).
"""

# SQL here is built from the column names of the attempts table (constants); every value
# from a caller is a bound parameter.

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from functools import cache

from canny.ledger.migrations import Dialect

__all__ = ["TIME_COLUMNS", "csv_header", "csv_line_sql", "export_columns", "jsonl_sql", "line_sql"]

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
#: The SQL literal of one double quote.
_QUOTE = "'\"'"


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
    # Text ending in 1-9 has no zeros to trim and is not "-0": as it is (most costs).
    # (Byte order: PostgreSQL's collation of the column might otherwise put "." or "-" in between.)
    last = f"substr({column}, -1)" if dialect == "sqlite" else f'right({column}, 1) COLLATE "C"'
    plain = f"coalesce(nullif(nullif({trimmed}, '-0'), ''), '0')"
    return f"CASE WHEN {last} BETWEEN '1' AND '9' THEN {column} ELSE {plain} END"


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


def export_columns(columns: Sequence[str], *, include_text: bool) -> list[str]:
    """The ``attempts`` columns of an export, in order: ``columns`` less the stored
    prompt and response text unless ``include_text``."""
    return [n for n in columns if include_text or n not in ("prompt_text", "response_text")]


def line_sql(dialect: Dialect, fmt: str, columns: Sequence[str]) -> str:
    """SQL for one exported line (no line break) of the export ``columns``: ``jsonl`` or ``csv``."""
    if fmt == "jsonl":
        return jsonl_sql(dialect, columns)
    if fmt == "csv":
        return csv_line_sql(dialect, columns)
    raise ValueError(f"unknown export format {fmt!r} (jsonl or csv)")


def csv_header(columns: Sequence[str]) -> bytes:
    """The CSV header line of the export ``columns`` (the AttemptRecord field names)."""
    return (",".join(_key(name) for name in columns) + "\n").encode()


@cache
def _csv_quotes() -> tuple[str, ...]:
    """The characters that make ``csv.writer`` (QUOTE_MINIMAL, ``lineterminator="\\n"``)
    quote a cell, as this Python's ``csv`` does: a bare carriage return is quoted only
    from Python 3.11.9 / 3.12.3 on, so ask the module instead of assuming."""
    quoted = []
    for char in (",", '"', "\n", "\r"):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow([f"a{char}", "b"])
        if buffer.getvalue().startswith('"'):
            quoted.append(char)
    return tuple(quoted)


def _char_sql(dialect: Dialect, char: str) -> str:
    """A SQL literal of one of the CSV quoting characters."""
    if char in "\n\r":
        return f"char({ord(char)})" if dialect == "sqlite" else f"chr({ord(char)})"
    return _QUOTE if char == '"' else f"'{char}'"


def _quoted_sql(column: str) -> str:
    """SQL for ``column`` as a quoted CSV cell (quotes doubled)."""
    return f"'\"' || replace({column}, {_QUOTE}, '\"\"') || '\"'"


def _csv_text_sql(dialect: Dialect, column: str) -> str:
    """SQL for the CSV cell of a free-text ``column`` (NULL when NULL), quoted exactly when
    ``csv.writer`` would (each test a byte search, so a NUL in the text hides nothing)."""
    find = "instr" if dialect == "sqlite" else "strpos"
    test = " OR ".join(f"{find}({column}, {_char_sql(dialect, c)}) > 0" for c in _csv_quotes())
    return f"CASE WHEN {test} THEN {_quoted_sql(column)} ELSE {column} END"


def _csv_json_sql(dialect: Dialect, column: str) -> str:
    """SQL for the CSV cell of a spliced JSON column (``tags``, ``extra``: a list of strings
    or an object, as ``json.dumps`` wrote it). Such text holds no raw line break, and a comma
    only beside a string, so it needs quoting exactly when it holds a double quote."""
    find = "instr" if dialect == "sqlite" else "strpos"
    return f"CASE WHEN {find}({column}, {_QUOTE}) > 0 THEN {_quoted_sql(column)} ELSE {column} END"


def _free_text(columns: Sequence[str]) -> list[str]:
    """The export ``columns`` holding text a caller wrote (any character at all)."""
    plain = (*TIME_COLUMNS, *_INTEGERS, *_BOOLS, *_SPLICED, "cost_usd")
    return [name for name in columns if name not in plain]


def csv_line_sql(dialect: Dialect, columns: Sequence[str]) -> str:
    """SQL for one CSV line of the export ``columns``, as ``csv.writer`` writes the cells of
    :func:`_text_sql` (NULL as an empty cell).

    PostgreSQL: one ``format`` call, each free-text cell quoted if it must be. SQLite: one
    ``printf`` of the raw cells when no free-text cell of the row holds a comma, a double
    quote, a backslash or a control character (one ``json_array`` shows all but the comma
    by a backslash; NUL among them, which ``printf`` would cut the text at); other rows are
    put together with ``||``, each cell tested and quoted on its own.
    """
    free = _free_text(columns)

    def cell(name: str, *, raw: bool) -> str:
        if name in _SPLICED:
            return _csv_json_sql(dialect, name)
        if name in free:
            return name if raw else _csv_text_sql(dialect, name)
        return _text_sql(dialect, name)

    slots = ",".join("%s" for _ in columns)
    if dialect != "sqlite":
        return f"format('{slots}', {', '.join(cell(n, raw=False) for n in columns)})"
    fast = f"printf('{slots}', {', '.join(cell(n, raw=True) for n in columns)})"
    if not free:
        return fast
    careful = " || ',' || ".join(
        f"({cell(n, raw=False)})" if n in _NOT_NULL else f"coalesce({cell(n, raw=False)}, '')" for n in columns
    )
    texts = ", ".join(free)
    together = "%s" * len(free)
    plain = f"instr(json_array({texts}), '\\') = 0 AND instr(printf('{together}', {texts}), ',') = 0"
    return f"CASE WHEN {plain} THEN {fast} ELSE {careful} END"
