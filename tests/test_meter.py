"""canny.meter on plain SDK clients against the emulator: one ledger row per HTTP attempt,
budgets before sending, and the caller sees exactly what the plain SDK gives."""

from __future__ import annotations

import asyncio
import gzip
import warnings
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

import canny
from canny import errors
from canny.budget import CallLike
from canny.errors import CannyWarning
from canny.meter import Meter, meter
from tests.conftest import CANARY_KEY, MemoryLedger, transport_error

MODEL = "claude-sonnet-5-5"
FAST = "overloaded;retry_after_ms=1"  # a retried 529 the SDK waits 1 ms for


def _ask(text: str = "Tell me about invoices", max_tokens: int = 200) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}


def _sdk(emulator: Any, *plan: str, run: str, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=CANARY_KEY, base_url=emulator.url_for(*plan, run=run), **kwargs)


def _async_sdk(emulator: Any, *plan: str, run: str, **kwargs: Any) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key=CANARY_KEY, base_url=emulator.url_for(*plan, run=run), **kwargs)


def _plain_text(emulator: Any, run: str, fault: str = "ok") -> str:
    """What the plain SDK shows for the same request (the emulator is deterministic)."""
    with _sdk(emulator, fault, run=run) as plain:
        message = plain.messages.create(**_ask())
    return "".join(block.text for block in message.content if block.type == "text")


class RecordingBudget:
    """A Reserver that allows everything, lowers max_tokens to ``cap``, and records settles."""

    def __init__(self, cap: int | None = None) -> None:
        self.cap = cap
        self.reserved: list[CallLike] = []
        self.settled: list[Decimal | None] = []

    def reserve(self, spec: CallLike) -> RecordingBudget.Hold:
        self.reserved.append(spec)
        return RecordingBudget.Hold(self, min(spec.max_tokens, self.cap or spec.max_tokens))

    class Hold:
        def __init__(self, owner: RecordingBudget, max_tokens: int) -> None:
            self.owner = owner
            self.max_tokens = max_tokens

        def settle(self, cost: Decimal | None) -> None:
            self.owner.settled.append(cost)

        def release(self) -> None:
            self.owner.settled.append(None)

        def renew(self, seconds: float | None = None) -> bool:
            return True


class BrokenLedger(MemoryLedger):
    """A ledger whose every write fails the way a read-only SQLite file does."""

    def record(self, record: Any) -> None:
        raise errors.LedgerError("ledger /tmp/ro.db: attempt to write a readonly database")


# -- what the caller sees --------------------------------------------------------------------


def test_meter_returns_a_copy_of_the_same_type_sharing_the_pool(emulator: Any, run_id: str) -> None:
    """meter() returns the same client type, sharing the connection pool, leaving the original unmetered."""
    with _sdk(emulator, run=run_id) as sdk:
        metered = canny.meter(sdk, ledger=False)
        assert type(metered) is anthropic.Anthropic
        assert metered is not sdk
        assert metered._client is sdk._client
        assert [type(m) for m in metered.middleware] == [Meter]
        assert sdk.middleware == ()
    async_sdk = _async_sdk(emulator, run=run_id)
    assert type(canny.meter(async_sdk, ledger=False)) is anthropic.AsyncAnthropic
    asyncio.run(async_sdk.close())


