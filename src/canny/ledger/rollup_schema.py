"""The SQL of migration ``ledger.0007_rollups``: rollup tables, their triggers, a back-fill.

Kept apart from :mod:`canny.ledger.migrations` (which registers it) because it is built
from a few names rather than written out: four tables of sums and one of retry links, each
kept by the same triggers in both dialects.

``rollup_hours``, ``rollup_days``, ``rollup_months``
    One row per UTC hour / day / calendar month and per model, outcome, tag set (the
    attempts' ``tags`` JSON text), project and key fingerprint: how many attempts, every
    usage bucket, the cost of the priced ones (``cost_pico``) and how many were priced.
    ``pk``/``kk`` are the project/key as unique-key text (``''`` for none, ``'='`` and the
    value otherwise: NULLs would never conflict).
``rollup_totals``
    One row per UTC hour with the same sums over every attempt, plus the failures: what a
    report grouped by time alone, with no filter, reads.
``attempt_retries``
    One row per pair (a row of a call, an earlier row of the same call: a lower
    ``call_seq``), with the grouping fields of both (``e_`` for the earlier one): how a
    report counts distinct calls per group without reading the attempts.

Triggers on ``attempts`` keep all five exact in the transaction that inserts or deletes a
row; the migration back-fills them from the rows already there.
"""

# Every name spliced into this SQL is a constant of this module.
# ruff: noqa: S608

from __future__ import annotations

from typing import Literal

__all__ = ["DIM_TABLES", "GRAINS", "LINK_FIELDS", "SUMS", "rollup_script"]

Dialect = Literal["sqlite", "postgres"]

HOUR_US = 3_600_000_000
DAY_US = 86_400_000_000
#: The sums every rollup row keeps, in order.
SUMS: tuple[str, ...] = (
    "attempts", "input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens",
    "output_tokens", "web_search_requests", "web_fetch_requests", "code_execution_requests", "cost_pico", "priced",
)  # fmt: skip
_DIMS = ("started_at_us", "model", "outcome", "tags", "project", "key_fingerprint", "pk", "kk")
_KEY = "started_at_us, model, outcome, tags, pk, kk"
#: The rollup tables with dimensions, and their grain.
GRAINS: tuple[tuple[str, str], ...] = (("rollup_hours", "hour"), ("rollup_days", "day"), ("rollup_months", "month"))
DIM_TABLES = tuple(name for name, _ in GRAINS)
#: The fields of each row that ``attempt_retries`` keeps, for the later and the earlier row.
LINK_FIELDS = ("started_at_us", "model", "outcome", "tags", "project", "key_fingerprint", "session_id")
_ANSWERS = "'max_tokens', 'ok', 'refused'"


def _bucket(dialect: Dialect, grain: str, start: str) -> str:
    """SQL for the UTC hour, day or month start (µs) of the time ``start`` (µs)."""
    if grain == "month":
        if dialect == "sqlite":
            return f"CAST(strftime('%s', {start} / 1000000, 'unixepoch', 'start of month') AS INTEGER) * 1000000"
        return (
            f"(extract(epoch FROM date_trunc('month', to_timestamp(div({start}, 1000000)) AT TIME ZONE 'UTC'))"
            "::bigint * 1000000)"
        )
    size = HOUR_US if grain == "hour" else DAY_US
    if dialect == "sqlite":
        return f"({start} - ((({start}) % {size}) + {size}) % {size})"
    return f"({start} - mod(mod({start}, {size}) + {size}, {size}))"


def _sums(row: str, sign: str) -> list[str]:
    out = [sign] + [f"{sign} * {row}.{c}" for c in SUMS[1:-2]]
    return [*out, f"{sign} * coalesce({row}.cost_pico, 0)", f"CASE WHEN {row}.cost_pico IS NULL THEN 0 ELSE {sign} END"]


def _upsert(table: str, columns: tuple[str, ...], key: str, values: list[str]) -> str:
    update = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in columns if c in (*SUMS, "failures"))
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(values)}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {update};"
    )


def _dims(dialect: Dialect, grain: str, row: str) -> list[str]:
    return [
        _bucket(dialect, grain, f"{row}.started_at_us"), f"{row}.model", f"{row}.outcome", f"{row}.tags",
        f"{row}.project", f"{row}.key_fingerprint",
        f"CASE WHEN {row}.project IS NULL THEN '' ELSE '=' || {row}.project END",
        f"CASE WHEN {row}.key_fingerprint IS NULL THEN '' ELSE '=' || {row}.key_fingerprint END",
    ]  # fmt: skip


def _failures(row: str, sign: str) -> str:
    return f"CASE WHEN {row}.outcome IN ({_ANSWERS}) THEN 0 ELSE {sign} END"


