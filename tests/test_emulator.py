"""The emulator as a real loopback server, driven by the real ``anthropic`` SDK and raw httpx2."""

from __future__ import annotations

import asyncio
import email.utils
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, MessageParam, TextBlockParam

from canny.emulator import Scenario, serve_in_thread
from canny.emulator.server import EmulatorHandle
from canny.emulator.tokens import count_tokens

KEY = "sk-ant-api03-CANARY-emulator-test-key"
MODEL = "claude-opus-5-5"
#: The API version the SDK 2.x sends (raw requests need one, like the real API).
VERSION = "2026-10-21"
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello there"}]

ClientFactory = Callable[..., anthropic.Anthropic]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[ClientFactory]:
    made: list[anthropic.Anthropic] = []

    def make(base_url: str | None = None, *, read: float = 10.0) -> anthropic.Anthropic:
        made.append(
            anthropic.Anthropic(
                api_key=KEY,
                base_url=base_url or emu.url_for(),
                max_retries=0,
                timeout=httpx2.Timeout(10.0, read=read),
                open_telemetry=False,
            )
        )
        return made[-1]

    yield make
    for c in made:
        c.close()


def text_of(message: Message) -> str:
    """The text blocks of a message, joined."""
    return "".join(block.text for block in message.content if block.type == "text")


def _post(url: str, body: dict[str, Any], **headers: str) -> httpx2.Response:
    return httpx2.post(
        f"{url}/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": VERSION, **headers}
    )


def _events(raw: str) -> list[tuple[str, str]]:
    frames = [f for f in raw.split("\n\n") if f]
    result = []
    for frame in frames:
        event, data = frame.split("\n")
        assert event.startswith("event: ")
        assert data.startswith("data: ")
        result.append((event[7:], data[6:]))
    return result


# -- normal answers ----------------------------------------------------------------------


def test_startup_answers_and_shutdown_is_clean() -> None:
    """A server answers as soon as the block starts, and stops when the block ends (its speed: benchmarks)."""
    with serve_in_thread() as handle:
        assert httpx2.get(f"{handle.base_url}/v1/models", headers={"x-api-key": KEY}).status_code == 200
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{handle.base_url}/v1/models")


def test_accepted_connections_have_nagle_off() -> None:
    """The emulator's socket makes asyncio set TCP_NODELAY on each connection (no 40 ms Nagle waits)."""
    import asyncio
    import socket

    from canny.emulator.server import bind

    async def check() -> int:
        seen: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=bind())
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        while not seen:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        await server.wait_closed()
        return seen[0]

    assert asyncio.run(check()) == 1


def test_create_returns_a_complete_message(client: ClientFactory) -> None:
    """A non-streamed call parses as a Message whose usage matches its text."""
    response = client().messages.with_raw_response.create(model=MODEL, max_tokens=200, messages=HELLO)
    message = response.parse()
    assert response.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert message.model == MODEL
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.usage.output_tokens == count_tokens(message.content[0].text)
    assert message.usage.input_tokens == 2 + count_tokens("Hello there")
    assert message.usage.service_tier == "standard"


def test_stream_and_create_agree(client: ClientFactory) -> None:
    """Streamed and non-streamed answers to one request have the same text and usage."""
    c = client()
    created = c.messages.create(model=MODEL, max_tokens=300, messages=HELLO)
    with c.messages.stream(model=MODEL, max_tokens=300, messages=HELLO) as stream:
        deltas = list(stream.text_stream)
        streamed = stream.get_final_message()
    assert len(deltas) > 3
    assert "".join(deltas) == text_of(created) == text_of(streamed)
    assert streamed.usage.model_dump() == created.usage.model_dump()
    assert streamed.stop_reason == created.stop_reason == "end_turn"


def test_answers_are_deterministic(client: ClientFactory) -> None:
    """The same prompt gets the same text; a different prompt a different one."""
    c = client()

    def ask(text: str) -> str:
        block = c.messages.create(model=MODEL, max_tokens=300, messages=[{"role": "user", "content": text}]).content[0]
        assert block.type == "text"
        return block.text

    assert ask("What is a ledger?") == ask("What is a ledger?") != ask("What is a budget?")


