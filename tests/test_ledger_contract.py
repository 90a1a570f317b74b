"""The ledger contract, run against every backend: SQLite always, PostgreSQL when
``CANNY_TEST_POSTGRES_DSN`` is set (start one with ``scripts/pg-test-server.sh``)."""

from __future__ import annotations

import multiprocessing
import os
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from canny import reports
from canny.errors import LedgerError
from canny.ledger import GROUP_BYS, OUTCOMES, AttemptRecord, ReportingLedger, ReportQuery, migrations, open_ledger
from canny.ledger.sqlite import SQLiteLedger
from canny.usage import Usage

# Read at import: the autouse clean_env fixture removes CANNY_* variables from each test.
PG_DSN = os.environ.get("CANNY_TEST_POSTGRES_DSN", "")
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgres",
        id="postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_DSN, reason="CANNY_TEST_POSTGRES_DSN is not set (scripts/pg-test-server.sh)"),
        ],
    ),
]
T0 = datetime(2026, 3, 28, 22, 0, tzinfo=UTC)


def make(call_id: str = "call-1", attempt: int = 1, **overrides: Any) -> AttemptRecord:
    """A record with every field set to something distinctive."""
    values: dict[str, Any] = {
        "call_id": call_id,
        "attempt": attempt,
        "started_at": T0,
        "ended_at": T0 + timedelta(seconds=3, microseconds=250),
        "model": "claude-sonnet-4-6",
        "outcome": "ok",
    }
    values.update(overrides)
    return AttemptRecord(**values)


def full_record(outcome: str, n: int) -> AttemptRecord:
    """A record with every optional field filled, unicode included."""
    return make(
        call_id=f"call-{outcome}-{n}",
        attempt=n,
        outcome=outcome,
        session_id="sess-ü-1",
        first_token_at=T0 + timedelta(milliseconds=412, microseconds=7),
        status_code=529 if outcome == "error" else 200,
        error_type="overloaded_error" if outcome == "error" else None,
        error_code="x-1",
        request_id="req_011CXYZ",
        stop_reason="refusal" if outcome == "refused" else "end_turn",
        refusal_category="cyber" if outcome == "refused" else None,
        usage=Usage(
            input=1204,
            cache_write_5m=148,
            cache_write_1h=100,
            cache_read=38912,
            output=534,
            web_search_requests=2,
            web_fetch_requests=1,
            code_execution_requests=3,
        ),
        cost_usd=Decimal("0.010099999999875"),
        price_version="2026-11-01",
        batch=True,
        inference_geo="us",
        speed="fast",
        streamed=False,
        endpoint="/v1/messages",
        project="projet-été",
        tags=("ünïcode", "tag with space", "日本"),
        key_fingerprint="sk-ant-…abcd",
        prompt_hash="ab" * 32,
        prompt_text="Bonjour — 你好 🙂",
        response_text="Salut\nligne 2",
        extra={"é": "ü", "k": "v"},
        max_tokens=4096,
        prefix_hashes="s:0123456789abcdef:1100 m1:fedcba9876543210:1500",
    )


@contextmanager
def fresh_target(backend: str, sqlite_path: Path) -> Iterator[str]:
    """Where a fresh ledger lives: ``sqlite_path``, or a new PostgreSQL schema of the test
    server (dropped afterwards) for ``backend`` ``postgres`` (a :data:`BACKENDS` value)."""
    if backend == "sqlite":
        yield str(sqlite_path)
        return
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield PG_DSN + ("&" if "?" in PG_DSN else "?") + f"options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh ledger lives: a new SQLite file, or a new PostgreSQL schema."""
    with fresh_target(request.param, tmp_path / "sub" / "dir" / "ledger.db") as where:
        yield where


@pytest.fixture
def ledger(target: str) -> Iterator[Any]:
    opened = open_ledger(target)
    yield opened
    opened.close()


def test_every_outcome_round_trips_exactly(ledger: Any) -> None:
    """Each outcome's row comes back field for field, unicode, tags and Decimal included."""
    written = [full_record(outcome, n) for n, outcome in enumerate(OUTCOMES, start=1)]
    for record in written:
        ledger.record(record)
    back = list(ledger.records())
    assert back == written
    for before, after in zip(written, back, strict=True):
        assert str(after.cost_usd) == str(before.cost_usd)
        assert after.started_at.utcoffset() == timedelta(0)


