"""Named, ordered schema migrations, shared by the SQLite and PostgreSQL ledgers.

A migration is a name plus one SQL script per dialect. Migrations run in the order they were
registered, each in its own transaction, and each name is recorded in the
``schema_migrations`` table (``name``, ``applied_at``) in that same transaction, so a
migration is applied completely or not at all, exactly once per database. Opening a ledger
applies every registered migration the database has not seen yet; concurrent openers are
serialised (SQLite ``BEGIN IMMEDIATE``; a PostgreSQL advisory lock).

The ledger owns every migration, its own (``ledger.*``) and the tables other areas keep in
its database (``budget.*``: :mod:`canny.budget.store`); all are registered here, when this
module is imported, so every ledger has every table from its first open. Adding one::

    register(
        "budget.0002_notes",
        sqlite="ALTER TABLE budget_limits ADD COLUMN note TEXT;",
        postgres="ALTER TABLE budget_limits ADD COLUMN note TEXT;",
    )

Rules:

- Append new migrations at the end of this module: they run in the order registered.
- Names are global and permanent: they are prefixed with their area (``ledger.``,
  ``budget.``) and a sequence number. A database records the names it applied, so a name
  must never change (an existing database would run it again). Registering a name twice
  with different SQL raises ``ValueError`` (the same name with the same SQL is a no-op).
- Never edit a released migration: add a new one. A migration may depend on the
  ``ledger.*`` ones and on earlier ones of its own area, but not on another area's.
- Scripts may hold several statements separated by ``;``. Do not put ``BEGIN``/``COMMIT`` in
  them: the runner owns the transaction (SQLite and PostgreSQL both roll DDL back).

Inside a ledger, :meth:`transaction` yields a :class:`Transaction`; the same object serves
other modules that need an atomic read-modify-write on the ledger's database (placeholders
are always ``?``; the PostgreSQL backend translates them).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

__all__ = [
    "BUDGET_LOCK",
    "PG_MIGRATION_LOCK",
    "Dialect",
    "Migration",
    "Migrator",
    "Transaction",
    "applied",
    "migrate",
    "register",
    "registered",
    "split_sqlite_script",
]

Dialect = Literal["sqlite", "postgres"]

#: Key of the PostgreSQL advisory lock that serialises migrations ("canny" in ASCII).
PG_MIGRATION_LOCK = 0x63616E6E79
#: Key of the PostgreSQL advisory lock that serialises budget transactions, and the sweeps
#: of lost attempts that end budget reservations ("cannyb" in ASCII).
BUDGET_LOCK = 0x63616E6E7962


class Transaction(Protocol):
    """One open database transaction; committed on normal exit, rolled back on error."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement with ``?`` placeholders; return its rows (empty if none)."""
        ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        ...

    def script(self, sql: str) -> None:
        """Run several ``;``-separated statements without parameters."""
        ...


class Migrator(Protocol):
    """What :func:`migrate` needs from a ledger backend."""

    def transaction(self, *, write: bool = True) -> AbstractContextManager[Transaction]:
        """A transaction; ``write=True`` takes the write lock up front (SQLite ``IMMEDIATE``)."""
        ...


@dataclass(frozen=True, slots=True)
class Migration:
    """One named schema change, as a script per dialect."""

    name: str
    sqlite: str
    postgres: str

    def script(self, dialect: Dialect) -> str:
        """The SQL for ``dialect``."""
        return self.sqlite if dialect == "sqlite" else self.postgres


_REGISTRY: list[Migration] = []
_REGISTRY_LOCK = threading.Lock()


def register(name: str, *, sqlite: str, postgres: str) -> Migration:
    """Append a migration to the global, ordered list; see the module docstring."""
    if not name or name != name.strip():
        raise ValueError(f"migration name must be non-empty with no surrounding spaces: {name!r}")
    migration = Migration(name, sqlite, postgres)
    with _REGISTRY_LOCK:
        for existing in _REGISTRY:
            if existing.name == name:
                if existing == migration:
                    return existing
                raise ValueError(f"a different migration named {name!r} is already registered")
        _REGISTRY.append(migration)
    return migration