def test_count_tokens_equals_input_tokens(client: ClientFactory) -> None:
    """count_tokens reports exactly the input_tokens a matching request is billed."""
    c = client()
    request: dict[str, Any] = {
        "model": MODEL,
        "system": "You are a careful assistant.",
        "tools": [{"name": "lookup", "description": "Look a word up", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Define ledger."},
            {"role": "assistant", "content": "A book of accounts."},
            {"role": "user", "content": [{"type": "text", "text": "And budget?"}]},
        ],
    }
    counted = c.messages.count_tokens(**request).input_tokens
    message = c.messages.create(max_tokens=50, **request)
    assert counted == message.usage.input_tokens > 10


def test_max_tokens_cuts_exactly(client: ClientFactory) -> None:
    """A long answer stops at max_tokens with exactly that many output tokens, streamed or not."""
    c = client()
    messages: list[MessageParam] = [{"role": "user", "content": "Tell me everything [[words=500]]"}]
    message = c.messages.create(model=MODEL, max_tokens=7, messages=messages)
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 7)
    with c.messages.stream(model=MODEL, max_tokens=7, messages=messages) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.usage.output_tokens) == ("max_tokens", 7)
    assert text_of(final) == text_of(message)


def test_token_and_word_directives_size_the_answer(client: ClientFactory) -> None:
    """[[tokens=1000]] streams exactly 1,000 output tokens; [[words=N]] gives N words."""
    c = client()
    with c.messages.stream(
        model=MODEL, max_tokens=4096, messages=[{"role": "user", "content": "x [[tokens=1000]]"}]
    ) as s:
        final = s.get_final_message()
    assert (final.usage.output_tokens, final.stop_reason) == (1000, "end_turn")
    words = c.messages.create(model=MODEL, max_tokens=4096, messages=[{"role": "user", "content": "[[words=40]]"}])
    assert len(text_of(words).split()) == 40


def test_stop_sequences_end_the_answer(client: ClientFactory) -> None:
    """The first stop sequence ends the text before it; the reply names it."""
    message = client().messages.create(
        model=MODEL,
        max_tokens=100,
        stop_sequences=["STOP", "NEVER"],
        messages=[{"role": "user", "content": "[[say=alpha beta STOP gamma]]"}],
    )
    assert text_of(message) == "alpha beta "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "STOP")


def test_max_tokens_zero_prewarms_without_output(client: ClientFactory, emu: EmulatorHandle) -> None:
    """max_tokens=0 returns no content and stop_reason max_tokens; streamed it is a 400."""
    message = client().messages.create(model=MODEL, max_tokens=0, messages=HELLO)
    assert (message.content, message.stop_reason, message.usage.output_tokens) == ([], "max_tokens", 0)
    response = _post(emu.base_url, {"model": MODEL, "max_tokens": 0, "stream": True, "messages": HELLO})
    assert response.status_code == 400


def test_async_client_streams(emu: EmulatorHandle) -> None:
    """The async SDK client streams from the emulator too."""

    async def main() -> str:
        async with (
            anthropic.AsyncAnthropic(api_key=KEY, base_url=emu.url_for(), max_retries=0, open_telemetry=False) as c,
            c.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream,
        ):
            return "".join([text async for text in stream.text_stream])

    assert asyncio.run(main())


# -- wire format -------------------------------------------------------------------------


def test_sse_framing_matches_the_api(emu: EmulatorHandle) -> None:
    """Events come in the API's order and framing, with padded and compact JSON and full usage."""
    response = _post(emu.url_for(), {"model": MODEL, "max_tokens": 100, "stream": True, "messages": HELLO})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["request-id"].startswith("req_")
    assert response.text.endswith("\n\n")
    events = _events(response.text)
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert len(names) > 7
    for name, data in events:
        assert json.loads(data)["type"] == name
    assert events[0][1].startswith('{"type": "message_start", "message": {')
    assert events[-2][1].startswith('{"type":"message_delta"')
    start = json.loads(events[0][1])["message"]
    assert start["usage"]["output_tokens"] == 1
    assert start["stop_reason"] is None
    assert set(start["usage"]) >= {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "service_tier",
    }
    delta = json.loads(events[-2][1])
    text = "".join(json.loads(d)["delta"]["text"] for n, d in events if n == "content_block_delta")
    assert delta["usage"]["output_tokens"] == count_tokens(text)
    assert delta["usage"]["input_tokens"] == start["usage"]["input_tokens"]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None, "stop_details": None}