def test_unpriced_stays_null_and_zero_stays_zero(ledger: Any) -> None:
    """cost None is stored as NULL (never 0) and an exact $0 stays a priced zero."""
    ledger.record(make("unpriced", cost_usd=None))
    ledger.record(make("free", cost_usd=Decimal("0")))
    back = {r.call_id: r.cost_usd for r in ledger.records()}
    assert back == {"unpriced": None, "free": Decimal("0")}
    with ledger.transaction(write=False) as tx:
        rows = tx.execute("SELECT call_id, cost_usd, cost_pico FROM attempts ORDER BY call_id")
    assert rows == [("free", "0", 0), ("unpriced", None, None)]
    _, total = ledger.aggregate(ReportQuery(None))
    assert (total.cost_usd, total.unpriced) == (Decimal(0), 1)


def test_decimal_costs_keep_their_exact_value(ledger: Any) -> None:
    """Costs keep every digit; sums are exact to 10^-12 USD (a finer cost rounds half-even)."""
    costs = ["0.000000000001", "1.10", "123456.789012345678", "0.0000075", "0.0000000000015"]
    for i, cost in enumerate(costs):
        ledger.record(make(f"c{i}", cost_usd=Decimal(cost)))
    back = [r.cost_usd for r in ledger.records()]
    assert [str(c) for c in back] == [str(Decimal(c)) for c in costs]
    with ledger.transaction(write=False) as tx:
        assert [row[0] for row in tx.execute("SELECT cost_usd FROM attempts ORDER BY id")] == costs
    _, total = ledger.aggregate(ReportQuery(None))
    assert total.cost_usd == Decimal("123457.889019845681")  # 1.5 pico counts as 2


def test_naive_and_offset_times_are_stored_as_utc_instants(ledger: Any) -> None:
    """A naive datetime is UTC; an aware one keeps its instant; both come back in UTC."""
    paris = timezone(timedelta(hours=1))
    ledger.record(make("naive", started_at=datetime(2026, 1, 1, 12), ended_at=datetime(2026, 1, 1, 12, 0, 1)))
    ledger.record(make("aware", started_at=datetime(2026, 1, 1, 14, tzinfo=paris), ended_at=T0))
    back = {r.call_id: r.started_at for r in ledger.records()}
    assert back["naive"] == datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert back["aware"] == datetime(2026, 1, 1, 13, tzinfo=UTC)


def test_records_are_half_open_and_oldest_first(ledger: Any) -> None:
    """records(since, until) keeps since <= started_at < until, in time order."""
    for i in (3, 0, 2, 1):
        ledger.record(make(f"c{i}", started_at=T0 + timedelta(hours=i)))
    since, until = T0 + timedelta(hours=1), T0 + timedelta(hours=3)
    assert [r.call_id for r in ledger.records(since=since, until=until)] == ["c1", "c2"]
    assert [r.call_id for r in ledger.records()] == ["c0", "c1", "c2", "c3"]


def test_recording_an_attempt_twice_keeps_one_row(ledger: Any) -> None:
    """A retried write of the same (call_id, attempt) cannot double the row."""
    record = make(tags=("a", "a", "b"))
    ledger.record(record)
    ledger.record(record)
    assert list(ledger.records()) == [record]
    groups, _ = ledger.aggregate(ReportQuery("tag"))
    assert [(g.key, g.attempts) for g in groups] == [("a", 1), ("b", 1)]


def test_unknown_outcome_is_refused(ledger: Any) -> None:
    """An outcome outside the documented list is a programming error, not a row."""
    with pytest.raises(ValueError, match="unknown outcome"):
        ledger.record(make(outcome="exploded"))
    assert list(ledger.records()) == []


def test_concurrent_threads_lose_and_double_nothing(ledger: Any) -> None:
    """8 threads x 40 records on one ledger object: exactly 320 distinct rows."""
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(40):
                ledger.record(make(f"t{worker}-{i}", started_at=T0 + timedelta(seconds=i)))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    ids = [r.call_id for r in ledger.records()]
    assert len(ids) == 320
    assert len(set(ids)) == 320