def _changes(dialect: Dialect, row: str, sign: str) -> list[str]:
    """The statements a trigger runs for ``row`` (``NEW``: sign 1, ``OLD``: sign -1)."""
    out = [
        _upsert(name, (*_DIMS, *SUMS), _KEY, _dims(dialect, grain, row) + _sums(row, sign)) for name, grain in GRAINS
    ]
    totals = [_bucket(dialect, "hour", f"{row}.started_at_us"), *_sums(row, sign), _failures(row, sign)]
    out.append(_upsert("rollup_totals", ("started_at_us", *SUMS, "failures"), "started_at_us", totals))
    later = ", ".join(f"{{0}}.{f}" for f in LINK_FIELDS)
    earlier = ", ".join(f"{{1}}.{f}" for f in LINK_FIELDS)
    link = (
        f"INSERT INTO attempt_retries ({_LINK_COLUMNS}) SELECT {{0}}.id, {{1}}.id, {later}, {earlier} FROM attempts e "
    )
    same_call = f"WHERE e.call_id = {row}.call_id AND e.call_seq {{}} {row}.call_seq;"
    if sign == "1":
        out.append(link.format(row, "e") + same_call.format("<"))
        out.append(link.format("e", row) + same_call.format(">"))
        return out
    for name, grain in (*GRAINS, ("rollup_totals", "hour")):
        bucket = _bucket(dialect, grain, f"{row}.started_at_us")
        out.append(f"DELETE FROM {name} WHERE started_at_us = {bucket} AND attempts = 0;")
    out.append(f"DELETE FROM attempt_retries WHERE attempt_id = {row}.id OR earlier_id = {row}.id;")
    return out


_LINK_COLUMNS = ", ".join(["attempt_id", "earlier_id", *LINK_FIELDS, *(f"e_{f}" for f in LINK_FIELDS)])


def _tables(big: str) -> list[str]:
    sums = ", ".join(f"{c} {big} NOT NULL DEFAULT 0" for c in SUMS)
    out = []
    for name, _ in GRAINS:
        out.append(
            f"CREATE TABLE {name} (started_at_us {big} NOT NULL, model TEXT NOT NULL, outcome TEXT NOT NULL, "
            f"tags TEXT NOT NULL, project TEXT, key_fingerprint TEXT, pk TEXT NOT NULL, kk TEXT NOT NULL, {sums});"
        )
        out.append(f"CREATE UNIQUE INDEX {name}_key ON {name} ({_KEY});")
    out.append(
        f"CREATE TABLE rollup_totals (started_at_us {big} PRIMARY KEY, {sums}, failures {big} NOT NULL DEFAULT 0);"
    )
    fields = ", ".join(
        f"{prefix}{f} {big if f == 'started_at_us' else 'TEXT'}{' NOT NULL' if f in _NOT_NULL else ''}"
        for prefix in ("", "e_")
        for f in LINK_FIELDS
    )
    out.append(f"CREATE TABLE attempt_retries (attempt_id {big} NOT NULL, earlier_id {big} NOT NULL, {fields});")
    out.append("CREATE INDEX attempt_retries_started ON attempt_retries (started_at_us);")
    out.append("CREATE INDEX attempt_retries_attempt ON attempt_retries (attempt_id);")
    out.append("CREATE INDEX attempt_retries_earlier ON attempt_retries (earlier_id);")
    return out


_NOT_NULL = ("started_at_us", "model", "outcome", "tags")


def _backfill(dialect: Dialect) -> list[str]:
    totals = (
        ["count(*)"] + [f"sum(a.{c})" for c in SUMS[1:-2]] + ["coalesce(sum(a.cost_pico), 0)", "count(a.cost_pico)"]
    )
    out = []
    for name, grain in GRAINS:
        dims = _dims(dialect, grain, "a")
        out.append(
            f"INSERT INTO {name} ({', '.join((*_DIMS, *SUMS))}) SELECT {', '.join(dims + totals)} "
            f"FROM attempts a GROUP BY {', '.join(dims[:6])};"
        )
    hour = _bucket(dialect, "hour", "a.started_at_us")
    failures = f"sum({_failures('a', '1')})"
    out.append(
        f"INSERT INTO rollup_totals (started_at_us, {', '.join(SUMS)}, failures) "
        f"SELECT {hour}, {', '.join(totals)}, {failures} FROM attempts a GROUP BY {hour};"
    )
    later = ", ".join(f"a.{f}" for f in LINK_FIELDS)
    earlier = ", ".join(f"e.{f}" for f in LINK_FIELDS)
    out.append(
        f"INSERT INTO attempt_retries ({_LINK_COLUMNS}) SELECT a.id, e.id, {later}, {earlier} FROM attempts a "
        "JOIN attempts e ON e.call_id = a.call_id AND e.call_seq < a.call_seq WHERE a.call_seq > 0;"
    )
    return out


def rollup_script(dialect: Dialect) -> str:
    """The whole migration for ``dialect``: tables, back-fill, triggers."""
    parts = _tables("INTEGER" if dialect == "sqlite" else "BIGINT") + _backfill(dialect)
    if dialect == "sqlite":
        for event, row, sign in (("INSERT", "NEW", "1"), ("DELETE", "OLD", "-1")):
            body = "\n".join(_changes(dialect, row, sign))
            parts.append(
                f"CREATE TRIGGER attempts_rollup_{event.lower()} AFTER {event} ON attempts BEGIN\n{body}\nEND;"
            )
        return "\n".join(parts)
    parts.append(
        "CREATE FUNCTION canny_attempts_rollup() RETURNS trigger LANGUAGE plpgsql AS $canny$\n"
        "DECLARE r attempts;\nBEGIN\nIF TG_OP = 'INSERT' THEN\nr := NEW;\n"
        + "\n".join(_changes(dialect, "r", "1"))
        + "\nELSE\nr := OLD;\n"
        + "\n".join(_changes(dialect, "r", "-1"))
        + "\nEND IF;\nRETURN NULL;\nEND\n$canny$;"
    )
    parts.append(
        "CREATE TRIGGER attempts_rollup AFTER INSERT OR DELETE ON attempts "
        "FOR EACH ROW EXECUTE FUNCTION canny_attempts_rollup();"
    )
    return "\n".join(parts)