def test_error_bodies_have_the_api_shape(emu: EmulatorHandle) -> None:
    """Errors carry {type: error, error: {type, message}, request_id} matching the request-id header."""
    response = _post(emu.base_url, {"model": MODEL, "messages": HELLO})
    body = response.json()
    assert response.status_code == 400
    assert body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required", "details": None},
        "request_id": response.headers["request-id"],
    }
    missing = httpx2.get(f"{emu.base_url}/v2/nothing", headers={"x-api-key": KEY})
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found_error"


# -- validation and auth -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        ({"model": None}, 400, "model: Field required"),
        ({"model": 5}, 400, "model: Input should be a valid string"),
        ({"max_tokens": None}, 400, "max_tokens: Field required"),
        ({"max_tokens": "ten"}, 400, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": -1}, 400, "max_tokens: Input should be greater than or equal to 0"),
        ({"max_tokens": 500_000}, 400, "which is the maximum allowed number of output tokens"),
        ({"messages": None}, 400, "messages: Field required"),
        ({"messages": []}, 400, "messages: at least one message is required"),
        ({"messages": [{"role": "system", "content": "x"}]}, 400, "messages.0.role: Input should be 'user' or"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, 400, 'first message must use the "user" role'),
        ({"messages": [{"role": "user", "content": ""}]}, 400, "text content blocks must be non-empty"),
        ({"messages": [{"role": "user"}]}, 400, "messages.0.content: Field required"),
        ({"temperature": 0.5}, 400, "temperature: Extra inputs are not permitted"),
        ({"top_p": 0.9}, 400, "top_p: Extra inputs are not permitted"),
        ({"top_k": 5}, 400, "top_k: Extra inputs are not permitted"),
        ({"stop_sequences": [" "]}, 400, "stop_sequences"),
        ({"model": "claude-nonexistent-9"}, 404, "model: claude-nonexistent-9"),
        ({"model": "claude-3-opus-20240229"}, 404, "model: claude-3-opus-20240229"),
        (
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Sure"}]},
            400,
            "does not support assistant message prefill",
        ),
    ],
)
def test_invalid_requests_are_rejected_like_the_api(
    emu: EmulatorHandle, change: dict[str, Any], status: int, message: str
) -> None:
    """Malformed requests get the API's status, error type and field-named message."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 10, "messages": HELLO}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(emu.base_url, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert message in error["message"]


def test_prefill_is_accepted_by_older_models(client: ClientFactory) -> None:
    """Claude 4.5-era models accept a final assistant message (prefill) and resolve aliases."""
    messages: list[MessageParam] = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}]
    message = client().messages.create(model="claude-haiku-4-5", max_tokens=50, messages=messages)
    assert message.model == "claude-haiku-4-5-20251001"


def test_unknown_model_is_a_not_found_error(client: ClientFactory) -> None:
    """The SDK sees NotFoundError naming the model."""
    with pytest.raises(anthropic.NotFoundError, match="model: claude-opus-4-1"):
        client().messages.create(model="claude-opus-4-1", max_tokens=10, messages=HELLO)


def test_missing_key_is_401(emu: EmulatorHandle) -> None:
    """No x-api-key and no Authorization header: 401 authentication_error."""
    response = httpx2.post(f"{emu.base_url}/v1/messages", json={"model": MODEL, "max_tokens": 5, "messages": HELLO})
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_configured_key_is_enforced() -> None:
    """With api_key set, only that key (Bearer or x-api-key) is accepted."""
    with serve_in_thread(api_key=KEY) as handle:
        wrong = anthropic.Anthropic(api_key="sk-wrong", base_url=handle.base_url, max_retries=0, open_telemetry=False)
        right = anthropic.Anthropic(api_key=KEY, base_url=handle.base_url, max_retries=0, open_telemetry=False)
        with wrong, right:
            with pytest.raises(anthropic.AuthenticationError, match="invalid x-api-key"):
                wrong.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
            assert right.messages.create(model=MODEL, max_tokens=5, messages=HELLO).stop_reason
        assert _post(handle.base_url, {"model": MODEL, "max_tokens": 5, "messages": HELLO}).status_code == 200


def test_recorded_requests_never_hold_the_key(client: ClientFactory, emu: EmulatorHandle) -> None:
    """The request log keeps headers and body but redacts Authorization / x-api-key."""
    url = emu.url_for(run="redact-run")
    client(url).messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    _post(url, {"model": MODEL, "max_tokens": 5, "messages": HELLO})
    records = emu.requests("redact-run")
    assert [r.status for r in records] == [200, 200]
    assert records[0].headers["authorization"] == "[redacted]"
    assert records[1].headers["x-api-key"] == "[redacted]"
    assert records[0].body["messages"] == HELLO
    assert KEY not in repr(records)


# -- prompt caching ----------------------------------------------------------------------

RULES = "Rules of the house. " * 50
CACHED_SYSTEM: list[TextBlockParam] = [{"type": "text", "text": RULES, "cache_control": {"type": "ephemeral"}}]


def test_cache_write_then_read_per_run(client: ClientFactory, emu: EmulatorHandle) -> None:
    """A marked prefix is written once, then read by later identical prefixes in the same run."""
    c = client(emu.url_for(run="cache-run"))
    first = c.messages.create(model=MODEL, max_tokens=20, system=CACHED_SYSTEM, messages=HELLO)
    second = c.messages.create(model=MODEL, max_tokens=20, system=CACHED_SYSTEM, messages=HELLO)
    written = first.usage.cache_creation_input_tokens
    assert written
    assert written == count_tokens(RULES)
    assert first.usage.cache_creation is not None
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == written
    assert (first.usage.cache_read_input_tokens, second.usage.cache_creation_input_tokens) == (0, 0)
    assert second.usage.cache_read_input_tokens == written
    assert first.usage.input_tokens == second.usage.input_tokens == 2 + count_tokens("Hello there")
    counted = c.messages.count_tokens(model=MODEL, system=CACHED_SYSTEM, messages=HELLO).input_tokens
    assert counted == written + first.usage.input_tokens
    other_run = client(emu.url_for()).messages.create(model=MODEL, max_tokens=20, system=CACHED_SYSTEM, messages=HELLO)
    assert other_run.usage.cache_creation_input_tokens == written


def test_streamed_cache_usage_keeps_the_ttl_split(client: ClientFactory) -> None:
    """A streamed 1h write reports the 1h bucket in message_start and totals in message_delta."""
    c = client()
    with c.messages.stream(
        model=MODEL, max_tokens=20, messages=HELLO, cache_control={"type": "ephemeral", "ttl": "1h"}
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.input_tokens == 0
    assert final.usage.cache_creation is not None
    written = final.usage.cache_creation_input_tokens
    assert written is not None
    assert written > 0
    assert final.usage.cache_creation.ephemeral_1h_input_tokens == written


# -- models ------------------------------------------------------------------------------


def test_models_list_and_retrieve(client: ClientFactory) -> None:
    """The Models API pages through the catalogue and resolves aliases to dated ids."""
    c = client()
    page = c.models.list(limit=3)
    assert len(page.data) == 3
    assert page.has_more
    assert page.last_id == page.data[-1].id
    ids = [m.id for m in c.models.list(limit=5)]
    assert "claude-opus-5-5" in ids
    assert "claude-3-opus-20240229" not in ids
    assert len(ids) == len(set(ids))
    retired = [m.id for m in c.models.list(lifecycle=["retired"])]
    assert "claude-3-opus-20240229" in retired
    info = c.models.retrieve("claude-sonnet-4-5")
    assert (info.id, info.lifecycle, info.type) == ("claude-sonnet-4-5-20250929", "deprecated", "model")
    with pytest.raises(anthropic.NotFoundError):
        c.models.retrieve("claude-imaginary")


# -- fault plans and scenarios -----------------------------------------------------------


def test_url_plan_applies_faults_in_order_then_ok(client: ClientFactory, emu: EmulatorHandle) -> None:
    """The N-th request of a run gets the N-th planned fault; ';' and ',' survive the SDK."""
    url = emu.url_for("overloaded", "rate_limit;retry_after=0.01", run="plan-run")
    assert url == f"{emu.base_url}/x/plan-run/overloaded,rate_limit;retry_after=0.01"
    c = client(url)
    with pytest.raises(anthropic.OverloadedError):
        c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    with pytest.raises(anthropic.RateLimitError) as info:
        c.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert info.value.response.headers["retry-after"] == "0.01"
    c.messages.count_tokens(model=MODEL, messages=HELLO)
    assert c.messages.create(model=MODEL, max_tokens=5, messages=HELLO).stop_reason
    records = emu.requests("plan-run")
    assert [(r.fault, r.status, r.index) for r in records] == [
        ("overloaded", 529, 0),
        ("rate_limit;retry_after=0.01", 429, 1),
        (None, 200, None),
        ("ok", 200, 2),
    ]
    assert records[0].received < records[1].received < records[3].received


def test_url_for_validates_faults_and_runs(emu: EmulatorHandle) -> None:
    """url_for refuses unknown faults and unsafe run names; a fresh run id by default."""
    with pytest.raises(ValueError, match="unknown fault"):
        emu.url_for("rate_limitt")
    with pytest.raises(ValueError, match="run name"):
        emu.url_for("ok", run="a/b")
    assert emu.url_for() != emu.url_for()


def test_bad_plan_in_a_raw_url_is_a_400(emu: EmulatorHandle) -> None:
    """A hand-written URL with an unknown fault gets a 400 naming it."""
    response = _post(f"{emu.base_url}/x/r/warp_drive", {"model": MODEL, "max_tokens": 5, "messages": HELLO})
    assert response.status_code == 400
    assert "unknown fault 'warp_drive'" in response.json()["error"]["message"]


def test_scenario_scripts_unprefixed_requests() -> None:
    """A server's scenario applies to plain /v1 requests in order; a seed makes the random mix repeatable."""
    scenario = Scenario.of("overloaded", "ok")
    with serve_in_thread(scenario) as handle:
        statuses = [
            _post(handle.base_url, {"model": MODEL, "max_tokens": 5, "messages": HELLO}).status_code for _ in range(3)
        ]
    assert statuses == [529, 200, 200]
    from canny.emulator import load_scenario

    chaos = load_scenario("seed = 3\n[random]\noverloaded = 0.5\n")
    runs = []
    for _ in range(2):
        with serve_in_thread(chaos) as handle:
            runs.append(
                [
                    _post(handle.base_url, {"model": MODEL, "max_tokens": 5, "messages": HELLO}).status_code
                    for _ in range(12)
                ]
            )
    assert runs[0] == runs[1]
    assert {529, 200} == set(runs[0])


