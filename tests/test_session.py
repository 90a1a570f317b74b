"""Agent-loop sessions: each cap stops the loop before the call that could cross it, sync
and async, streamed and not, with totals and a shared session_id."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

from canny import budget, errors
from canny.cli._exit_codes import exit_code_for
from canny.client import AsyncClient, Client
from canny.retry import RetryPolicy
from canny.session import Session
from tests.conftest import CANARY_KEY, MemoryLedger

MODEL = "claude-sonnet-5-5"


def _client(emulator: Any, run: str, ledger: MemoryLedger, *plan: str) -> Client:
    return Client(
        api_key=CANARY_KEY,
        base_url=emulator.url_for(*plan, run=run),
        ledger=ledger,
        model=MODEL,
        max_tokens=300,
        retry=RetryPolicy(sleep=lambda _: None, rng=lambda: 0.0),
    )


def _turn(messages: list[dict[str, Any]], reply: str, n: int) -> None:
    messages.append({"role": "assistant", "content": reply})
    messages.append({"role": "user", "content": f"Tool result {n}: 42. Carry on."})


def _run_until_stopped(s: Session, messages: list[dict[str, Any]]) -> errors.SessionLimitReached:
    for n in range(100):
        try:
            result = s.create(messages)
        except errors.SessionLimitReached as stop:
            return stop
        _turn(messages, result.text, n)
    raise AssertionError("the session never stopped")


def test_iterations_cap(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """max_iterations=3 sends three calls and stops the fourth before sending it."""
    run = uuid.uuid4().hex
    client = _client(emulator, run, memory_ledger)
    with client.session(max_iterations=3) as s:
        for _ in range(3):
            s.create("hello")
        with pytest.raises(errors.SessionLimitReached) as caught:
            s.create("hello")
    stop = caught.value
    assert (stop.reason, stop.cap, stop.totals.calls) == ("iterations", 3, 3)
    assert isinstance(stop, errors.BudgetExceeded)
    assert exit_code_for(stop) == 4
    assert "before call 4" in stop.message
    assert len(emulator.requests(run)) == 3
    assert {row.session_id for row in memory_ledger.rows} == {s.id}


def test_cost_cap_stops_before_the_crossing_call(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """The cost cap projects the next call (context + max_tokens) and stops before an after-check would."""
    run = uuid.uuid4().hex
    client = _client(emulator, run, memory_ledger)
    cap = Decimal("0.012")
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Plan a trip. Use the tools."}]
    with client.session(max_cost=cap) as s:
        stop = _run_until_stopped(s, messages)
    assert stop.reason == "cost"
    assert stop.needed is not None
    assert stop.limit == cap
    assert stop.totals.cost < cap < stop.totals.cost + stop.needed
    sent = [r.cost_usd for r in memory_ledger.rows]
    assert len(sent) == stop.totals.calls == len(emulator.requests(run)) > 2
    assert sum(c for c in sent if c is not None) == stop.totals.cost
    assert stop.totals.usage.output > 0


def test_wall_time_cap_projects_the_longest_call(
    emulator: Any, memory_ledger: MemoryLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With calls of 10 s and a 25 s cap, the third call (which would end at 30 s) is not sent."""
    now = [0.0]
    client = _client(emulator, uuid.uuid4().hex, memory_ledger)
    real_create = client.create

    def ten_second_create(*args: Any, **kwargs: Any) -> Any:
        now[0] += 10
        return real_create(*args, **kwargs)

    monkeypatch.setattr(client, "create", ten_second_create)
    s = Session(client, max_wall_time=25, clock=lambda: now[0])
    s.create("one")
    s.create("two")
    with pytest.raises(errors.SessionLimitReached) as caught:
        s.create("three")
    assert caught.value.reason == "wall_time"
    assert caught.value.totals.elapsed == 20 <= 25
    assert "longest so far" in caught.value.message


