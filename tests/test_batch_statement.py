"""A writer's batch in one SQLite statement (canny.ledger._batch_sqlite): the same rows as
written one by one, in one statement, and the usual path where it cannot go that way."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canny.errors import LedgerError
from canny.ledger import AttemptRecord, _batch_sqlite, open_for_calls, open_ledger, writer
from canny.ledger._sql import COLUMNS, _apply, _inflight_params, _row_params
from canny.ledger.sqlite import SQLiteLedger
from canny.ledger.writer import Op
from canny.usage import Usage
from tests.test_ledger_contract import PG_DSN, fresh_target

MODEL = "claude-sonnet-4-6"
T0 = datetime(2026, 12, 4, 9, 30, tzinfo=UTC)


def _record(call_id: str, attempt: int = 1, **fields: Any) -> AttemptRecord:
    values: dict[str, Any] = {
        "call_id": call_id, "attempt": attempt, "started_at": T0, "ended_at": T0 + timedelta(seconds=1),
        "model": MODEL, "outcome": "ok", "usage": Usage(input=10, output=2), "cost_usd": Decimal("0.00006"),
    }  # fmt: skip
    values.update(fields)
    return AttemptRecord(**values)


_RETRY_LINKS = ", ".join(
    f"r.{side}{name}"
    for side in ("", "e_")
    for name in ("started_at_us", "model", "outcome", "tags", "project", "key_fingerprint", "session_id")
)


def _state_of(ledger: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the writer's work leaves in the database, without row ids."""
    with ledger.transaction(write=False) as tx:
        return {
            "attempts": tx.execute(f"SELECT {', '.join(COLUMNS)}, call_seq FROM attempts ORDER BY call_id, attempt"),
            "tags": tx.execute(
                "SELECT a.call_id, a.attempt, t.tag FROM attempt_tags t JOIN attempts a ON a.id = t.attempt_id "
                "ORDER BY 1, 2, 3"
            ),
            "retries": tx.execute(
                f"SELECT a.call_id, a.attempt, e.call_id, e.attempt, {_RETRY_LINKS} FROM attempt_retries r "
                "JOIN attempts a ON a.id = r.attempt_id JOIN attempts e ON e.id = r.earlier_id ORDER BY 1, 2, 3, 4"
            ),
            "inflight": tx.execute("SELECT * FROM inflight ORDER BY call_id, attempt"),
            "rollups": tx.execute("SELECT * FROM rollup_hours ORDER BY 1, 2, 3, 4, 5, 6"),
        }


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[SQLiteLedger, SQLiteLedger]]:
    """Two ledgers that are given the same work: one row by row, one in one statement."""
    with tempfile.TemporaryDirectory() as tmp:
        one, other = open_ledger(Path(tmp) / "by-row.db"), open_ledger(Path(tmp) / "batch.db")
        assert isinstance(one, SQLiteLedger) and isinstance(other, SQLiteLedger)
        try:
            yield one, other
        finally:
            one.close()
            other.close()


_text = st.one_of(st.none(), st.text(st.characters(blacklist_categories=["Cs"]), max_size=12))
_calls = st.sampled_from(["call_a", "call_b", "call_c"])


@st.composite
def _ops(draw: st.DrawFn, batch: int) -> list[Op]:
    """A batch as a writer queues it: rows (some of attempts that already have one, some
    ``lost``, retries of one call, tags, odd text), rows in flight, and their removals."""
    ops: list[Op] = []
    for _ in range(draw(st.integers(1, 8))):
        call_id = f"{draw(_calls)}_{batch}"
        attempt = draw(st.integers(1, 3))
        kind = draw(st.sampled_from(["record", "record", "record", "begin", "forget"]))
        if kind == "forget":
            ops.append(Op("forget", key=(call_id, attempt), params=(call_id, attempt)))
            continue
        record = _record(
            call_id,
            attempt,
            outcome=draw(st.sampled_from(["ok", "lost", "error", "interrupted"])),
            tags=tuple(draw(st.lists(st.sampled_from(["x", "y", "ü"]), max_size=3))),
            prompt_text=draw(_text),
            response_text=draw(_text),
            extra=draw(st.dictionaries(st.sampled_from(["k", "n"]), st.text(max_size=5).filter(str.isprintable))),
            usage=Usage(input=draw(st.integers(0, 10**9)), output=draw(st.integers(0, 10**6))),
            cost_usd=draw(st.one_of(st.none(), st.just(Decimal("0.000123")))),
        )
        if kind == "begin":
            params = _inflight_params(record, T0 + timedelta(minutes=5), draw(st.one_of(st.none(), st.integers(1, 9))))
            ops.append(Op("begin", key=(call_id, attempt), params=params))
        else:
            ops.append(Op("record", key=(call_id, attempt), params=_row_params(record)))
    return ops


_batches = iter(range(10**9))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_one_statement_writes_what_row_by_row_writes(pair: tuple[SQLiteLedger, SQLiteLedger], data: Any) -> None:
    """Any batch written as one statement leaves the same rows, tags, rows in flight and rollups as row by row."""
    by_row, batch = pair
    number = next(_batches)
    for _ in range(2):  # a second batch meets the rows of the first: duplicates, lost rows, rows in flight
        ops = data.draw(_ops(number))
        with by_row.transaction() as tx:
            for op in ops:
                _apply(tx, op)
        if not batch.write_all(ops):  # text with a NUL: row by row, as the writer does
            assert any("\x00" in str(value) for op in ops for value in op.params or ())
            with batch.transaction() as tx:
                for op in ops:
                    _apply(tx, op)
    assert _state_of(batch) == _state_of(by_row)