def test_prompt_directive_can_pick_a_fault(client: ClientFactory, emu: EmulatorHandle) -> None:
    """[[fault=SPEC]] in the prompt applies when the plan says ok, and is recorded."""
    message = client(emu.url_for(run="directive-run")).messages.create(
        model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi [[fault=refusal;category=bio]]"}]
    )
    assert message.stop_reason == "refusal"
    assert message.stop_details is not None
    assert message.stop_details.category == "bio"
    assert [r.fault for r in emu.requests("directive-run")] == ["refusal;category=bio"]


def test_retry_after_variants(emu: EmulatorHandle) -> None:
    """retry_after_ms sends retry-after-ms alone; retry_after_date sends an HTTP date."""
    body = {"model": MODEL, "max_tokens": 5, "messages": HELLO}
    ms = _post(emu.url_for("rate_limit;retry_after_ms=250"), body)
    assert ms.headers["retry-after-ms"] == "250"
    assert "retry-after" not in ms.headers
    dated = _post(emu.url_for("rate_limit;retry_after_date=30"), body)
    when = email.utils.parsedate_to_datetime(dated.headers["retry-after"]).timestamp()
    assert 20 < when - time.time() <= 31
    spend = _post(emu.url_for("spend_limit"), body)
    assert "retry-after" not in spend.headers
    assert spend.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
    assert _post(emu.url_for("x_should_retry_false"), body).headers["x-should-retry"] == "false"
    assert _post(emu.url_for("server_error;should_retry=true;status=503"), body).status_code == 503


def test_concurrent_requests_each_get_one_plan_entry(emu: EmulatorHandle) -> None:
    """Parallel requests to one run consume distinct plan entries, none lost or doubled."""
    url = emu.url_for(*["overloaded"] * 8, run="parallel-run")
    statuses: list[int] = []
    lock = threading.Lock()

    def call() -> None:
        status = _post(url, {"model": MODEL, "max_tokens": 5, "messages": HELLO}).status_code
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] * 8 + [529] * 8
    assert sorted(r.index or 0 for r in emu.requests("parallel-run")) == list(range(16))