def test_stream_counts_finished_and_closed_calls(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A streamed call counts when it ends, including one closed early (billed as cancelled)."""
    run = uuid.uuid4().hex
    client = _client(emulator, run, memory_ledger)
    with client.session(max_iterations=5) as s:
        with s.stream("Tell me about invoices. [[words=60]]") as stream:
            text = "".join(stream)
        assert stream.result is not None
        assert stream.result.text == text
        with s.stream("And again. [[words=60]]") as stream:
            next(iter(stream))
        untouched = s.stream("never iterated")
        untouched.close()
        totals = s.totals
    assert totals.calls == 2
    outcomes = [r.outcome for r in memory_ledger.rows]
    assert outcomes[:2] == ["ok", "cancelled"]
    assert totals.cost == sum(r.cost_usd for r in memory_ledger.rows if r.cost_usd is not None)


def test_failed_calls_count_with_their_cost(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A call that failed after retries still counts as an iteration, with what it cost."""
    run = uuid.uuid4().hex
    client = _client(emulator, run, memory_ledger, "bad_request")
    with client.session(max_iterations=1) as s:
        with pytest.raises(errors.RequestRejected):
            s.create("hello")
        with pytest.raises(errors.SessionLimitReached):
            s.create("hello")
    assert s.totals.calls == 1
    with pytest.raises(errors.ConfigError, match="ended"):
        s.create("after the end")


def test_unpriced_model_stops_a_cost_capped_session(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A cost cap cannot be checked for a model with no price, so the call is not sent."""
    client = _client(emulator, uuid.uuid4().hex, memory_ledger)
    with (
        client.session(max_cost="1") as s,
        pytest.raises(errors.SessionLimitReached, match="no price"),
        pytest.warns(UserWarning, match="claude-unknown-session-model"),
    ):
        s.create("hello", model="claude-unknown-session-model")


def test_bad_caps_are_config_errors(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Negative or nonsensical caps are refused up front."""
    client = _client(emulator, uuid.uuid4().hex, memory_ledger)
    with pytest.raises(errors.ConfigError):
        client.session(max_cost="-1")
    with pytest.raises(errors.ConfigError):
        client.session(max_wall_time=0)
    with pytest.raises(errors.ConfigError):
        client.session(max_iterations=-2)
    with pytest.raises(TypeError):
        client.session().create("hi", session_id="mine")


def test_async_session(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """The async session stops on its caps too, for create and stream."""
    run = uuid.uuid4().hex

    async def main() -> tuple[str, int, str]:
        client = AsyncClient(
            api_key=CANARY_KEY, base_url=emulator.url_for(run=run), ledger=memory_ledger, model=MODEL, max_tokens=200
        )
        async with client, client.session(max_iterations=2) as s:
            first = await s.create("hello")
            async with s.stream("hello again") as stream:
                streamed = "".join([text async for text in stream])
            try:
                await s.create("one too many")
            except errors.SessionLimitReached as stop:
                return stop.reason, stop.totals.calls, first.text + streamed
        raise AssertionError("the session did not stop")

    reason, calls, text = asyncio.run(main())
    assert (reason, calls) == ("iterations", 2)
    assert text
    assert len(emulator.requests(run)) == 2


def test_session_and_stored_budget_work_together(tmp_path: Any, emulator: Any) -> None:
    """A call inside a session still reserves against the ledger's daily budget."""
    from canny.ledger import open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        budget.set_budget(ledger, period="day", limit="0.000001")
        client = Client(api_key=CANARY_KEY, base_url=emulator.url_for(), ledger=ledger, model=MODEL, max_tokens=100)
        with client.session(max_iterations=5) as s, pytest.raises(errors.BudgetExceeded) as caught:
            s.create("hello")
        assert not isinstance(caught.value, errors.SessionLimitReached)
        assert s.totals.calls == 0
        assert [r.session_id for r in ledger.records()] == [s.id]
    finally:
        ledger.close()