@pytest.fixture(scope="module")
def pg_pair() -> Iterator[tuple[Any, Any]]:
    """Two PostgreSQL ledgers (schemas of the test server) given the same work: one
    operation per call of the usual path, one batch per pipeline."""
    if not PG_DSN:
        pytest.skip("CANNY_TEST_POSTGRES_DSN is not set (scripts/pg-test-server.sh)")
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_target("postgres", Path(tmp)) as one,
        fresh_target("postgres", Path(tmp)) as other,
    ):
        by_row, batch = open_ledger(one), open_ledger(other)
        try:
            yield by_row, batch
        finally:
            by_row.close()
            batch.close()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_pipelined_batch_writes_what_one_by_one_writes_on_postgresql(pg_pair: tuple[Any, Any], data: Any) -> None:
    """On PostgreSQL a batch sent in one round trip leaves what the usual path leaves, operation by operation."""
    by_row, batch = pg_pair
    number = next(_batches)
    for _ in range(2):
        # PostgreSQL refuses text with a NUL (test_pg_encoding.py): such rows are spooled.
        ops = [op for op in data.draw(_ops(number)) if not any("\x00" in str(v) for v in op.params or ())]
        for op in ops:
            with by_row.transaction() as tx:
                _apply(tx, op)
        assert batch.write_all(ops)
    assert _state_of(batch) == _state_of(by_row)


def test_a_failed_pipeline_is_written_again_one_at_a_time(pg_pair: tuple[Any, Any]) -> None:
    """A pipeline that fails part way keeps the rows before it; the batch written again one at a time adds the rest."""
    _, ledger = pg_pair
    good = [Op("record", key=(f"call_pipe_{n}", 1), params=_row_params(_record(f"call_pipe_{n}"))) for n in range(3)]
    bad = Op("record", key=("call_pipe_bad", 1), params=_row_params(_record("call_pipe_bad", prompt_text="a\x00b")))
    with pytest.raises(LedgerError):
        ledger.write_all([good[0], bad, *good[1:]])
    before = _state_of(ledger)
    assert [row[:2] for row in before["attempts"] if str(row[0]).startswith("call_pipe")] == [("call_pipe_0", 1)]
    for op in good:
        with ledger.transaction() as tx:
            _apply(tx, op)
    after = [row[:2] for row in _state_of(ledger)["attempts"] if str(row[0]).startswith("call_pipe")]
    assert after == [("call_pipe_0", 1), ("call_pipe_1", 1), ("call_pipe_2", 1)]


def _for_calls(path: Path) -> SQLiteLedger:
    ledger = open_for_calls(path)
    assert isinstance(ledger, SQLiteLedger)
    return ledger


def _statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every statement the ledger's connections run from now on (triggers' statements included)."""
    seen: list[str] = []
    connect = SQLiteLedger._connect

    def traced(self: SQLiteLedger) -> sqlite3.Connection:
        conn = connect(self)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(SQLiteLedger, "_connect", traced)
    return seen


def test_a_group_of_rows_is_one_statement(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group of 40 rows is committed by one statement, not by a transaction of 80 statements."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    seen = _statements(monkeypatch)
    path = clean_env / "ledger.db"
    ledger = _for_calls(path)
    try:
        ledger.record(_record("call_first"))
        ledger.flush()  # the first batch makes the connection's view
        for n in range(40):
            ledger.record(_record(f"call_{n}", tags=("t",)))
        seen.clear()
        ledger.flush()
        # Python traces each trigger step as the statement that fired it: all are the one.
        assert seen
        assert {statement.split(" (")[0] for statement in seen} == {"INSERT INTO canny_batch"}
    finally:
        ledger.close()
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM attempts").fetchone() == (41,)
        assert conn.execute("SELECT count(*) FROM attempt_tags").fetchone() == (40,)
        assert conn.execute("SELECT sum(attempts) FROM rollup_hours").fetchone() == (41,)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "canny_batch" not in tables  # the view is the connection's own, not the database's


def test_text_holding_a_nul_is_written_row_by_row(clean_env: Path) -> None:
    """Text with a NUL (which SQLite's JSON functions cut short) skips the one statement and is stored whole."""
    record = _record("call_nul", prompt_text="before\x00after")
    assert _batch_sqlite.payload([Op("record", key=("call_nul", 1), params=_row_params(record))]) is None
    path = clean_env / "ledger.db"
    ledger = _for_calls(path)
    try:
        ledger.record(record)
        ledger.flush()
        (stored,) = list(ledger.records())
    finally:
        ledger.close()
    assert stored.prompt_text == "before\x00after"


def test_without_json_functions_rows_go_the_usual_way(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A SQLite without JSON functions writes every batch the usual way, and stops trying the one statement."""
    tries: list[int] = []

    def no_json(conn: sqlite3.Connection, text: str) -> None:
        tries.append(1)
        raise sqlite3.OperationalError("no such function: json_extract")

    monkeypatch.setattr(_batch_sqlite, "write", no_json)
    path = clean_env / "ledger.db"
    ledger = _for_calls(path)
    try:
        ledger.record(_record("call_1"))
        ledger.flush()
        ledger.record(_record("call_2"))
        ledger.flush()
        assert [r.call_id for r in ledger.records()] == ["call_1", "call_2"]
    finally:
        ledger.close()
    assert tries == [1]
