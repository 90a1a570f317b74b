"""The opt-in refusal fallback: one more call on the named model after a refusal, never silent,
both calls in the ledger at their own model's price, budgets checked for the fallback too."""

from __future__ import annotations

import asyncio
import warnings
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner

from canny import errors
from canny.budget import NoReservation
from canny.cli import main
from canny.client import AsyncClient, Client
from canny.errors import CannyWarning
from canny.ledger import AttemptRecord
from tests.conftest import CANARY_KEY, MemoryLedger

SONNET = "claude-sonnet-5-5"  # $2 in, $10 out per MTok
OPUS = "claude-opus-5-5"  # $4 in, $20 out per MTok
MTOK = Decimal(1_000_000)


def _priced(row: AttemptRecord, rate_in: str, rate_out: str) -> Decimal:
    """The hand-computed cost of a row that has only input and output tokens."""
    return (row.usage.input * Decimal(rate_in) + row.usage.output * Decimal(rate_out)) / MTOK


def _client(url: str, ledger: MemoryLedger, **kwargs: Any) -> Client:
    return Client(api_key=CANARY_KEY, base_url=url, ledger=ledger, model=SONNET, **kwargs)


def _check_two_rows(ledger: MemoryLedger, outcome: str = "ok") -> tuple[Any, Any]:
    first, second = ledger.rows
    assert (first.model, first.outcome, first.stop_reason) == (SONNET, "refused", "refusal")
    assert (second.model, second.outcome) == (OPUS, outcome)
    assert first.call_id != second.call_id
    assert first.cost_usd == _priced(first, "2", "10")
    assert second.cost_usd == _priced(second, "4", "20")
    assert second.usage.output > 0
    return first, second


