"""`canny estimate` and `client.estimate`: the server's input count, its cost, the worst case,
and the expected cost from the ledger's history, every figure checked by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
from click.testing import CliRunner

from canny.cli import main
from canny.client import AsyncClient, Client
from canny.config import default_ledger
from canny.estimate import percentile
from canny.ledger import AttemptRecord, open_ledger
from canny.usage import Usage
from tests.conftest import CANARY_KEY, MemoryLedger

SONNET = "claude-sonnet-5-5"  # $2 in, $10 out per MTok
MTOK = Decimal(1_000_000)
KEYS = {
    "input_tokens",
    "input_cost_usd",
    "max_cost_usd",
    "expected_cost_usd",
    "expected_output_tokens_p50",
    "expected_output_tokens_p95",
    "model",
}


def _emulator_count(emulator: Any, body: dict[str, Any]) -> int:
    """What the emulator's count_tokens endpoint answers for ``body``."""
    response = httpx2.post(
        f"{emulator.base_url}/v1/messages/count_tokens",
        json=body,
        headers={"x-api-key": CANARY_KEY, "anthropic-version": "2023-06-01"},
    )
    assert response.status_code == 200, response.text
    count = response.json()["input_tokens"]
    assert isinstance(count, int)
    return count


def _estimate_json(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["estimate", "--offline", "--json", *args])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def _row(
    output: int, *, model: str = SONNET, outcome: str = "ok", tags: tuple[str, ...] = ("nightly",)
) -> AttemptRecord:
    now = datetime.now(UTC)
    return AttemptRecord(
        call_id=uuid.uuid4().hex,
        attempt=1,
        started_at=now,
        ended_at=now,
        model=model,
        outcome=outcome,  # type: ignore[arg-type]
        usage=Usage(input=10, output=output),
        cost_usd=Decimal(0),
        tags=tags,
    )


#: Ten ok rows of 10..100 output tokens (p50 = 50, p95 = 100 by nearest rank), and rows that
#: must not count: another model, another outcome, without the tag.
HISTORY = [
    *(_row(n) for n in range(10, 101, 10)),
    _row(5000, model="claude-haiku-5-5"),
    _row(7000, outcome="max_tokens"),
    _row(9000, tags=("other",)),
]


def test_input_tokens_are_the_emulators_count_for_the_same_request(emulator: Any) -> None:
    """`canny estimate --offline --json` reports what count_tokens answers for the same request."""
    prompt, system = "Summarise the quarterly invoices, please, in three lines.", "You are terse."
    data = _estimate_json("--system", system, "-m", "sonnet", prompt)
    expected = _emulator_count(
        emulator, {"model": SONNET, "system": system, "messages": [{"role": "user", "content": prompt}]}
    )
    assert data["input_tokens"] == expected
    assert set(data) >= KEYS
    assert data["model"] == SONNET


def test_costs_are_the_input_rate_and_the_worst_case(emulator: Any) -> None:
    """input_cost is n × $2/MTok, max_cost adds max_tokens × $10/MTok; no history gives nulls."""
    data = _estimate_json("-m", "sonnet", "--max-tokens", "300", "a longer prompt " * 20)
    n = data["input_tokens"]
    assert n > 20
    assert Decimal(data["input_cost_usd"]) == n * Decimal(2) / MTOK
    assert Decimal(data["max_cost_usd"]) == (n * Decimal(2) + 300 * Decimal(10)) / MTOK
    assert data["expected_cost_usd"] is None
    assert data["expected_output_tokens_p50"] is None and data["expected_output_tokens_p95"] is None
    assert "E" not in data["input_cost_usd"]  # plain digits, as every --json money figure


def test_expected_cost_uses_the_ledgers_ok_rows_of_the_same_model_and_tag(clean_env: Path) -> None:
    """p50/p95 come from the SQLite ledger's ok rows of the model and tags; expected = input + p50 output."""
    ledger = open_ledger(default_ledger())
    for row in HISTORY:  # an offline call carries the tag "offline" too
        ledger.record(dataclasses.replace(row, tags=(*row.tags, "offline")))
    ledger.close()
    data = _estimate_json("-m", "sonnet", "--tag", "nightly", "--max-tokens", "500", "hello")
    assert (data["expected_output_tokens_p50"], data["expected_output_tokens_p95"]) == (50, 100)
    n = data["input_tokens"]
    assert Decimal(data["expected_cost_usd"]) == (n * Decimal(2) + 50 * Decimal(10)) / MTOK
    data = _estimate_json("-m", "sonnet", "--tag", "weekly", "hello")
    assert (data["expected_cost_usd"], data["expected_output_tokens_p50"]) == (None, None)


def test_history_percentiles_and_expected_cost_in_the_library(emulator: Any) -> None:
    """client.estimate reads the history by model and tag (any ledger); figures by hand."""
    ledger = MemoryLedger()
    ledger.rows.extend(HISTORY)
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=ledger, tags=["nightly"]) as client:
        found = client.estimate("hello", model="sonnet", max_tokens=2000)
    n = found.input_tokens
    assert (found.expected_output_tokens_p50, found.expected_output_tokens_p95, found.history_rows) == (50, 100, 10)
    assert found.expected_cost == (n * Decimal(2) + 50 * Decimal(10)) / MTOK
    assert found.max_cost == (n * Decimal(2) + 2000 * Decimal(10)) / MTOK
    assert found.to_json()["expected_cost_usd"] == str(found.expected_cost)


def test_sql_history_gives_the_same_percentiles(emulator: Any, tmp_path: Path) -> None:
    """The SQLite ledger answers the same p50/p95 as reading the rows (three small queries)."""
    ledger = open_ledger(tmp_path / "ledger.db")
    for row in HISTORY:
        ledger.record(row)
    url = emulator.url_for("ok")
    with Client(api_key=CANARY_KEY, base_url=url, ledger=ledger, tags=["nightly"]) as client:
        found = client.estimate("hello", model="sonnet", max_tokens=30)
    assert (found.expected_output_tokens_p50, found.expected_output_tokens_p95, found.history_rows) == (50, 100, 10)
    assert found.expected_cost == found.max_cost  # the median (50) is capped at max_tokens (30)
    ledger.close()


def test_async_estimate_matches_the_sync_one(emulator: Any) -> None:
    """AsyncClient.estimate counts the same tokens and prices them alike."""

    async def go() -> Any:
        async with AsyncClient(api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=False) as client:
            return await client.estimate("hello async", model="haiku", max_tokens=10)

    found = asyncio.run(go())
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=False) as client:
        assert client.estimate("hello async", model="haiku", max_tokens=10) == found
    assert found.input_cost == found.input_tokens * Decimal("0.10") / MTOK


def test_nearest_rank_percentile() -> None:
    """The nearest-rank rule: p50 of 1..10 is 5, p95 is 10, p50 of one value is that value."""
    assert percentile(list(range(1, 11)), 50) == 5
    assert percentile(list(range(1, 11)), 95) == 10
    assert percentile([7], 50) == 7


def test_human_output_and_no_key_shown(emulator: Any) -> None:
    """The table form names the model and the three figures; the key never appears."""
    result = CliRunner().invoke(
        main, ["estimate", "--base-url", emulator.url_for("ok"), "hello"], env={"ANTHROPIC_API_KEY": CANARY_KEY}
    )
    assert result.exit_code == 0, result.stderr
    assert SONNET in result.stdout and "worst case" in result.stdout and "no ok rows" in result.stdout
    assert CANARY_KEY not in result.stdout + result.stderr