def test_create_returns_the_sdk_message_and_one_ok_row(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A non-streamed create returns the SDK's own Message, identical to the plain call's, and one priced row."""
    with _sdk(emulator, run=run_id) as sdk:
        message = meter(sdk, ledger=memory_ledger).messages.create(**_ask())
    assert type(message) is anthropic.types.Message
    assert message.content[0].type == "text"
    assert message.content[0].text == _plain_text(emulator, "p-" + run_id)
    [row] = memory_ledger.rows
    assert (row.attempt, row.outcome, row.status_code, row.streamed) == (1, "ok", 200, False)
    assert (row.usage.input, row.usage.output) == (message.usage.input_tokens, message.usage.output_tokens)
    assert row.cost_usd is not None
    assert row.cost_usd > 0
    assert row.request_id == message._request_id
    assert row.stop_reason == "end_turn"
    assert row.prompt_hash
    assert row.prompt_text is None
    assert row.response_text is None


def test_stream_helper_text_and_final_message_are_unchanged(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """messages.stream gives the same text and final Message as the plain SDK; the row matches its usage."""
    with _sdk(emulator, run="p-" + run_id) as plain, plain.messages.stream(**_ask()) as expected:
        plain_text = "".join(expected.text_stream)
        plain_final = expected.get_final_message()
    with _sdk(emulator, run=run_id) as sdk, meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain_text
    assert type(final) is type(plain_final)
    assert final.model_dump(exclude={"id"}) == plain_final.model_dump(exclude={"id"})
    [row] = memory_ledger.rows
    assert (row.outcome, row.streamed, row.stop_reason) == ("ok", True, "end_turn")
    assert (row.usage.input, row.usage.output) == (final.usage.input_tokens, final.usage.output_tokens)
    assert row.first_token_at is not None
    assert row.started_at <= row.first_token_at <= row.ended_at


def test_create_stream_true_yields_the_sdk_event_types(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """create(stream=True) yields the same event types as the plain SDK; the row is written when it ends."""
    with _sdk(emulator, run=run_id) as sdk:
        plain_types = [type(e) for e in sdk.messages.create(**_ask(), stream=True)]
        events = meter(sdk, ledger=memory_ledger).messages.create(**_ask(), stream=True)
        assert type(events) is anthropic.Stream
        assert memory_ledger.rows == []  # nothing read yet
        seen = list(events)
    assert [type(e) for e in seen] == plain_types
    assert [row.outcome for row in memory_ledger.rows] == ["ok"]
    assert memory_ledger.rows[0].usage.output == seen[-2].usage.output_tokens  # message_delta


def test_async_create_and_stream(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async client is metered the same way: create and stream each write one ok row."""

    async def go() -> tuple[anthropic.types.Message, str]:
        async with _async_sdk(emulator, run=run_id) as sdk:
            client = meter(sdk, ledger=memory_ledger)
            message = await client.messages.create(**_ask())
            async with client.messages.stream(**_ask()) as stream:
                text = "".join([t async for t in stream.text_stream])
            return message, text

    message, text = asyncio.run(go())
    assert type(message) is anthropic.types.Message
    assert text == message.content[0].text  # type: ignore[union-attr]
    assert [(r.outcome, r.streamed) for r in memory_ledger.rows] == [("ok", False), ("ok", True)]
    assert len({r.call_id for r in memory_ledger.rows}) == 2


# -- one row per attempt ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_sdk_retries_write_one_row_per_attempt(
    stream: bool, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """529, 529, 200 under the SDK's default max_retries=2: rows for attempts 1, 2, 3 of one call."""
    with _sdk(emulator, FAST, FAST, run=run_id) as sdk:
        client = meter(sdk, ledger=memory_ledger)
        if stream:
            with client.messages.stream(**_ask()) as s:
                s.until_done()
        else:
            client.messages.create(**_ask())
    rows = memory_ledger.rows
    assert [(r.attempt, r.outcome, r.status_code) for r in rows] == [
        (1, "error", 529),
        (2, "error", 529),
        (3, "ok", 200),
    ]
    assert len({r.call_id for r in rows}) == 1
    assert [r.error_type for r in rows[:2]] == ["overloaded_error"] * 2
    assert [r.cost_usd for r in rows[:2]] == [Decimal(0)] * 2
    assert rows[0].usage.input == 0
    assert all(r.request_id for r in rows)
    assert len(emulator.requests(run=run_id)) == 3


def test_async_sdk_retries_write_one_row_per_attempt(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async client's SDK retries are numbered 1, 2, 3 under one call id too."""

    async def go() -> None:
        async with _async_sdk(emulator, FAST, FAST, run=run_id) as sdk:
            await meter(sdk, ledger=memory_ledger).messages.create(**_ask())

    asyncio.run(go())
    assert [(r.attempt, r.outcome) for r in memory_ledger.rows] == [(1, "error"), (2, "error"), (3, "ok")]
    assert len({r.call_id for r in memory_ledger.rows}) == 1


def test_exhausted_retries_raise_the_sdk_error(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """Three 529s: the caller gets the SDK's OverloadedError after three error rows."""
    with _sdk(emulator, FAST, FAST, FAST, run=run_id) as sdk, pytest.raises(anthropic.OverloadedError):
        meter(sdk, ledger=memory_ledger).messages.create(**_ask())
    assert [(r.attempt, r.outcome) for r in memory_ledger.rows] == [(1, "error"), (2, "error"), (3, "error")]


def test_unauthorised_key_is_one_error_row(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A 401 is not retried by the SDK: its AuthenticationError reaches the caller, one error row, no usage."""
    with _sdk(emulator, "bad_key", run=run_id) as sdk, pytest.raises(anthropic.AuthenticationError) as info:
        meter(sdk, ledger=memory_ledger).messages.create(**_ask())
    [row] = memory_ledger.rows
    assert (row.outcome, row.status_code, row.error_type) == ("error", 401, "authentication_error")
    assert row.request_id == info.value.request_id
    assert (row.usage.input, row.usage.output, row.cost_usd) == (0, 0, Decimal(0))


def test_connection_failure_is_an_error_row_and_the_sdk_exception(memory_ledger: MemoryLedger) -> None:
    """No server listening: the SDK's APIConnectionError reaches the caller unchanged; one error row."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sdk = anthropic.Anthropic(api_key=CANARY_KEY, base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with sdk, pytest.raises(anthropic.APIConnectionError):
        meter(sdk, ledger=memory_ledger).messages.create(**_ask())
    [row] = memory_ledger.rows
    assert (row.outcome, row.status_code, row.error_type, row.request_id) == ("error", None, "ConnectionFailed", None)


# -- streams that do not end well ------------------------------------------------------------


def test_mid_stream_drop_raises_the_sdk_error_and_is_interrupted(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """drop;after=2: what the plain SDK raises reaches the caller; the row is interrupted with partial usage."""
    shown: list[str] = []
    with _sdk(emulator, "drop;after=2", run=run_id) as sdk, pytest.raises(Exception) as raised:  # noqa: PT011, SIM117
        with meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream:
            shown.extend(stream.text_stream)
    with _sdk(emulator, "drop;after=2", run=run_id + "-plain") as sdk, pytest.raises(Exception) as plain:  # noqa: PT011, SIM117
        with sdk.messages.stream(**_ask()) as stream:
            stream.until_done()
    assert type(raised.value) is type(plain.value)
    assert type(transport_error(raised.value)) is httpx2.RemoteProtocolError
    assert len(shown) == 2
    [row] = memory_ledger.rows  # the SDK does not retry after the headers
    assert (row.outcome, row.status_code, row.error_type) == ("interrupted", None, "ConnectionFailed")
    assert row.usage.input > 0
    assert row.usage.output > 0
    assert row.cost_usd is not None
    assert row.cost_usd > 0
    assert row.request_id


def test_async_mid_stream_drop_is_interrupted(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async client: the same transport error reaches the caller, the same interrupted row."""

    async def go() -> None:
        async with _async_sdk(emulator, "drop;after=2", run=run_id) as sdk:
            events = await meter(sdk, ledger=memory_ledger).messages.create(**_ask(), stream=True)
            async for _ in events:
                pass

    with pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as raised:
        asyncio.run(go())
    assert type(transport_error(raised.value)) is httpx2.RemoteProtocolError
    assert [r.outcome for r in memory_ledger.rows] == ["interrupted"]
    assert memory_ledger.rows[0].usage.input > 0


def test_in_band_error_event_after_content_is_interrupted(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """An overloaded_error event mid-stream: the SDK's APIStatusError (status 200) reaches the caller; interrupted."""
    with _sdk(emulator, "error_event;after=2", run=run_id) as sdk, pytest.raises(anthropic.APIStatusError) as info:
        for _ in meter(sdk, ledger=memory_ledger).messages.create(**_ask(), stream=True):
            pass
    assert info.value.status_code == 200
    [row] = memory_ledger.rows
    assert (row.outcome, row.status_code, row.error_type) == ("interrupted", 200, "overloaded_error")


def test_early_close_is_cancelled(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """Leaving the stream after the first text (of a slow answer) writes one cancelled row."""
    with _sdk(emulator, "slow;seconds=0.05", run=run_id) as sdk:  # noqa: SIM117
        with meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream:
            first = next(iter(stream.text_stream))
    assert first
    [row] = memory_ledger.rows
    assert row.outcome == "cancelled"
    assert row.usage.input > 0
    assert row.usage.output >= 1


def test_async_early_close_is_cancelled(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async stream closed after its first text is cancelled too."""

    async def go() -> None:
        async with (
            _async_sdk(emulator, "slow;seconds=0.05", run=run_id) as sdk,
            meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream,
        ):
            async for _ in stream.text_stream:
                break

    asyncio.run(go())
    assert [r.outcome for r in memory_ledger.rows] == ["cancelled"]


def test_dropped_unread_stream_is_cancelled(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A create(stream=True) dropped without reading or closing still leaves its cancelled row."""
    import gc

    with _sdk(emulator, "slow;seconds=0.05", run=run_id) as sdk:
        events = meter(sdk, ledger=memory_ledger).messages.create(**_ask(), stream=True)
        del events
        gc.collect()
    assert [r.outcome for r in memory_ledger.rows] == ["cancelled"]


def test_concurrent_async_calls_keep_their_attempts_apart(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """16 concurrent streams through one Meter, each retried once by the SDK: every call numbered 1 then 2."""
    shared = Meter(ledger=memory_ledger)

    async def one(sdk: anthropic.AsyncAnthropic, i: int) -> None:
        async with sdk.with_middleware(shared).messages.stream(**_ask(f"call {i}")) as stream:
            await stream.until_done()

    async def go() -> None:
        clients = [_async_sdk(emulator, FAST, run=f"{run_id}-{i}") for i in range(16)]
        await asyncio.gather(*(one(c, i) for i, c in enumerate(clients)))
        for c in clients:
            await c.close()

    asyncio.run(go())
    by_call: dict[str, list[tuple[int, str]]] = {}
    for row in memory_ledger.rows:
        by_call.setdefault(row.call_id, []).append((row.attempt, row.outcome))
    assert len(memory_ledger.rows) == 32
    assert sorted(by_call.values()) == [[(1, "error"), (2, "ok")]] * 16


# -- answers that are not plain ok -----------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
def test_refusal_is_a_refused_row(stream: bool, emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """stop_reason refusal: the SDK returns it as usual; the row is refused with its category."""
    with _sdk(emulator, "refusal;category=cyber", run=run_id) as sdk:
        client = meter(sdk, ledger=memory_ledger)
        if stream:
            with client.messages.stream(**_ask()) as s:
                message = s.get_final_message()
        else:
            message = client.messages.create(**_ask())
    assert message.stop_reason == "refusal"
    [row] = memory_ledger.rows
    assert (row.outcome, row.stop_reason, row.refusal_category) == ("refused", "refusal", "cyber")


def test_max_tokens_stop_is_a_max_tokens_row(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """stop_reason max_tokens gives a max_tokens row."""
    with _sdk(emulator, "max_tokens", run=run_id) as sdk:
        message = meter(sdk, ledger=memory_ledger).messages.create(**_ask())
    assert message.stop_reason == "max_tokens"
    assert [r.outcome for r in memory_ledger.rows] == ["max_tokens"]


# -- other entry points ----------------------------------------------------------------------


def test_beta_messages_are_metered(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """client.beta.messages.create and .stream are metered like messages."""
    with _sdk(emulator, run=run_id) as sdk:
        client = meter(sdk, ledger=memory_ledger)
        message = client.beta.messages.create(**_ask())
        with client.beta.messages.stream(**_ask()) as stream:
            stream.until_done()
    assert type(message) is anthropic.types.beta.BetaMessage
    assert [(r.outcome, r.streamed) for r in memory_ledger.rows] == [("ok", False), ("ok", True)]


def test_raw_and_streaming_responses_are_metered(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """with_raw_response and with_streaming_response (a JSON body read later) each write one ok row."""
    with _sdk(emulator, run=run_id) as sdk:
        client = meter(sdk, ledger=memory_ledger)
        raw = client.messages.with_raw_response.create(**_ask())
        assert type(raw.parse()) is anthropic.types.Message
        with client.messages.with_streaming_response.create(**_ask()) as response:
            assert memory_ledger.rows[-1].streamed is False
            assert len(memory_ledger.rows) == 1
            parsed = response.parse()
    assert type(parsed) is anthropic.types.Message
    assert [r.outcome for r in memory_ledger.rows] == ["ok", "ok"]
    assert memory_ledger.rows[1].usage.output == parsed.usage.output_tokens


def test_other_endpoints_pass_through_untouched(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """count_tokens and models go through unmetered: same results as the plain SDK, no rows."""
    with _sdk(emulator, run=run_id) as sdk:
        client = meter(sdk, ledger=memory_ledger)
        counted = client.messages.count_tokens(model=MODEL, messages=_ask()["messages"])
        assert counted == sdk.messages.count_tokens(model=MODEL, messages=_ask()["messages"])
        assert [m.id for m in client.models.list()] == [m.id for m in sdk.models.list()]
    assert memory_ledger.rows == []


def test_gzip_encoded_stream_is_decoded_by_the_tee(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A gzip-encoded SSE body (as a proxy may send) is decoded before parsing: the usage is recorded."""
    with _sdk(emulator, run=run_id) as plain:
        raw = plain.messages.with_raw_response.create(**_ask(), stream=True)
        body = raw.http_response.read()
    packed = gzip.compress(body)

    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "content-encoding": "gzip", "request-id": "req_gzip"}
        return httpx2.Response(200, headers=headers, stream=_Chunks(packed))

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    with anthropic.Anthropic(api_key=CANARY_KEY, base_url="http://127.0.0.1:9", http_client=http) as sdk:  # noqa: SIM117
        with meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream:
            final = stream.get_final_message()
    [row] = memory_ledger.rows
    assert (row.outcome, row.request_id, row.usage.output) == ("ok", "req_gzip", final.usage.output_tokens)


class _Chunks(httpx2.SyncByteStream):
    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 7):
            yield self.data[i : i + 7]


class _BrokenErrorBody(httpx2.SyncByteStream):
    def __iter__(self) -> Iterator[bytes]:
        yield b'{"type": "error", "error": {"type": "overl'
        raise httpx2.RemoteProtocolError("peer closed connection")


@pytest.mark.parametrize("metered", [False, True], ids=["plain", "metered"])
def test_error_body_that_breaks_fails_as_without_the_meter(metered: bool, memory_ledger: MemoryLedger) -> None:
    """A 529 whose body breaks while read: the caller gets the same RemoteProtocolError with or without the meter."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(529, headers={"content-type": "application/json"}, stream=_BrokenErrorBody())

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    sdk = anthropic.Anthropic(api_key=CANARY_KEY, base_url="http://127.0.0.1:9", max_retries=1, http_client=http)
    client = meter(sdk, ledger=memory_ledger) if metered else sdk
    with sdk, pytest.raises(httpx2.RemoteProtocolError, match="peer closed"), client.messages.stream(**_ask()):
        pass
    expected = [("error", 529)] * 2 if metered else []
    assert [(r.outcome, r.status_code) for r in memory_ledger.rows] == expected


def test_default_ledger_is_the_configured_one(emulator: Any, run_id: str) -> None:
    """Without ledger=, rows go to the configured ledger (under CANNY_HOME here), tagged from the arguments."""
    from canny.config import load_settings
    from canny.ledger import open_ledger

    with _sdk(emulator, run=run_id) as sdk:
        client = meter(sdk, project="acme", tags=("batch", "nightly"), session_id="s-1")
        client.messages.create(**_ask())
        client.middleware[-1].close()  # type: ignore[union-attr]
    ledger = open_ledger(load_settings().ledger)
    [row] = list(ledger.records())
    ledger.close()
    tags = {"batch", "nightly", "offline"}  # `offline`: the emulator answered
    assert (row.outcome, row.project, set(row.tags), row.session_id) == ("ok", "acme", tags, "s-1")
    assert row.endpoint
    assert row.endpoint.startswith("127.0.0.1:")
    assert row.key_fingerprint


def test_log_content_stores_prompt_and_answer(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """log_content=True stores the prompt and the response text, as canny.Client does."""
    with _sdk(emulator, run=run_id) as sdk:
        message = meter(sdk, ledger=memory_ledger, log_content=True).messages.create(**_ask("hello there"))
    [row] = memory_ledger.rows
    assert row.prompt_text is not None
    assert "hello there" in row.prompt_text
    assert row.response_text == message.content[0].text


def test_metering_twice_replaces_the_meter(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """meter(meter(client)) keeps one meter: still one row per attempt, in the newer ledger."""
    other = MemoryLedger()
    with _sdk(emulator, run=run_id) as sdk:
        client = meter(meter(sdk, ledger=other), ledger=memory_ledger)
        client.messages.create(**_ask())
    assert len(memory_ledger.rows) == 1
    assert other.rows == []


def test_stored_budget_refuses_before_sending(emulator: Any, tmp_path: Path, run_id: str) -> None:
    """A day budget too small for the call: BudgetExceeded before any request, and a budget_refused row."""
    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    budget.set_budget(ledger, period="day", limit="0.000001")
    with _sdk(emulator, run=run_id) as sdk, pytest.raises(errors.BudgetExceeded) as info:
        meter(sdk, ledger=ledger).messages.create(**_ask())
    assert info.value.budget
    assert emulator.requests(run=run_id) == []
    assert [r.outcome for r in ledger.records()] == ["budget_refused"]
    ledger.close()


def test_stored_budget_is_settled_with_the_actual_cost(emulator: Any, tmp_path: Path, run_id: str) -> None:
    """A roomy day budget: after the call, nothing stays reserved and the spend is the row's cost."""
    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger(tmp_path / "ledger.db")
    budget.set_budget(ledger, period="day", limit="5")
    with _sdk(emulator, run=run_id) as sdk:
        meter(sdk, ledger=ledger).messages.create(**_ask())
    [row] = list(ledger.records())
    [status] = budget.budget_status(ledger)
    assert status.reserved == 0
    assert status.spent == row.cost_usd
    ledger.close()


def test_budget_reserves_and_settles_each_attempt(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """budget=: one reservation per SDK attempt, settled with that attempt's cost; max_tokens lowered on the wire."""
    budget = RecordingBudget(cap=64)
    with _sdk(emulator, FAST, run=run_id) as sdk:
        meter(sdk, ledger=memory_ledger, budget=budget).messages.create(**_ask(max_tokens=500))
    assert len(budget.reserved) == 2
    assert len({s.call_id for s in budget.reserved}) == 1
    assert budget.settled == [r.cost_usd for r in memory_ledger.rows]
    assert budget.settled[0] == 0
    assert [r.body["max_tokens"] for r in emulator.requests(run=run_id)] == [64, 64]


# -- the meter never breaks a call, never leaks the key --------------------------------------


def test_ledger_failure_is_a_warning_not_an_exception(emulator: Any, run_id: str) -> None:
    """A ledger that cannot be written: the answer still arrives, with a CannyWarning that has no key in it."""
    with _sdk(emulator, run=run_id) as sdk, pytest.warns(CannyWarning, match="ledger not written") as caught:
        message = meter(sdk, ledger=BrokenLedger()).messages.create(**_ask())
    assert message.content
    assert all(CANARY_KEY not in str(w.message) for w in caught)


@pytest.mark.parametrize("plan", [("bad_key",), ("drop;after=2",), (FAST, "ok"), ("error_event;after=1",)])
def test_canary_key_never_reaches_rows_or_warnings(
    plan: tuple[str, ...], emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """Whatever the fault, no ledger row and no warning contains the API key."""
    with warnings.catch_warnings(record=True) as caught, _sdk(emulator, *plan, run=run_id) as sdk:
        warnings.simplefilter("always")
        try:
            with meter(sdk, ledger=memory_ledger, log_content=True).messages.stream(**_ask()) as stream:
                stream.until_done()
        except (anthropic.APIError, httpx2.HTTPError):
            pass
    assert memory_ledger.rows
    assert CANARY_KEY not in repr(memory_ledger.rows)
    assert all(CANARY_KEY not in str(w.message) for w in caught)


# -- one row per HTTP attempt wherever the meter sits (issue 8) -------------------------------


class Resend(anthropic.Middleware):
    """Sends every request twice (the first response closed unread), like a hedge or fallback."""

    def handle(self, request: Any, call_next: Any) -> Any:
        call_next(request).close()
        return call_next(request)

    async def handle_async(self, request: Any, call_next: Any) -> Any:
        await (await call_next(request)).close()
        return await call_next(request)


def test_meter_first_counts_each_attempt_of_a_resending_middleware(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """Meter() before a middleware that sends twice: two HTTP attempts, two rows of one call."""
    sdk = _sdk(emulator, "ok", "ok", run=run_id, middleware=[Meter(ledger=memory_ledger), Resend()])
    with sdk:
        sdk.messages.create(**_ask())
    assert len(emulator.requests(run=run_id)) == 2
    assert [r.attempt for r in memory_ledger.rows] == [1, 2]
    assert len({r.call_id for r in memory_ledger.rows}) == 1


def test_async_meter_first_counts_each_attempt(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """The async client: the same two rows for two HTTP attempts."""

    async def go() -> None:
        middleware = [Meter(ledger=memory_ledger), Resend()]
        async with _async_sdk(emulator, "ok", "ok", run=run_id, middleware=middleware) as sdk:
            await sdk.messages.create(**_ask())

    asyncio.run(go())
    assert len(emulator.requests(run=run_id)) == 2
    assert [r.attempt for r in memory_ledger.rows] == [1, 2]


@pytest.mark.parametrize("stream", [False, True], ids=["create", "stream"])
@pytest.mark.parametrize("meter_first", [True, False], ids=["meter-first", "meter-last"])
def test_refusal_fallback_middleware_gives_one_row_per_attempt(
    meter_first: bool, stream: bool, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """BetaRefusalFallbackMiddleware re-sends a refused request: a refused row and an ok row, in either order."""
    from anthropic.lib.middleware import BetaRefusalFallbackMiddleware

    fallback = BetaRefusalFallbackMiddleware([{"model": "claude-opus-4-6"}])
    metering = Meter(ledger=memory_ledger)
    middleware = [metering, fallback] if meter_first else [fallback, metering]
    with _sdk(emulator, "refusal", "ok", run=run_id, middleware=middleware) as sdk:
        if stream:
            with sdk.beta.messages.stream(**_ask()) as events:
                events.until_done()
        else:
            sdk.beta.messages.create(**_ask())
    assert len(emulator.requests(run=run_id)) == 2
    assert [(r.attempt, r.outcome) for r in memory_ledger.rows] == [(1, "refused"), (2, "ok")]
    assert memory_ledger.rows[1].model.startswith("claude-opus-4-6")


@pytest.mark.parametrize(("after", "outcome"), [(2, "interrupted"), (0, "error")])
def test_malformed_event_is_never_cancelled(
    after: int, outcome: str, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """A malformed SSE event: interrupted after text was shown, error before; never blamed on the caller."""
    import json

    def read_all(sdk: anthropic.Anthropic) -> None:
        with meter(sdk, ledger=memory_ledger).messages.stream(**_ask()) as stream:
            stream.until_done()

    with _sdk(emulator, f"malformed_event;after={after}", run=run_id) as sdk, pytest.raises(json.JSONDecodeError):
        read_all(sdk)
    [row] = memory_ledger.rows
    assert (row.outcome, row.error_type) == (outcome, "malformed_event")
    assert row.usage.input > 0