def registered() -> tuple[Migration, ...]:
    """Every registered migration, in the order it runs."""
    with _REGISTRY_LOCK:
        return tuple(_REGISTRY)


def split_sqlite_script(script: str) -> list[str]:
    """Split a script into complete statements (triggers and quoted ``;`` are kept whole)."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \t\r\n;"):
                statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement at the end of a migration: {buffer.strip()[:60]!r}")
    return statements


_CREATE_BOOKKEEPING = "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
_EXISTS = {
    "sqlite": "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
    "postgres": "SELECT count(*) FROM pg_catalog.pg_tables "
    "WHERE tablename = 'schema_migrations' AND schemaname = current_schema()",
}


def applied(ledger: Migrator) -> list[str]:
    """Names of the migrations this database has applied, oldest first."""
    with ledger.transaction(write=False) as tx:
        if not tx.execute(_EXISTS[tx.dialect])[0][0]:
            return []
        rows = tx.execute("SELECT name FROM schema_migrations ORDER BY applied_at, name")
    return [str(row[0]) for row in rows]


def _lock(tx: Transaction) -> None:
    if tx.dialect == "postgres":
        tx.execute("SELECT pg_advisory_xact_lock(?)", (PG_MIGRATION_LOCK,))


def migrate(ledger: Migrator) -> list[str]:
    """Apply every registered migration the database lacks; return the names applied now.

    Cheap when there is nothing to do: one read transaction, no write lock.
    """
    todo = registered()
    done = set(applied(ledger))
    if all(m.name in done for m in todo):
        return []
    with ledger.transaction() as tx:
        _lock(tx)
        tx.execute(_CREATE_BOOKKEEPING)
    applied_now: list[str] = []
    for migration in todo:
        if migration.name in done:
            continue
        with ledger.transaction() as tx:
            _lock(tx)
            # Another process may have applied it since we looked: check under the lock.
            if tx.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (migration.name,)):
                continue
            tx.script(migration.script(tx.dialect))
            stamp = datetime.now(UTC).isoformat(timespec="microseconds")
            tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (migration.name, stamp))
        applied_now.append(migration.name)
    return applied_now


# --- the ledger's own migrations --------------------------------------------------------
# Times are integer microseconds since the Unix epoch (UTC): exact, compact and fast to
# bucket. cost_usd keeps the exact Decimal as text; cost_pico is the same amount in
# 10^-12 USD as an integer for fast, exact sums. Both are NULL when the attempt is unpriced.
# call_seq counts the rows of the same call recorded before this one (0 for the first): the
# report counts distinct calls as rows minus the few later rows of a call that share a group
# with an earlier one: the partial index attempts_retries finds those few rows without a
# full scan, and attempts_call_seq answers "an earlier row of this call in this group?".

_ATTEMPT_COLUMNS = """
    call_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    session_id TEXT,
    started_at_us {big} NOT NULL,
    first_token_at_us {big},
    ended_at_us {big} NOT NULL,
    model TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status_code INTEGER,
    error_type TEXT,
    error_code TEXT,
    request_id TEXT,
    stop_reason TEXT,
    refusal_category TEXT,
    input_tokens {big} NOT NULL DEFAULT 0,
    cache_write_5m_tokens {big} NOT NULL DEFAULT 0,
    cache_write_1h_tokens {big} NOT NULL DEFAULT 0,
    cache_read_tokens {big} NOT NULL DEFAULT 0,
    output_tokens {big} NOT NULL DEFAULT 0,
    web_search_requests INTEGER NOT NULL DEFAULT 0,
    web_fetch_requests INTEGER NOT NULL DEFAULT 0,
    code_execution_requests INTEGER NOT NULL DEFAULT 0,
    cost_usd TEXT,
    cost_pico {big},
    price_version TEXT,
    batch {bool} NOT NULL DEFAULT {false},
    inference_geo TEXT,
    speed TEXT,
    streamed {bool} NOT NULL DEFAULT {true},
    endpoint TEXT,
    project TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    key_fingerprint TEXT,
    prompt_hash TEXT,
    prompt_text TEXT,
    response_text TEXT,
    extra TEXT NOT NULL DEFAULT '{{}}',
    call_seq INTEGER NOT NULL DEFAULT 0
