"""Every fault of the emulator's catalogue through the real client: outcome, attempts,
text shown (never duplicated), ledger rows and retry behaviour."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from canny import errors
from canny.cli._exit_codes import exit_code_for
from canny.client import AsyncClient, Client
from canny.config import Timeouts
from canny.retry import RetryPolicy
from tests.conftest import CANARY_KEY, MemoryLedger, SleepRecorder

FAST_TIMEOUTS = Timeouts(connect=2.0, first_event=1.0, idle=0.4, total=20.0)


@dataclass(frozen=True)
class Case:
    plan: tuple[str, ...]
    outcome: str | None  # the result's outcome, or None when an exception is expected
    error: type[errors.CannyError] | None
    attempts: int
    exit_code: int
    partial: bool = False  # some (not all) text was shown before the failure


CASES: dict[str, Case] = {
    "ok": Case(("ok",), "ok", None, 1, 0),
    "rate_limit_then_ok": Case(("rate_limit;retry_after=0.01", "ok"), "ok", None, 2, 0),
    "rate_limit_ms_then_ok": Case(("rate_limit;retry_after_ms=5", "ok"), "ok", None, 2, 0),
    "overloaded_then_ok": Case(("overloaded", "ok"), "ok", None, 2, 0),
    "server_error_then_ok": Case(("server_error", "ok"), "ok", None, 2, 0),
    "bad_gateway_html_then_ok": Case(("bad_gateway", "ok"), "ok", None, 2, 0),
    "unavailable_then_ok": Case(("unavailable", "ok"), "ok", None, 2, 0),
    "gateway_timeout_then_ok": Case(("gateway_timeout", "ok"), "ok", None, 2, 0),
    "request_timeout_then_ok": Case(("request_timeout", "ok"), "ok", None, 2, 0),
    "conflict_then_ok": Case(("conflict", "ok"), "ok", None, 2, 0),
    "error_event_before_content": Case(("error_event;after=0", "ok"), "ok", None, 2, 0),
    "api_error_event_before_content": Case(("api_error_event;after=0", "ok"), "ok", None, 2, 0),
    "drop_before_content": Case(("drop;after=0", "ok"), "ok", None, 2, 0),
    "stall_before_content": Case(("stall;after=0;seconds=10", "ok"), "ok", None, 2, 0),
    "stall_before_headers": Case(("stall_headers;seconds=10", "ok"), "ok", None, 2, 0),
    "three_overloads_then_ok": Case(("overloaded", "overloaded", "overloaded", "ok"), "ok", None, 4, 0),
    "persistent_overload": Case(("overloaded",) * 6, None, errors.Overloaded, 5, 7),
    "bad_request": Case(("bad_request", "ok"), None, errors.RequestRejected, 1, 8),
    "not_found": Case(("not_found", "ok"), None, errors.RequestRejected, 1, 8),
    "too_large": Case(("too_large", "ok"), None, errors.RequestRejected, 1, 8),
    "unprocessable": Case(("unprocessable", "ok"), None, errors.RequestRejected, 1, 8),
    "bad_key": Case(("bad_key", "ok"), None, errors.AuthenticationError, 1, 3),
    "permission": Case(("permission", "ok"), None, errors.AuthenticationError, 1, 3),
    "spend_limit": Case(("spend_limit", "ok"), None, errors.SpendLimitReached, 1, 4),
    "x_should_retry_false": Case(("x_should_retry_false", "ok"), None, errors.ServerError, 1, 7),
    "x_should_retry_true_on_400": Case(("x_should_retry_true", "ok"), None, errors.RequestRejected, 1, 8),
    "error_event_mid_stream": Case(("error_event;after=2", "ok"), None, errors.StreamInterrupted, 1, 6, True),
    "drop_mid_stream": Case(("drop;after=2", "ok"), None, errors.StreamInterrupted, 1, 6, True),
    "stall_mid_stream": Case(("stall;after=2;seconds=10", "ok"), None, errors.StreamInterrupted, 1, 6, True),
    "malformed_event_before_content": Case(("malformed_event;after=0", "ok"), "ok", None, 2, 0),
    "malformed_event_mid_stream": Case(("malformed_event;after=2", "ok"), None, errors.StreamInterrupted, 1, 6, True),
    "refusal": Case(("refusal;category=cyber", "ok"), "refused", None, 1, 5),
    "refusal_partial": Case(("refusal_partial", "ok"), "refused", None, 1, 5, True),
    "max_tokens": Case(("max_tokens",), "max_tokens", None, 1, 0),
    "no_message_stop": Case(("no_message_stop",), "ok", None, 1, 0),
}


def _client(emulator: Any, plan: tuple[str, ...], ledger: MemoryLedger, retry: RetryPolicy, run: str) -> Client:
    return Client(
        api_key=CANARY_KEY,
        base_url=emulator.url_for(*plan, run=run),
        ledger=ledger,
        retry=retry,
        timeouts=FAST_TIMEOUTS,
        model="claude-sonnet-5-5",
        max_tokens=200,
    )


def _full_text(emulator: Any, prompt: str, fault: str = "ok") -> str:
    """The emulator's complete (deterministic) answer to ``prompt``, fetched non-streamed."""
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for(fault), ledger=False, model="claude-sonnet-5-5") as c:
        return c.create(prompt, max_tokens=200).text


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_fault(
    name: str, emulator: Any, memory_ledger: MemoryLedger, fast_retry: RetryPolicy, run_id: str
) -> None:
    """Streamed: each fault gives its outcome, attempt count, ledger rows and no duplicated text."""
    case = CASES[name]
    prompt = f"Tell me about {name}"
    client = _client(emulator, case.plan, memory_ledger, fast_retry, run="s-" + run_id)
    shown: list[str] = []
    result = None
    with client:
        if case.error is None:
            with client.stream(prompt) as stream:
                shown.extend(stream)
            result = stream.result
        else:
            with pytest.raises(case.error) as info, client.stream(prompt) as stream:
                shown.extend(stream)
            assert exit_code_for(info.value) == case.exit_code
            assert CANARY_KEY not in str(info.value)
            result = info.value.result if isinstance(info.value, errors.APIError) else None
    text = "".join(shown)
    assert len(memory_ledger.rows) == case.attempts
    assert [row.attempt for row in memory_ledger.rows] == list(range(1, case.attempts + 1))
    if case.outcome is not None:
        assert result is not None
        assert result.outcome == case.outcome
        assert result.attempts == case.attempts
        assert result.text == text
        assert memory_ledger.rows[-1].outcome == case.outcome
    if case.partial:
        full = _full_text(emulator, prompt)
        assert text and full.startswith(text) and text != full
    elif case.outcome in ("ok", "max_tokens"):
        # Retried attempts never showed anything: the text is the answer, exactly once.
        assert text == _full_text(emulator, prompt, "max_tokens" if case.outcome == "max_tokens" else "ok")
    if case.error is errors.StreamInterrupted:
        assert memory_ledger.rows[-1].outcome == "interrupted"
        assert "estimated" in memory_ledger.rows[-1].extra["output_tokens"]
        assert result is not None and result.text == text
        assert result.usage.input > 0
    for row in memory_ledger.rows[:-1]:
        assert row.outcome == "error"
    assert len(emulator.requests(run="s-" + run_id)) == case.attempts