def _write_from_process(target: str, worker: int, count: int) -> None:
    """Child process body: open the ledger itself and record ``count`` attempts."""
    opened = open_ledger(target)
    try:
        for i in range(count):
            opened.record(make(f"p{worker}-{i}", attempt=1 + i % 3, started_at=T0 + timedelta(seconds=i)))
    finally:
        opened.close()


@pytest.mark.slow
def test_concurrent_processes_lose_and_double_nothing(target: str) -> None:
    """4 processes race to migrate one new ledger and write 60 rows each: 240 rows, migrations once."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_write_from_process, args=(target, w, 60)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    opened: Any = open_ledger(target)
    try:
        keys = [(r.call_id, r.attempt) for r in opened.records()]
        assert opened.applied_migrations() == [m.name for m in migrations.registered()]
    finally:
        opened.close()
    assert len(keys) == 240
    assert len(set(keys)) == 240


def test_migrations_are_named_ordered_and_idempotent(target: str) -> None:
    """Opening applies each registered migration once, by name; reopening applies none."""
    first: Any = open_ledger(target)
    try:
        as_object: object = first
        assert isinstance(as_object, ReportingLedger)
        names = [m.name for m in migrations.registered()]
        assert first.applied_migrations() == names
        assert names[:3] == ["ledger.0001_attempts", "ledger.0002_attempt_tags", "ledger.0003_attempts_readable_view"]
        assert first.migrate() == []
    finally:
        first.close()
    second: Any = open_ledger(target)
    try:
        assert second.applied_migrations() == names
        with second.transaction(write=False) as tx:
            assert tx.execute("SELECT count(*), count(DISTINCT name) FROM schema_migrations")[0] == (
                len(names),
                len(names),
            )
    finally:
        second.close()


def test_a_migration_registered_elsewhere_is_applied_once(ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another module's register() call is applied by migrate(), in one transaction, once."""
    monkeypatch.setattr(migrations, "_REGISTRY", list(migrations.registered()))
    migrations.register(
        "test.0001_notes",
        sqlite="CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX notes_body ON notes (body);",
        postgres="CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT); CREATE INDEX notes_body ON notes (body);",
    )
    assert ledger.migrate() == ["test.0001_notes"]
    assert ledger.migrate() == []
    with ledger.transaction() as tx:
        tx.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (1, "ok"))
        assert tx.execute("SELECT body FROM notes") == [("ok",)]