"""

_INDEXES = """
    CREATE UNIQUE INDEX attempts_call_attempt ON attempts (call_id, attempt);
    CREATE INDEX attempts_started ON attempts (started_at_us);
    CREATE INDEX attempts_call_seq ON attempts (call_id, call_seq, started_at_us);
    CREATE INDEX attempts_retries ON attempts (started_at_us, call_id, call_seq) WHERE call_seq > 0;
"""

register(
    "ledger.0001_attempts",
    sqlite="CREATE TABLE attempts (id INTEGER PRIMARY KEY,"
    + _ATTEMPT_COLUMNS.format(big="INTEGER", bool="INTEGER", false="0", true="1")
    + ");"
    + _INDEXES,
    postgres="CREATE TABLE attempts (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
    + _ATTEMPT_COLUMNS.format(big="BIGINT", bool="BOOLEAN", false="FALSE", true="TRUE")
    + ");"
    + _INDEXES,
)

register(
    "ledger.0002_attempt_tags",
    sqlite="""
        CREATE TABLE attempt_tags (
            tag TEXT NOT NULL,
            attempt_id INTEGER NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            PRIMARY KEY (tag, attempt_id)
        ) WITHOUT ROWID;
        CREATE INDEX attempt_tags_attempt ON attempt_tags (attempt_id);
    """,
    postgres="""
        CREATE TABLE attempt_tags (
            tag TEXT NOT NULL,
            attempt_id BIGINT NOT NULL REFERENCES attempts (id) ON DELETE CASCADE,
            PRIMARY KEY (tag, attempt_id)
        );
        CREATE INDEX attempt_tags_attempt ON attempt_tags (attempt_id);
    """,
)

# A read-only view with readable UTC times and dollars, for Datasette, psql and spreadsheets.
register(
    "ledger.0003_attempts_readable_view",
    sqlite="""
        CREATE VIEW attempts_readable AS
        SELECT id, call_id, attempt, session_id,
               strftime('%Y-%m-%dT%H:%M:%fZ', started_at_us / 1e6, 'unixepoch') AS started_at,
               strftime('%Y-%m-%dT%H:%M:%fZ', first_token_at_us / 1e6, 'unixepoch') AS first_token_at,
               strftime('%Y-%m-%dT%H:%M:%fZ', ended_at_us / 1e6, 'unixepoch') AS ended_at,
               model, outcome, status_code, error_type, stop_reason, refusal_category,
               input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
               output_tokens, cost_usd, price_version, project, tags, request_id
        FROM attempts;
    """,
    postgres="""
        CREATE VIEW attempts_readable AS
        SELECT id, call_id, attempt, session_id,
               to_timestamp(started_at_us / 1e6) AS started_at,
               to_timestamp(first_token_at_us / 1e6) AS first_token_at,
               to_timestamp(ended_at_us / 1e6) AS ended_at,
               model, outcome, status_code, error_type, stop_reason, refusal_category,
               input_tokens, cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens,
               output_tokens, cost_usd::numeric AS cost_usd, price_version, project, tags, request_id
        FROM attempts;
    """,
)

# Attempts in flight: one provisional row per attempt the API has accepted (streamed: at
# message_start, with the input usage it reports; non-streamed: just before sending, with
# the local estimate). Recording the attempt's row deletes it in the same transaction;
# one whose lease ran out (its process died) becomes an ``attempts`` row with outcome
# ``lost`` (see SQLLedger.sweep_lost). ``reservation_id`` is the call's budget
# reservation, settled with the lost cost.
_INFLIGHT = """
    CREATE TABLE inflight (
        id {id},
        call_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        session_id TEXT,
        started_at_us {big} NOT NULL,
        lease_until_us {big} NOT NULL,
        model TEXT NOT NULL,
        request_id TEXT,
        input_tokens {big} NOT NULL DEFAULT 0,
        cache_write_5m_tokens {big} NOT NULL DEFAULT 0,
        cache_write_1h_tokens {big} NOT NULL DEFAULT 0,
        cache_read_tokens {big} NOT NULL DEFAULT 0,
        cost_usd TEXT,
        price_version TEXT,
        inference_geo TEXT,
        speed TEXT,
        streamed {bool} NOT NULL,
        endpoint TEXT,
        project TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        key_fingerprint TEXT,
        prompt_hash TEXT,
        extra TEXT NOT NULL DEFAULT '{{}}',
        reservation_id {big}
    );
    CREATE UNIQUE INDEX inflight_call_attempt ON inflight (call_id, attempt);
    CREATE INDEX inflight_lease ON inflight (lease_until_us);