def test_refusal_is_asked_again_on_the_fallback_model_with_two_priced_rows(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """create() after a refusal warns, asks the fallback once, and writes two rows at each model's rates."""
    with (
        _client(emulator.url_for("refusal", run=run_id), memory_ledger) as client,
        pytest.warns(CannyWarning, match=f"{SONNET} declined to answer .*asking {OPUS} once"),
    ):
        result = client.create("hello", fallback_model="opus")
    first, second = _check_two_rows(memory_ledger)
    assert result.outcome == "ok" and result.model == OPUS and result.text
    assert result.attempts == 2
    assert result.cost == first.cost_usd + second.cost_usd
    assert result.usage.input == first.usage.input + second.usage.input
    sent = [r.body["model"] for r in emulator.requests(run=run_id)]
    assert sent == [SONNET, OPUS]


def test_a_normal_answer_never_triggers_the_fallback(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """An ok answer with fallback_model set is one call, one row, no warning."""
    with _client(emulator.url_for("ok", run=run_id), memory_ledger) as client, warnings.catch_warnings():
        warnings.simplefilter("error")
        result = client.create("hello", fallback_model="opus")
    assert result.outcome == "ok" and result.model == SONNET and result.attempts == 1
    assert [row.model for row in memory_ledger.rows] == [SONNET]
    assert len(emulator.requests(run=run_id)) == 1


def test_a_refusal_without_fallback_model_is_returned_as_is(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Without fallback_model a refusal is the answer: one row, outcome refused."""
    with _client(emulator.url_for("refusal"), memory_ledger) as client:
        result = client.create("hello")
    assert result.outcome == "refused"
    assert [row.outcome for row in memory_ledger.rows] == ["refused"]


def test_the_fallback_refused_again_is_not_asked_a_third_time(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """The fallback is asked once: a second refusal is the result (two rows, not three)."""
    with (
        _client(emulator.url_for("refusal", "refusal"), memory_ledger) as client,
        pytest.warns(CannyWarning, match="declined"),
    ):
        result = client.create("hello", fallback_model="opus")
    assert result.outcome == "refused" and result.model == OPUS
    assert [(r.model, r.outcome) for r in memory_ledger.rows] == [(SONNET, "refused"), (OPUS, "refused")]


def test_stream_goes_on_with_the_fallback_after_the_partial_text(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """A streamed refusal after partial text: on_fallback is told, then the fallback's text follows."""
    seen: list[tuple[str, int]] = []
    with _client(emulator.url_for("refusal_partial;after=2", run=run_id), memory_ledger) as client:
        stream = client.stream("hello", fallback_model="opus")
        chunks: list[str] = []
        stream.on_fallback = lambda refused: seen.append((refused.outcome, len(chunks)))
        with stream, pytest.warns(CannyWarning, match="declined"):
            chunks.extend(stream)
    first, second = _check_two_rows(memory_ledger)
    assert seen == [("refused", 2)]
    assert "".join(chunks[2:]) == stream.result.text if stream.result else False
    assert stream.result is not None and stream.result.cost == first.cost_usd + second.cost_usd


def test_async_create_and_stream_fall_back_alike(emulator: Any, run_id: str) -> None:
    """AsyncClient.create and stream apply the same rule: two rows each, models sonnet then opus."""
    ledger = MemoryLedger()

    async def go() -> None:
        url = emulator.url_for("refusal", "ok", "refusal", run=run_id)
        async with AsyncClient(api_key=CANARY_KEY, base_url=url, ledger=ledger, model=SONNET) as client:
            with pytest.warns(CannyWarning, match="declined"):
                result = await client.create("hello", fallback_model="opus")
            assert result.model == OPUS
            stream = client.stream("hello", fallback_model="opus")
            with pytest.warns(CannyWarning, match="declined"):
                text = "".join([t async for t in stream])
            assert stream.result is not None and stream.result.text == text and stream.result.attempts == 2

    asyncio.run(go())
    assert [(r.model, r.outcome) for r in ledger.rows] == [(SONNET, "refused"), (OPUS, "ok")] * 2


class _Recorder:
    """A budget that records the calls it is asked to reserve."""

    def __init__(self) -> None:
        self.models: list[str] = []

    def reserve(self, spec: Any) -> NoReservation:
        self.models.append(spec.model)
        return NoReservation(spec.max_tokens)


def test_the_fallback_call_is_reserved_like_any_call(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """The budget is asked for the fallback call too, with the fallback model."""
    budget = _Recorder()
    with (
        _client(emulator.url_for("refusal"), memory_ledger, budget=budget) as client,
        pytest.warns(CannyWarning, match="declined"),
    ):
        client.create("hello", fallback_model="opus")
    assert budget.models == [SONNET, OPUS]


def test_max_cost_covers_both_calls(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The fallback may spend only what the refused call left of max_cost: its max_tokens is lowered to fit."""
    limit = Decimal("0.0011")  # sonnet: 100 output tokens cost $0.001; opus twice the rates
    with (
        _client(emulator.url_for("refusal", "ok", run=run_id), memory_ledger) as client,
        pytest.warns(CannyWarning) as caught,
    ):
        result = client.create("hello [[words=300]]", max_tokens=100, max_cost=limit, fallback_model="opus")
    messages = [str(w.message) for w in caught]
    assert any("declined" in m for m in messages) and any("max_tokens lowered from 100" in m for m in messages)
    sent = [r.body["max_tokens"] for r in emulator.requests(run=run_id)]
    assert sent[0] == 100 and sent[1] < 50
    first, second = _check_two_rows(memory_ledger, "max_tokens")  # the lowered limit cut the answer
    assert result.cost == first.cost_usd + second.cost_usd <= limit


def test_a_fallback_that_cannot_fit_at_all_is_a_budget_refused_row(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A fallback whose input alone would cross what is left of max_cost is refused before sending."""
    with (
        _client(emulator.url_for("refusal"), memory_ledger) as client,
        pytest.warns(CannyWarning, match="declined"),
        pytest.raises(errors.BudgetExceeded),
    ):
        client.create("hello", max_tokens=1, max_cost="0.0001", fallback_model="fable")  # $8 in / $40 out
    assert [(r.model, r.outcome) for r in memory_ledger.rows] == [
        (SONNET, "refused"),
        ("claude-fable-5-2", "budget_refused"),
    ]


def test_cli_fallback_says_so_and_starts_the_answer_on_a_fresh_line(emulator: Any, run_id: str) -> None:
    """`canny ask --fallback-model` notes the refusal on stderr; the fallback text starts a new line."""
    url = emulator.url_for("refusal_partial;after=2", run=run_id)
    env = {"ANTHROPIC_API_KEY": CANARY_KEY}
    result = CliRunner().invoke(
        main, ["ask", "--base-url", url, "-m", "sonnet", "--fallback-model", "opus", "hello"], env=env
    )
    assert result.exit_code == 0, result.stderr
    partial, answer = result.stdout.split("\n", 1)
    assert partial and answer.strip()
    notes = [line for line in result.stderr.splitlines() if "declined to answer" in line]
    assert len(notes) == 1 and notes[0].startswith("canny: warning: ") and OPUS in notes[0]
    usage = [line for line in result.stderr.splitlines() if line.startswith("[tokens in/out")]
    assert len(usage) == 1 and OPUS in usage[0] and "2 attempts" in usage[0]
    assert CANARY_KEY not in result.stdout + result.stderr
