"""The Datasette views of ledger.0005 (cost per day and model, failures, cache savings, lost
attempts) on a hand-made ledger, SQLite and PostgreSQL; their metadata.json; the command."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.ledger import AttemptRecord, open_ledger
from canny.ledger.datasette import VIEWS, metadata, write_rates
from canny.usage import Usage
from tests.test_ledger_contract import target  # noqa: F401  (the fixture: a fresh SQLite file or PG schema)

SONNET = "claude-sonnet-5-5"  # $2 input, $2.50 5m write, $4 1h write, $0.10 read, $10 output per MTok
DAY1 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 11, 3, 23, 59, tzinfo=UTC)


def _row(call: str, attempt: int, at: datetime, outcome: str, cost: str | None, **fields: Any) -> AttemptRecord:
    return AttemptRecord(
        call_id=call,
        attempt=attempt,
        started_at=at,
        ended_at=at + timedelta(seconds=2),
        model=fields.pop("model", SONNET),
        outcome=outcome,  # type: ignore[arg-type]
        cost_usd=None if cost is None else Decimal(cost),
        **fields,
    )


#: Each cost by hand: tokens x rate per MTok / 1e6.
ROWS = [
    _row("A", 1, DAY1, "error", "0", status_code=529, error_type="overloaded_error"),
    # 100 x 2 + 1000 x 2.50 + 50 x 10 = 3200 -> $0.0032
    _row("A", 2, DAY1, "ok", "0.0032", usage=Usage(input=100, cache_write_5m=1000, output=50)),
    # 10 x 2 + 1000 x 0.10 + 20 x 10 = 320 -> $0.00032
    _row("B", 1, DAY1, "ok", "0.00032", usage=Usage(input=10, cache_read=1000, output=20), project="acme"),
    # 500 x 2 -> $0.001
    _row("C", 1, DAY1, "lost", "0.001", usage=Usage(input=500), request_id="req_lost"),
    _row("D", 1, DAY2, "ok", None, model="mystery-model", usage=Usage(input=10, output=10)),
    # 5 x 2 + 2000 x 4 + 5 x 10 = 8060 -> $0.00806
    _row("E", 1, DAY2, "ok", "0.00806", usage=Usage(input=5, cache_write_1h=2000, output=5)),
    # 10 x 2 + 500 x 0.10 + 3 x 10 = 100 -> $0.0001
    _row("F", 1, DAY2, "interrupted", "0.0001", usage=Usage(input=10, cache_read=500, output=3)),
]


@pytest.fixture
def views(target: str) -> Iterator[Any]:  # noqa: F811
    """The hand-made ledger, its model_rates written from the price table."""
    ledger: Any = open_ledger(target)
    for row in ROWS:
        ledger.record(row)
    with ledger.transaction() as tx:
        write_rates(tx)
    yield ledger
    ledger.close()


def _query(ledger: Any, sql: str) -> list[tuple[Any, ...]]:
    with ledger.transaction(write=False) as tx:
        return [tuple(row) for row in tx.execute(sql)]


def _usd(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def test_cost_per_day_model_sums_calls_tokens_and_exact_cost(views: Any) -> None:
    """cost_per_day_model counts calls and attempts, sums buckets and pico-dollars, keeps unpriced apart."""
    rows = _query(
        views,
        "SELECT day, model, calls, attempts, input_tokens, cache_write_tokens, cache_read_tokens, output_tokens, "
        "cost_pico, cost_usd, unpriced_attempts FROM cost_per_day_model ORDER BY day, model",
    )
    got = [(*row[:8], None if row[8] is None else int(row[8]), _usd(row[9]), int(row[10])) for row in rows]
    assert got == [
        ("2026-11-02", SONNET, 3, 4, 610, 1000, 1000, 70, 4_520_000_000, Decimal("0.00452"), 0),
        ("2026-11-03", SONNET, 2, 2, 15, 2000, 500, 8, 8_160_000_000, Decimal("0.00816"), 0),
        ("2026-11-03", "mystery-model", 1, 1, 10, 0, 0, 10, None, None, 1),
    ]


def test_failures_and_failures_per_day_list_every_attempt_without_an_answer(views: Any) -> None:
    """failures lists the error, lost and interrupted attempts; failures_per_day counts them per error type."""
    rows = _query(
        views, "SELECT call_id, attempt, outcome, status_code, error_type, cost_usd FROM failures ORDER BY id"
    )
    assert rows == [
        ("A", 1, "error", 529, "overloaded_error", "0"),
        ("C", 1, "lost", None, None, "0.001"),
        ("F", 1, "interrupted", None, None, "0.0001"),
    ]
    per_day = _query(
        views, "SELECT day, outcome, error_type, attempts, calls FROM failures_per_day ORDER BY day, outcome"
    )
    assert [(d, o, e, int(a), int(c)) for d, o, e, a, c in per_day] == [
        ("2026-11-02", "error", "overloaded_error", 1, 1),
        ("2026-11-02", "lost", "", 1, 1),
        ("2026-11-03", "interrupted", "", 1, 1),
    ]


def test_cache_savings_prices_reads_and_writes_against_the_uncached_input_rate(views: Any) -> None:
    """cache_savings: reads save (input - read rate), writes cost (write - input rate), per day and model."""
    rows = _query(
        views,
        "SELECT day, model, attempts, cache_read_tokens, cache_write_tokens, prompt_tokens, hit_rate, "
        "saved_pico, saved_usd, unpriced_attempts FROM cache_savings ORDER BY day",
    )
    got = [(*row[:6], _usd(row[6]), int(row[7]), _usd(row[8]), int(row[9])) for row in rows]
    # Day 1: 1000 reads x ($2 - $0.10) - 1000 5m writes x ($2.50 - $2) = $0.0019 - $0.0005 = $0.0014
    # Day 2: 500 reads x $1.90 - 2000 1h writes x ($4 - $2) = $0.00095 - $0.004 = -$0.00305
    assert got == [
        ("2026-11-02", SONNET, 2, 1000, 1000, 2110, Decimal("0.4739"), 1_400_000_000, Decimal("0.0014"), 0),
        ("2026-11-03", SONNET, 2, 500, 2000, 2515, Decimal("0.1988"), -3_050_000_000, Decimal("-0.00305"), 0),
    ]


def test_lost_attempts_shows_the_priced_input_of_dead_processes(views: Any) -> None:
    """lost_attempts has one row per lost attempt with its request id, input tokens and cost."""
    assert _query(views, "SELECT call_id, request_id, input_tokens, cost_usd FROM lost_attempts") == [
        ("C", "req_lost", 500, "0.001")
    ]


def test_metadata_describes_every_view_and_only_columns_that_exist(views: Any) -> None:
    """metadata.json names each view with a description, and every described column is a real column."""
    meta = metadata("ledger")
    tables = meta["databases"]["ledger"]["tables"]
    for name, (description, columns) in VIEWS.items():
        assert tables[name]["description"] == description
        with views.transaction(write=False) as tx:
            tx.execute(f"SELECT * FROM {name} LIMIT 0")
            if columns:
                tx.execute(f"SELECT {', '.join(columns)} FROM {name} LIMIT 0")
    assert tables["inflight"] == {"hidden": True}
    json.dumps(meta)


def test_datasette_metadata_command_writes_the_file_named_after_the_ledger(tmp_path: Path) -> None:
    """`canny ledger datasette-metadata -o` writes metadata.json keyed by the file's stem and fills model_rates."""
    db = tmp_path / "spend.db"
    out = tmp_path / "metadata.json"
    result = CliRunner().invoke(main, ["ledger", "datasette-metadata", "--ledger", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "datasette" in result.stderr
    meta = json.loads(out.read_text())
    assert "cost_per_day_model" in meta["databases"]["spend"]["tables"]
    ledger = open_ledger(str(db))
    try:
        rates = _query(ledger, f"SELECT input_pico, cache_read_pico FROM model_rates WHERE model = '{SONNET}'")
    finally:
        ledger.close()
    assert sorted(rates) == [(2_000_000, 100_000), (2_000_000, 200_000)]  # the read price was cut on 2026-10-07