"""

register(
    "ledger.0004_inflight",
    sqlite=_INFLIGHT.format(id="INTEGER PRIMARY KEY", big="INTEGER", bool="INTEGER"),
    postgres=_INFLIGHT.format(id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", big="BIGINT", bool="BOOLEAN"),
)


# --- the budget tables (canny.budget.store reads and writes them) -----------------------
# budget_limits: one row per stored budget. budget_counters: spent and reserved
# pico-dollars per budget scope and period window. budget_reservations: one row per call in
# flight (held), kept a while as a tombstone once its lease ran out (expired).
_BUDGET_TABLES = """
    CREATE TABLE budget_limits (
        period TEXT NOT NULL,
        project TEXT NOT NULL DEFAULT '',
        tag TEXT NOT NULL DEFAULT '',
        key_fingerprint TEXT NOT NULL DEFAULT '',
        limit_usd TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        updated_at_us {big} NOT NULL,
        PRIMARY KEY (period, project, tag, key_fingerprint)
    );
    CREATE TABLE budget_counters (
        id {id},
        period TEXT NOT NULL,
        time_zone TEXT NOT NULL,
        label TEXT NOT NULL,
        project TEXT NOT NULL DEFAULT '',
        tag TEXT NOT NULL DEFAULT '',
        key_fingerprint TEXT NOT NULL DEFAULT '',
        period_end_us {big} NOT NULL,
        spent_pico {big} NOT NULL DEFAULT 0,
        reserved_pico {big} NOT NULL DEFAULT 0
    );
    CREATE UNIQUE INDEX budget_counters_scope
        ON budget_counters (period, time_zone, label, project, tag, key_fingerprint);
    CREATE TABLE budget_reservations (
        id {id},
        call_id TEXT NOT NULL,
        counters TEXT NOT NULL,
        amount_pico {big} NOT NULL,
        charged_pico {big} NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'held',
        owner TEXT NOT NULL,
        created_at_us {big} NOT NULL,
        expires_at_us {big} NOT NULL
    );
    CREATE INDEX budget_reservations_held ON budget_reservations (expires_at_us) WHERE state = 'held';
"""

register(
    "budget.0001_tables",
    sqlite=_BUDGET_TABLES.format(big="INTEGER", id="INTEGER PRIMARY KEY"),
    postgres=_BUDGET_TABLES.format(big="BIGINT", id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
)


# --- budget alerts (canny.budget.alerts reads and writes them) ---------------------------
# budget_alert_rules: the thresholds (percent of the limit, a JSON list) of a stored budget
# and where its alerts go. budget_alerts_fired: one row per budget, period window and
# threshold, inserted by the transaction that settled the spend crossing it, so an alert
# fires once however many processes share the budget.
_BUDGET_ALERTS = """
    CREATE TABLE budget_alert_rules (
        period TEXT NOT NULL,
        project TEXT NOT NULL DEFAULT '',
        tag TEXT NOT NULL DEFAULT '',
        key_fingerprint TEXT NOT NULL DEFAULT '',
        thresholds TEXT NOT NULL,
        command TEXT,
        url TEXT,
        PRIMARY KEY (period, project, tag, key_fingerprint)
    );
    CREATE TABLE budget_alerts_fired (
        period TEXT NOT NULL,
        project TEXT NOT NULL DEFAULT '',
        tag TEXT NOT NULL DEFAULT '',
        key_fingerprint TEXT NOT NULL DEFAULT '',
        time_zone TEXT NOT NULL,
        label TEXT NOT NULL,
        threshold TEXT NOT NULL,
        limit_usd TEXT NOT NULL,
        spent_pico {big} NOT NULL,
        fired_at_us {big} NOT NULL,
        PRIMARY KEY (period, project, tag, key_fingerprint, time_zone, label, threshold)
    );