STATUS_CASES = [
    n for n, c in CASES.items() if not c.partial and "event" not in n and "stall" not in n and "drop" not in n
]


@pytest.mark.parametrize("name", STATUS_CASES)
def test_create_fault(
    name: str, emulator: Any, memory_ledger: MemoryLedger, fast_retry: RetryPolicy, run_id: str
) -> None:
    """Non-streamed: status faults are retried or not exactly as when streaming."""
    case = CASES[name]
    client = _client(emulator, case.plan, memory_ledger, fast_retry, run="c-" + run_id)
    with client:
        if case.error is None:
            result = client.create(f"Tell me about {name}")
            assert result.outcome == case.outcome
            assert result.attempts == case.attempts
        else:
            with pytest.raises(case.error):
                client.create(f"Tell me about {name}")
    assert len(memory_ledger.rows) == case.attempts


@pytest.mark.parametrize("name", sorted(CASES))
def test_async_stream_fault(name: str, emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async client gives the same outcome and attempts as the sync one."""
    case = CASES[name]
    sleeper = SleepRecorder()
    retry = RetryPolicy(sleep=sleeper, rng=lambda: 0.0)

    async def go() -> tuple[str, Any]:
        client = AsyncClient(
            api_key=CANARY_KEY,
            base_url=emulator.url_for(*case.plan, run="a-" + run_id),
            ledger=memory_ledger,
            retry=retry,
            timeouts=FAST_TIMEOUTS,
            model="claude-sonnet-5-5",
            max_tokens=200,
        )
        shown: list[str] = []
        async with client:
            stream = client.stream(f"Tell me about {name}")
            try:
                async with stream:
                    async for text in stream:
                        shown.append(text)
            except errors.CannyError as exc:
                return "".join(shown), exc
            return "".join(shown), stream.result

    text, outcome = asyncio.run(go())
    if case.error is not None:
        assert isinstance(outcome, case.error)
        assert exit_code_for(outcome) == case.exit_code
    else:
        assert outcome.outcome == case.outcome
        assert outcome.text == text
    assert [row.outcome for row in memory_ledger.rows][-1] == (
        case.outcome or ("interrupted" if case.error is errors.StreamInterrupted else "error")
    )
    assert len(memory_ledger.rows) == case.attempts
    assert len(emulator.requests(run="a-" + run_id)) == case.attempts


@pytest.mark.parametrize("name", STATUS_CASES)
def test_async_create_fault(name: str, emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """AsyncClient.create: the same outcome, exception and attempt count as the sync client."""
    case = CASES[name]
    retry = RetryPolicy(sleep=SleepRecorder(), rng=lambda: 0.0)

    async def go() -> Any:
        async with AsyncClient(
            api_key=CANARY_KEY,
            base_url=emulator.url_for(*case.plan, run="ac-" + run_id),
            ledger=memory_ledger,
            retry=retry,
            timeouts=FAST_TIMEOUTS,
            model="claude-sonnet-5-5",
            max_tokens=200,
        ) as client:
            try:
                return await client.create(f"Tell me about {name}")
            except errors.CannyError as exc:
                return exc

    outcome = asyncio.run(go())
    if case.error is not None:
        assert isinstance(outcome, case.error)
    else:
        assert outcome.outcome == case.outcome
        assert outcome.attempts == case.attempts
    assert len(memory_ledger.rows) == case.attempts


def test_retry_after_is_honoured(emulator: Any, memory_ledger: MemoryLedger, sleeper: SleepRecorder) -> None:
    """The server's retry-after (1 s) is the exact delay slept before the retry."""
    retry = RetryPolicy(sleep=sleeper, rng=lambda: 0.5)
    client = _client(emulator, ("rate_limit;retry_after=1", "ok"), memory_ledger, retry, run="retry-after-1")
    with client:
        result = client.create("hello")
    assert result.attempts == 2
    assert sleeper.delays == [1.0]


def test_retry_after_above_cap_stops(emulator: Any, memory_ledger: MemoryLedger, sleeper: SleepRecorder) -> None:
    """A retry-after longer than the cap stops at once with a message saying so."""
    retry = RetryPolicy(sleep=sleeper, max_delay=5.0)
    client = _client(emulator, ("rate_limit;retry_after=3600", "ok"), memory_ledger, retry, run="retry-after-long")
    with client, pytest.raises(errors.RateLimited, match="3600"):
        client.create("hello")
    assert sleeper.delays == []


def test_backoff_without_retry_after_is_jittered(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Without retry-after the delays follow capped full-jitter exponential backoff."""
    sleeper = SleepRecorder()
    retry = RetryPolicy(sleep=sleeper, rng=lambda: 0.5, initial_delay=0.5)
    client = _client(emulator, ("overloaded", "overloaded", "overloaded", "ok"), memory_ledger, retry, run="jitter")
    with client:
        client.create("hello")
    assert sleeper.delays == [0.25, 0.5, 1.0]


def test_stalled_stream_is_cut_by_idle_timeout(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A stream that goes silent mid-answer is cut after the idle gap, not left hanging."""
    import time

    timeouts = Timeouts(connect=2.0, first_event=30.0, idle=0.3, total=60.0)
    client = Client(
        api_key=CANARY_KEY,
        base_url=emulator.url_for("stall;after=2;seconds=30", run="idle-cut"),
        ledger=memory_ledger,
        timeouts=timeouts,
        model="claude-sonnet-5-5",
    )
    started = time.monotonic()
    with client, pytest.raises(errors.StreamInterrupted) as info, client.stream("hi") as stream:
        for _ in stream:
            pass
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, errors.TimeoutError)


def test_refusal_is_never_retried_and_billed_as_its_usage_reports(
    emulator: Any, memory_ledger: MemoryLedger, fast_retry: RetryPolicy
) -> None:
    """A refusal is one attempt priced as its usage reports (never a guessed $0); raise_for_outcome raises."""
    from canny.pricing import cost

    client = _client(emulator, ("refusal;category=cyber", "ok"), memory_ledger, fast_retry, run="refusal-cost")
    with client:
        result = client.create("hello")
    assert result.outcome == "refused"
    assert result.refusal_category == "cyber"
    assert result.usage.input > 0
    expected = cost(result.model, result.usage)
    assert expected is not None and result.cost == expected > 0
    with pytest.raises(errors.Refused) as info:
        result.raise_for_outcome()
    assert exit_code_for(info.value) == 5
    assert len(memory_ledger.rows) == 1


def test_ledger_rows_carry_usage_cost_and_no_key(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Each row has the usage buckets, the exact cost, the request id and never the key."""
    client = _client(emulator, ("ok",), memory_ledger, RetryPolicy(), run="row-check")
    with client:
        result = client.create("Write two sentences about ledgers.")
    (row,) = memory_ledger.rows
    assert row.usage.input == result.usage.input > 0
    assert row.usage.output == result.usage.output > 0
    assert row.cost_usd == result.cost
    assert row.request_id and row.request_id.startswith("req_")
    assert row.prompt_text is None and row.response_text is None
    assert row.prompt_hash and len(row.prompt_hash) == 64
    assert CANARY_KEY not in repr(row)