def test_a_failing_migration_leaves_no_trace(ledger: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A migration whose second statement fails is rolled back whole and not recorded."""
    monkeypatch.setattr(migrations, "_REGISTRY", list(migrations.registered()))
    migrations.register(
        "test.0002_broken",
        sqlite="CREATE TABLE half (id INTEGER); INSERT INTO no_such_table VALUES (1);",
        postgres="CREATE TABLE half (id INTEGER); INSERT INTO no_such_table VALUES (1);",
    )
    with pytest.raises(LedgerError):
        ledger.migrate()
    assert "test.0002_broken" not in ledger.applied_migrations()
    with ledger.transaction(write=False) as tx:
        probe = {
            "sqlite": "SELECT count(*) FROM sqlite_master WHERE name = 'half'",
            "postgres": "SELECT count(*) FROM pg_tables WHERE tablename = 'half' AND schemaname = current_schema()",
        }[tx.dialect]
        assert tx.execute(probe) == [(0,)]


def test_register_guards_against_duplicate_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same name with other SQL is an error; the very same migration again is a no-op."""
    monkeypatch.setattr(migrations, "_REGISTRY", list(migrations.registered()))
    first = migrations.register("test.0003_x", sqlite="SELECT 1;", postgres="SELECT 1;")
    assert migrations.register("test.0003_x", sqlite="SELECT 1;", postgres="SELECT 1;") is first
    with pytest.raises(ValueError, match="already registered"):
        migrations.register("test.0003_x", sqlite="SELECT 2;", postgres="SELECT 2;")
    with pytest.raises(ValueError, match="non-empty"):
        migrations.register(" ", sqlite="", postgres="")
    assert [m.name for m in migrations.registered()].count("test.0003_x") == 1


def test_sqlite_script_splitting_keeps_triggers_and_quoted_semicolons() -> None:
    """A script splits at statement ends only: not inside a trigger body or a string."""
    script = """
        CREATE TABLE a (x TEXT);
        INSERT INTO a VALUES ('semi;colon');
        CREATE TRIGGER t AFTER INSERT ON a BEGIN INSERT INTO a VALUES ('x'); END;
    """
    parts = migrations.split_sqlite_script(script)
    assert len(parts) == 3
    assert parts[2].startswith("CREATE TRIGGER")
    assert parts[2].endswith("END;")


def test_a_failed_transaction_rolls_back(ledger: Any) -> None:
    """An exception inside transaction() undoes its writes and propagates."""

    def insert_then_fail() -> None:
        with ledger.transaction() as tx:
            tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", ("zz", "now"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        insert_then_fail()
    assert "zz" not in ledger.applied_migrations()


def test_a_closed_ledger_raises_ledger_error(target: str) -> None:
    """After close(), using the ledger is a clean LedgerError."""
    opened = open_ledger(target)
    opened.close()
    with pytest.raises(LedgerError, match="closed"):
        opened.record(make())


def _fixture_records(seed: int = 7, calls: int = 120) -> list[AttemptRecord]:
    """Calls with retries that cross midnight, a DST change and month ends; mixed tags."""
    rng = random.Random(seed)
    out: list[AttemptRecord] = []
    models = ["claude-sonnet-4-6", "claude-haiku-4-5", "mystery-model"]
    for c in range(calls):
        start = T0 + timedelta(minutes=rng.randrange(0, 8 * 24 * 60))  # around the 2026-03-29 DST change
        tags = rng.choice([(), ("a",), ("a", "b"), ("b",), ("ü",)])
        project = rng.choice([None, "alpha", "beta"])
        for attempt in range(1, rng.choice([1, 1, 2, 3]) + 1):
            model = rng.choice(models)
            out.append(
                make(
                    f"c{c}",
                    attempt,
                    started_at=start,
                    ended_at=start + timedelta(seconds=2),
                    model=model,
                    outcome=rng.choice(OUTCOMES),
                    usage=Usage(
                        input=rng.randrange(0, 3000),
                        cache_write_5m=rng.randrange(0, 500),
                        cache_write_1h=rng.randrange(0, 500),
                        cache_read=rng.randrange(0, 9000),
                        output=rng.randrange(0, 900),
                    ),
                    cost_usd=None if model == "mystery-model" else Decimal(rng.randrange(0, 10**9)).scaleb(-12),
                    tags=tags if attempt == 1 or rng.random() < 0.7 else ("c",),
                    project=project,
                )
            )
            start += timedelta(minutes=rng.choice([1, 30, 180, 600]))
    return out


@pytest.mark.parametrize("tz", ["UTC", "Europe/Paris", "Asia/Kolkata", "America/St_Johns"])
def test_sql_aggregate_agrees_with_the_reference_summary(ledger: Any, tz: str) -> None:
    """For every --by and zone, the SQL sums equal reports.summarize over the same rows."""
    records = _fixture_records()
    ledger.record_many(records)
    zone = UTC if tz == "UTC" else ZoneInfo(tz)
    windows = [(None, None), (T0 + timedelta(days=1, hours=3), T0 + timedelta(days=4, minutes=17))]
    for since, until in windows:
        chosen = [
            r for r in records if (since is None or r.started_at >= since) and (until is None or r.started_at < until)
        ]
        for by in GROUP_BYS:
            groups, total = ledger.aggregate(ReportQuery(by, since=since, until=until, tz=zone))
            want_rows, want_total = reports.summarize(chosen, by, tz=zone)
            got = {g.key: reports.ReportRow.from_totals(g) for g in groups}
            want = {r.group: r for r in want_rows}
            assert got == want, (by, tz, since)
            assert reports.ReportRow.from_totals(total) == want_total, (by, tz, since)


def _cache_records(seed: int = 11, calls: int = 160) -> list[AttemptRecord]:
    """Cached calls over price changes, batch, US-only, fast mode, Haiku 5.5's long-prompt
    band, aliases, an unknown model, unbilled and unpriced rows."""
    rng = random.Random(seed)
    start = datetime(2026, 9, 20, tzinfo=UTC)  # before Sonnet 5.5 (09-28) and its cache-read cut (10-07)
    models = ["claude-sonnet-5-5", "sonnet", "claude-haiku-5-5", "claude-opus-4-6", "claude-sonnet-4-6", "mystery"]
    out: list[AttemptRecord] = []
    for c in range(calls):
        when = start + timedelta(hours=rng.randrange(0, 40 * 24))
        out.append(
            make(
                f"s{c}",
                started_at=when,
                ended_at=when + timedelta(seconds=1),
                model=rng.choice(models),
                usage=Usage(
                    input=rng.choice([10, 5000, 150_000]),
                    cache_write_5m=rng.choice([0, 0, 2048]),
                    cache_write_1h=rng.choice([0, 0, 0, 4096]),
                    cache_read=rng.choice([0, 3000, 90_000]),
                    output=rng.randrange(1, 900),
                ),
                cost_usd=rng.choice([None, Decimal(0), Decimal("0.0123"), Decimal("1.5")]),
                batch=rng.random() < 0.2,
                inference_geo=rng.choice([None, None, "us", "global"]),
                speed=rng.choice([None, None, "fast", "standard"]),
                tags=rng.choice([(), ("a",), ("a", "b")]),
                project=rng.choice([None, "alpha"]),
            )
        )
    return out


def test_sql_cache_savings_agree_with_the_reference_summary(ledger: Any) -> None:
    """saved_usd summed in SQL equals reports.summarize, exactly, for every --by."""
    records = _cache_records()
    ledger.record_many(records)
    rates = reports.cache_saving_rates()
    for by in GROUP_BYS:
        groups, total = ledger.aggregate(ReportQuery(by, savings=rates))
        want_rows, want_total = reports.summarize(records, by, savings=rates)
        got = {g.key: g.saved_usd for g in groups}
        assert got == {r.group: r.saved_usd for r in want_rows}, by
        assert total.saved_usd == want_total.saved_usd, by
    assert want_total.saved_usd is not None and want_total.saved_usd != 0
    assert ledger.aggregate(ReportQuery("day"))[1].saved_usd is None  # only computed when asked for


def test_an_empty_ledger_aggregates_to_nothing(ledger: Any) -> None:
    """No rows: no groups, and a zero total whose cost is None (nothing priced)."""
    groups, total = ledger.aggregate(ReportQuery("day", tz=ZoneInfo("Europe/Paris")))
    assert groups == []
    assert (total.calls, total.attempts, total.cost_usd, total.unpriced) == (0, 0, None, 0)


def test_aggregate_refuses_an_unknown_grouping(ledger: Any) -> None:
    """--by values are checked before they reach SQL."""
    with pytest.raises(ValueError, match="cannot group by"):
        ledger.aggregate(ReportQuery("model; DROP TABLE attempts"))  # type: ignore[arg-type]


# --- SQLite specifics ---------------------------------------------------------------------


def test_sqlite_file_is_private_and_its_directories_created(tmp_path: Path) -> None:
    """The file (and its WAL) is created 0600 under new parent directories, in WAL mode."""
    path = tmp_path / "a" / "b" / "ledger.db"
    opened = SQLiteLedger(path)
    try:
        opened.record(make())
        assert path.stat().st_mode & 0o777 == 0o600
        wal = path.with_name("ledger.db-wal")
        assert wal.exists()
        assert wal.stat().st_mode & 0o777 == 0o600
        with opened.transaction(write=False) as tx:
            assert tx.execute("PRAGMA journal_mode") == [("wal",)]
            assert tx.execute("PRAGMA busy_timeout") == [(10000,)]
            assert tx.execute("PRAGMA synchronous") == [(1,)]  # NORMAL
    finally:
        opened.close()


def test_a_corrupt_sqlite_file_is_a_clean_ledger_error(tmp_path: Path) -> None:
    """Garbage in the file: LedgerError naming the file, with a hint, on one line."""
    path = tmp_path / "ledger.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(LedgerError) as caught:
        open_ledger(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    assert "not a database" in message
    assert caught.value.hint


def test_a_read_only_sqlite_ledger_refuses_writes_cleanly(tmp_path: Path) -> None:
    """Writing to a ledger opened read-only raises LedgerError; reading still works."""
    path = tmp_path / "ledger.db"
    SQLiteLedger(path).close()
    opened = SQLiteLedger(path, read_only=True)
    try:
        with pytest.raises(LedgerError, match=r"readonly|read-only"):
            opened.record(make())
        assert list(opened.records()) == []
    finally:
        opened.close()


def test_a_ledger_in_an_unwritable_place_is_a_clean_ledger_error(tmp_path: Path) -> None:
    """A path whose parent is a file cannot be created: LedgerError, not OSError."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError, match="cannot create"):
        SQLiteLedger(blocker / "ledger.db")


def test_sqlite_ledger_is_usable_as_context_manager(tmp_path: Path) -> None:
    """with SQLiteLedger(...) closes every connection on exit."""
    with SQLiteLedger(tmp_path / "l.db") as opened:
        opened.record(make())
    with pytest.raises(LedgerError):
        opened.record(make("other"))
    conn = sqlite3.connect(tmp_path / "l.db")
    try:
        assert conn.execute("SELECT count(*) FROM attempts").fetchone() == (1,)
    finally:
        conn.close()


# --- PostgreSQL specifics -----------------------------------------------------------------


def test_postgres_errors_and_location_never_show_the_password() -> None:
    """An unreachable server: LedgerError whose text masks the password (no server needed)."""
    pytest.importorskip("psycopg")
    url = "postgresql://canny:s3cr3t-pw@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(LedgerError) as caught:
        open_ledger(url)
    text = f"{caught.value} {caught.value.hint}"
    assert "s3cr3t-pw" not in text
    assert "postgresql://canny:****@127.0.0.1:1/nowhere" in text


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:p%40ss@h:5/db", "postgresql://u:****@h:5/db"),
        ("postgresql://u@h/db?password=pw&sslmode=require", "postgresql://u@h/db?password=****&sslmode=require"),
        ("host=h user=u password='a b' dbname=d", "host=h user=u password=**** dbname=d"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)
def test_mask_url_hides_every_form_of_password(url: str, masked: str) -> None:
    """Userinfo, query and conninfo passwords are all replaced by ****."""
    from canny.ledger.postgres import mask_url

    assert mask_url(url) == masked


@pytest.mark.postgres
@pytest.mark.skipif(not PG_DSN, reason="CANNY_TEST_POSTGRES_DSN is not set (scripts/pg-test-server.sh)")
def test_postgres_location_is_masked() -> None:
    """A live PostgreSQL ledger's location shows the URL without its password."""
    from urllib.parse import urlsplit

    opened = open_ledger(PG_DSN)
    try:
        password = urlsplit(PG_DSN).password
        if password:
            assert password not in opened.location
            assert "****" in opened.location
        else:  # a server with trust auth: nothing to hide, the URL is shown as given
            assert opened.location == PG_DSN
    finally:
        opened.close()


def test_every_record_field_has_a_column(ledger: Any) -> None:
    """The attempts table stores every AttemptRecord field, usage as its bucket columns (new ones need a migration)."""
    from canny.ledger import ROW_FIELDS
    from canny.ledger._sql import COLUMNS, EXPORT_COLUMNS

    stored = [c.removesuffix("_us") for c in COLUMNS]
    assert [c.removesuffix("_us") for c in EXPORT_COLUMNS] == list(ROW_FIELDS) == stored[: len(ROW_FIELDS)]
    assert {f.name for f in fields(AttemptRecord)} - {"usage"} <= set(stored)
    record = replace(full_record("ok", 1), extra={})
    ledger.record(record)
    assert next(iter(ledger.records())) == record


CallableT = Callable[..., Any]


# --- attempts in flight ------------------------------------------------------------------


def flight(call_id: str = "fly-1", attempt: int = 1, **overrides: Any) -> AttemptRecord:
    """The provisional row of an attempt in flight (input-side usage only), unicode included."""
    values: dict[str, Any] = {
        "outcome": "lost",
        "ended_at": T0,
        "usage": Usage(input=1200, cache_write_5m=100, cache_read=3000),
        "cost_usd": Decimal("0.004275"),
        "project": "projet-été",
        "tags": ("日本", "b"),
        "session_id": "sess-ü",
        "request_id": "req_1",
        "prompt_hash": "cd" * 32,
        "extra": {"é": "ü"},
        "max_tokens": 2048,
        "prefix_hashes": "t:00112233aabbccdd:5000",
    }
    values.update(overrides)
    return make(call_id, attempt, **values)


def test_an_attempt_in_flight_is_listed_then_replaced_by_its_row(ledger: Any) -> None:
    """begin_attempt keeps a provisional row; recording the attempt removes it in one go."""
    ledger.begin_attempt(flight(), lease_until=T0 + timedelta(minutes=17))
    (pending,) = ledger.in_flight()
    assert (pending.outcome, pending.usage.input, pending.cost_usd) == ("lost", 1200, Decimal("0.004275"))
    assert (pending.project, pending.tags, pending.ended_at) == (
        "projet-été",
        ("日本", "b"),
        T0 + timedelta(minutes=17),
    )
    final = make("fly-1", 1, usage=Usage(input=1200, output=50), cost_usd=Decimal("0.005"))
    ledger.record(final)
    assert ledger.in_flight() == []
    assert list(ledger.records()) == [final]
    assert ledger.sweep_lost(now=T0 + timedelta(days=1)) == 0
    assert list(ledger.records()) == [final]


def test_an_expired_attempt_in_flight_becomes_a_lost_row(ledger: Any) -> None:
    """After its lease, an attempt in flight is a `lost` row with its input usage and cost."""
    lease = T0 + timedelta(minutes=17)
    ledger.begin_attempt(flight(), lease_until=lease)
    ledger.begin_attempt(flight("fly-2"), lease_until=lease + timedelta(hours=1))
    assert ledger.sweep_lost(now=lease) == 0  # the lease has not ended yet
    assert ledger.sweep_lost(now=lease + timedelta(seconds=1)) == 1
    (lost,) = list(ledger.records())
    assert (lost.call_id, lost.outcome, lost.ended_at) == ("fly-1", "lost", lease)
    assert (lost.usage.input, lost.usage.cache_write_5m, lost.usage.cache_read) == (1200, 100, 3000)
    assert (lost.usage.output, lost.cost_usd, lost.status_code) == (0, Decimal("0.004275"), 200)
    assert (lost.max_tokens, lost.prefix_hashes) == (2048, "t:00112233aabbccdd:5000")
    assert lost.extra["é"] == "ü" and "lost" in lost.extra
    assert [r.call_id for r in ledger.in_flight()] == ["fly-2"]
    groups, _ = ledger.aggregate(ReportQuery("outcome"))
    assert [(g.key, g.failures, g.cost_usd) for g in groups] == [("lost", 1, Decimal("0.004275"))]
    assert ledger.sweep_lost(everything=True) == 1
    assert sorted(r.call_id for r in ledger.records()) == ["fly-1", "fly-2"]


def test_a_real_row_replaces_a_lost_one(ledger: Any) -> None:
    """A process that outlived its lease still writes its real row over the `lost` one."""
    ledger.begin_attempt(flight(), lease_until=T0)
    assert ledger.sweep_lost(everything=True) == 1
    final = make("fly-1", 1, tags=("x",), cost_usd=Decimal("0.01"))
    ledger.record(final)
    ledger.record(replace(final, outcome="error"))  # an ordinary duplicate stays a no-op
    assert list(ledger.records()) == [final]
    groups, _ = ledger.aggregate(ReportQuery("tag"))
    assert [(g.key, g.attempts) for g in groups] == [("x", 1)]


def test_opening_the_ledger_sweeps_expired_attempts(target: str) -> None:
    """A ledger opened after an attempt's lease ended records it as lost."""
    first: Any = open_ledger(target)
    first.begin_attempt(flight(), lease_until=datetime.now(UTC) - timedelta(seconds=1))
    first.begin_attempt(flight("fly-2"), lease_until=datetime.now(UTC) + timedelta(hours=1))
    first.close()
    second: Any = open_ledger(target)
    try:
        assert [(r.call_id, r.outcome) for r in second.records()] == [("fly-1", "lost")]
        assert [r.call_id for r in second.in_flight()] == ["fly-2"]
    finally:
        second.close()