"""

register(
    "budget.0002_alerts",
    sqlite=_BUDGET_ALERTS.format(big="INTEGER"),
    postgres=_BUDGET_ALERTS.format(big="BIGINT"),
)


# --- what the request asked for, for right-size and what-if reports (canny.advice) -------
# max_tokens: the request's max_tokens as sent. prefix_hashes: the cumulative hashes and
# estimated sizes of the request's cacheable prefixes (canny.prefixes), never the text.
# NULL in both for rows written before this migration: reports call them unknown.
_REQUEST_SHAPE = """
    ALTER TABLE attempts ADD COLUMN max_tokens {big};
    ALTER TABLE attempts ADD COLUMN prefix_hashes TEXT;
    ALTER TABLE inflight ADD COLUMN max_tokens {big};
    ALTER TABLE inflight ADD COLUMN prefix_hashes TEXT;
"""

register(
    "ledger.0005_request_shape",
    sqlite=_REQUEST_SHAPE.format(big="INTEGER"),
    postgres=_REQUEST_SHAPE.format(big="BIGINT"),
)


# --- views for Datasette, psql and spreadsheets (described in canny.ledger.datasette) ---
# model_rates: the base per-token rates of each model in pico-dollars, one row per dated
# price row, refreshed from the price table by `canny ledger datasette-metadata`; the
# cache_savings view prices its savings with them. Days are UTC.
_DATASETTE = """
    CREATE TABLE model_rates (
        model TEXT NOT NULL,
        effective_from_us {big} NOT NULL,
        effective_until_us {big},
        input_pico {big} NOT NULL,
        cache_write_5m_pico {big} NOT NULL,
        cache_write_1h_pico {big} NOT NULL,
        cache_read_pico {big} NOT NULL,
        output_pico {big} NOT NULL,
        PRIMARY KEY (model, effective_from_us)
    );
    CREATE VIEW cost_per_day_model AS
    SELECT {day} AS day, model,
           count(DISTINCT call_id) AS calls, count(*) AS attempts,
           sum(input_tokens) AS input_tokens,
           sum(cache_write_5m_tokens + cache_write_1h_tokens) AS cache_write_tokens,
           sum(cache_read_tokens) AS cache_read_tokens, sum(output_tokens) AS output_tokens,
           sum(cost_pico) AS cost_pico, {usd} AS cost_usd,
           sum(CASE WHEN cost_pico IS NULL THEN 1 ELSE 0 END) AS unpriced_attempts
    FROM attempts GROUP BY 1, 2;
    CREATE VIEW failures AS
    SELECT id, {at} AS started_at, call_id, attempt, model, outcome, status_code, error_type,
           error_code, request_id, project, tags, cost_usd
    FROM attempts WHERE outcome NOT IN ('ok', 'max_tokens', 'refused');
    CREATE VIEW failures_per_day AS
    SELECT {day} AS day, model, outcome, coalesce(error_type, '') AS error_type,
           count(*) AS attempts, count(DISTINCT call_id) AS calls, sum(cost_pico) AS cost_pico
    FROM attempts WHERE outcome NOT IN ('ok', 'max_tokens', 'refused') GROUP BY 1, 2, 3, 4;
    CREATE VIEW cache_savings AS
    SELECT {day} AS day, model, count(*) AS attempts,
           sum(cache_read_tokens) AS cache_read_tokens,
           sum(cache_write_5m_tokens + cache_write_1h_tokens) AS cache_write_tokens,
           sum(prompt_tokens) AS prompt_tokens,
           round(1.0 * sum(cache_read_tokens) / nullif(sum(prompt_tokens), 0), 4) AS hit_rate,
           sum(saved_pico) AS saved_pico, {saved_usd} AS saved_usd,
           sum(CASE WHEN saved_pico IS NULL THEN 1 ELSE 0 END) AS unpriced_attempts
    FROM (
        SELECT a.started_at_us, a.model, a.cache_read_tokens, a.cache_write_5m_tokens,
               a.cache_write_1h_tokens,
               a.input_tokens + a.cache_write_5m_tokens + a.cache_write_1h_tokens + a.cache_read_tokens
                   AS prompt_tokens,
               CASE WHEN r.model IS NULL OR a.cost_pico IS NULL THEN NULL
                    WHEN a.cost_pico = 0 THEN 0
                    ELSE a.cache_read_tokens * (r.input_pico - r.cache_read_pico)
                         - a.cache_write_5m_tokens * (r.cache_write_5m_pico - r.input_pico)
                         - a.cache_write_1h_tokens * (r.cache_write_1h_pico - r.input_pico) END AS saved_pico
        FROM attempts a LEFT JOIN model_rates r
          ON r.model = a.model AND a.started_at_us >= r.effective_from_us
         AND (r.effective_until_us IS NULL OR a.started_at_us < r.effective_until_us)
        WHERE a.cache_read_tokens + a.cache_write_5m_tokens + a.cache_write_1h_tokens > 0
    ) AS cached
    GROUP BY 1, 2;
    CREATE VIEW lost_attempts AS
    SELECT id, {at} AS started_at, call_id, attempt, model, request_id, input_tokens,
           cache_write_5m_tokens, cache_write_1h_tokens, cache_read_tokens, cost_usd, project, tags, extra
    FROM attempts WHERE outcome = 'lost';
"""


def _datasette_views(big: str, day: str, at: str, places: int) -> str:
    """The views in one dialect: its integer type, UTC day and time of a row, and the
    decimal places of its dollar columns."""
    money = "round(sum({}) / 1e12, %d)" % places  # noqa: UP031  (braces are the SQL's)
    return _DATASETTE.format(
        big=big, day=day, at=at, usd=money.format("cost_pico"), saved_usd=money.format("saved_pico")
    )


register(
    "ledger.0006_datasette_views",
    sqlite=_datasette_views(
        "INTEGER",
        "date(started_at_us / 1000000, 'unixepoch')",
        "strftime('%Y-%m-%dT%H:%M:%fZ', started_at_us / 1e6, 'unixepoch')",
        6,
    ),
    postgres=_datasette_views(
        "BIGINT",
        "to_char(to_timestamp(started_at_us / 1e6) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "to_timestamp(started_at_us / 1e6)",
        12,
    ),
)
# --- rollups (canny.ledger.rollup_schema builds the SQL; canny.ledger.rollups reads them) --
from canny.ledger.rollup_schema import rollup_script  # noqa: E402  (the registry exists by now)

register("ledger.0007_rollups", sqlite=rollup_script("sqlite"), postgres=rollup_script("postgres"))


# --- budget slices and the one-round-trip budget functions (PostgreSQL) -----------------
# budget_slices: one row per share of headroom a process leased to reserve from in memory
# (canny.budget.slices); its amount counts as reserved on its counters until it is given
# back, or its lease ends. On PostgreSQL, functions do a reservation, a settlement and a
# slice's refill each in one round trip, locking only the counters involved (in id order).
_BUDGET_SLICES = """
    CREATE TABLE budget_slices (
        id {id},
        owner TEXT NOT NULL,
        counters TEXT NOT NULL,
        amount_pico {big} NOT NULL CHECK (amount_pico >= 0),
        spent_pico {big} NOT NULL DEFAULT 0,
        leased_at_us {big} NOT NULL,
        expires_at_us {big} NOT NULL,
        state TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'expired'))
    );
    CREATE INDEX budget_slices_held ON budget_slices (expires_at_us) WHERE state = 'held';
"""

_BUDGET_FUNCTIONS = """
    CREATE FUNCTION canny_budget_due(now_us bigint) RETURNS boolean LANGUAGE sql STABLE AS $$
        SELECT EXISTS (SELECT 1 FROM budget_reservations WHERE state = 'held' AND expires_at_us < now_us)
            OR EXISTS (SELECT 1 FROM budget_slices WHERE state = 'held' AND expires_at_us < now_us)
            OR EXISTS (SELECT 1 FROM inflight WHERE lease_until_us < now_us)
    $$;

    CREATE FUNCTION canny_budget_reserve(
        ids bigint[], limits bigint[], amount bigint, p_call_id text, p_owner text, now_us bigint, expires_us bigint
    ) RETURNS TABLE (rid bigint, spent bigint[], reserved bigint[], due boolean, waited_us bigint)
    LANGUAGE plpgsql AS $$
    DECLARE
        n_found int;
        fits boolean;
        t0 timestamptz := clock_timestamp();
    BEGIN
        PERFORM 1 FROM budget_counters c WHERE c.id = ANY (ids) ORDER BY c.id FOR UPDATE;
        waited_us := (extract(epoch FROM clock_timestamp() - t0) * 1000000)::bigint;
        SELECT count(c.id), array_agg(c.spent_pico ORDER BY u.o), array_agg(c.reserved_pico ORDER BY u.o),
               bool_and(u.lim - c.spent_pico - c.reserved_pico >= amount)
          INTO n_found, spent, reserved, fits
          FROM unnest(ids, limits) WITH ORDINALITY AS u(cid, lim, o) JOIN budget_counters c ON c.id = u.cid;
        rid := NULL;
        due := canny_budget_due(now_us);
        IF n_found < cardinality(ids) THEN
            spent := NULL;
            reserved := NULL;
        ELSIF fits AND amount IS NOT NULL THEN
            INSERT INTO budget_reservations (call_id, counters, amount_pico, owner, created_at_us, expires_at_us)
                VALUES (p_call_id, array_to_json(ids)::text, amount, p_owner, now_us, expires_us)
                RETURNING id INTO rid;
            UPDATE budget_counters SET reserved_pico = reserved_pico + amount WHERE id = ANY (ids);
        END IF;
        RETURN NEXT;
    END $$;

    CREATE FUNCTION canny_budget_settle(p_rid bigint, ids bigint[], charge bigint)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        st text;
        already bigint;
        amount bigint;
        held_on text;
    BEGIN
        DELETE FROM budget_reservations WHERE id = p_rid
            RETURNING state, charged_pico, amount_pico, counters INTO st, already, amount, held_on;
        IF st IS NOT NULL THEN
            ids := ARRAY(SELECT x::bigint FROM json_array_elements_text(held_on::json) AS x);
        END IF;
        PERFORM 1 FROM budget_counters c WHERE c.id = ANY (ids) ORDER BY c.id FOR UPDATE;
        IF st IS NULL THEN
            UPDATE budget_counters SET spent_pico = spent_pico + charge WHERE id = ANY (ids);
        ELSIF st = 'held' THEN
            UPDATE budget_counters SET reserved_pico = reserved_pico - amount, spent_pico = spent_pico + charge
                WHERE id = ANY (ids);
        ELSE
            UPDATE budget_counters SET spent_pico = spent_pico + greatest(charge - already, 0) WHERE id = ANY (ids);
        END IF;
    END $$;

    CREATE FUNCTION canny_budget_slice(
        p_sid bigint, ids bigint[], limits bigint[], charge bigint, give_back bigint,
        need bigint, den bigint, cap bigint, p_owner text, now_us bigint, expires_us bigint
    ) RETURNS TABLE (sid bigint, granted bigint, due boolean) LANGUAGE plpgsql AS $$
    DECLARE
        st text;
        room bigint;
        n_found int;
    BEGIN
        sid := NULL;
        granted := 0;
        IF p_sid IS NOT NULL THEN
            SELECT s.state INTO st FROM budget_slices s WHERE s.id = p_sid FOR UPDATE;
        END IF;
        PERFORM 1 FROM budget_counters c WHERE c.id = ANY (ids) ORDER BY c.id FOR UPDATE;
        UPDATE budget_counters SET spent_pico = spent_pico + charge WHERE id = ANY (ids) AND charge <> 0;
        IF st = 'held' THEN
            sid := p_sid;
            UPDATE budget_counters SET reserved_pico = reserved_pico - give_back WHERE id = ANY (ids);
            UPDATE budget_slices SET amount_pico = amount_pico - give_back, spent_pico = spent_pico + charge,
                expires_at_us = expires_us WHERE id = sid;
        END IF;
        IF need > 0 THEN
            SELECT count(c.id), min(u.lim - c.spent_pico - c.reserved_pico) INTO n_found, room
              FROM unnest(ids, limits) AS u(cid, lim) JOIN budget_counters c ON c.id = u.cid;
            IF n_found = cardinality(ids) AND least(room / den, cap) >= need THEN
                granted := least(room / den, cap);
                UPDATE budget_counters SET reserved_pico = reserved_pico + granted WHERE id = ANY (ids);
                IF sid IS NULL THEN
                    INSERT INTO budget_slices (counters, amount_pico, owner, leased_at_us, expires_at_us)
                        VALUES (array_to_json(ids)::text, granted, p_owner, now_us, expires_us) RETURNING id INTO sid;
                ELSE
                    UPDATE budget_slices SET amount_pico = amount_pico + granted WHERE id = sid;
                END IF;
            END IF;
        END IF;
        IF sid IS NOT NULL AND granted = 0 THEN
            DELETE FROM budget_slices WHERE id = sid AND amount_pico = 0;
            IF FOUND THEN
                sid := NULL;
            END IF;
        END IF;
        due := canny_budget_due(now_us);
        RETURN NEXT;
    END $$;
"""

register(
    "budget.0003_slices",
    sqlite=_BUDGET_SLICES.format(big="INTEGER", id="INTEGER PRIMARY KEY"),
    postgres=_BUDGET_SLICES.format(big="BIGINT", id="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    + _BUDGET_FUNCTIONS,
)

# --- a change counter for the budget limits (canny.budget.limits caches them) ------------
# One row, bumped by triggers whenever a limit is added, changed or removed, by any process:
# a client reads it before each call instead of the limits themselves. (SQLite's own change
# check, PRAGMA data_version, also changes with every row the ledger's writer thread commits.)
register(
    "budget.0004_limits_version",
    sqlite="""
CREATE TABLE budget_limits_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
INSERT INTO budget_limits_version (id, version) VALUES (1, 0);
CREATE TRIGGER budget_limits_version_insert AFTER INSERT ON budget_limits
BEGIN UPDATE budget_limits_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER budget_limits_version_update AFTER UPDATE ON budget_limits
BEGIN UPDATE budget_limits_version SET version = version + 1 WHERE id = 1; END;
CREATE TRIGGER budget_limits_version_delete AFTER DELETE ON budget_limits
BEGIN UPDATE budget_limits_version SET version = version + 1 WHERE id = 1; END;
""",
    postgres="""
CREATE TABLE budget_limits_version (id INTEGER PRIMARY KEY CHECK (id = 1), version BIGINT NOT NULL);
INSERT INTO budget_limits_version (id, version) VALUES (1, 0);
CREATE FUNCTION canny_bump_limits_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE budget_limits_version SET version = version + 1 WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER budget_limits_version AFTER INSERT OR UPDATE OR DELETE ON budget_limits
    FOR EACH STATEMENT EXECUTE FUNCTION canny_bump_limits_version();
""",
)
