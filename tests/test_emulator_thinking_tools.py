"""Thinking (extended, adaptive, omitted and redacted) and server tools (web search, web
fetch, code execution) in the emulator, checked with the real SDK and against the shapes of
the recorded exchanges in tests/wire/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from canny.emulator import serve_in_thread
from canny.emulator.server import EmulatorHandle

KEY = "sk-ant-api03-CANARY-thinking"
#: Raw requests carry the version header every API request needs (a 400 without it).
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
WIRE = Path(__file__).parent / "wire"
SEARCH = {"type": "web_search_20250305", "name": "web_search"}
FETCH = {"type": "web_fetch_20250910", "name": "web_fetch"}
CODE = {"type": "code_execution_20250825", "name": "code_execution"}
OLD_CODE = {"type": "code_execution_20250522", "name": "code_execution"}

_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


def _client(emu: EmulatorHandle) -> Any:
    """An SDK client on a fresh run, closed after the test (typed loosely: the tests send raw dicts)."""
    client = anthropic.Anthropic(api_key=KEY, base_url=emu.url_for(), max_retries=0)
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _ask(prompt: str = "Why is the sky blue?") -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}]


def _recorded(name: str) -> dict[str, Any]:
    return dict(json.loads(json.loads((WIRE / f"{name}.json").read_text())["body"]))


def _sse_events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


def test_enabled_thinking_gives_a_signed_block_counted_in_output(emu: EmulatorHandle) -> None:
    """Manual thinking answers with a thinking block and signature, billed as output tokens."""
    client = _client(emu)
    reply = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=3000,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=_ask(),
    )
    plain = client.messages.create(model="claude-sonnet-4-5", max_tokens=3000, messages=_ask())
    block = reply.content[0]
    assert block.type == "thinking" and block.thinking and len(block.signature) > 100
    assert reply.content[1].type == "text"
    assert reply.usage.output_tokens > plain.usage.output_tokens
    recorded = _recorded("sonnet4_thinking_tool_use_json")["content"][0]
    assert set(reply.model_dump()["content"][0]) == set(recorded)


def test_streamed_thinking_uses_thinking_and_signature_deltas(emu: EmulatorHandle) -> None:
    """A streamed thinking block sends thinking_delta events, then one signature_delta before its stop."""
    body = {
        "model": "claude-opus-5",
        "max_tokens": 2000,
        "stream": True,
        "thinking": {"type": "adaptive"},
        "messages": _ask(),
    }
    response = httpx2.post(emu.url_for() + "/v1/messages", json=body, headers=HEADERS)
    events = _sse_events(response.text)
    block0 = [e for e in events if e.get("index") == 0]
    assert block0[0]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    kinds = [e["delta"]["type"] for e in block0 if e["type"] == "content_block_delta"]
    assert kinds[-1] == "signature_delta" and set(kinds[:-1]) == {"thinking_delta"} and len(kinds) > 2
    assert block0[-1]["type"] == "content_block_stop"
    final = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
    assert 0 < final["output_tokens_details"]["thinking_tokens"] < final["output_tokens"]
    with _client(emu).messages.stream(
        model="claude-opus-5", max_tokens=2000, thinking={"type": "adaptive"}, messages=_ask()
    ) as stream:
        message = stream.get_final_message()
    assert message.content[0].type == "thinking" and message.content[0].signature


def test_omitted_display_keeps_the_signature(emu: EmulatorHandle) -> None:
    """display omitted sends an empty thinking text but still a signature, and still bills the tokens."""
    reply = _client(emu).messages.create(
        model="claude-opus-5",
        max_tokens=2000,
        thinking={"type": "adaptive", "display": "omitted"},
        messages=_ask(),
    )
    block = reply.content[0]
    assert block.type == "thinking" and block.thinking == "" and block.signature
    assert reply.usage.output_tokens_details is not None and reply.usage.output_tokens_details.thinking_tokens > 0


def test_redacted_thinking_directive(emu: EmulatorHandle) -> None:
    """[[thinking=redacted]] returns a redacted_thinking block with opaque data, streamed whole."""
    client = _client(emu)
    args: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 3000,
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "messages": _ask("Tell me [[thinking=redacted]]"),
    }
    reply = client.messages.create(**args)
    assert reply.content[0].type == "redacted_thinking" and reply.content[0].data
    assert set(reply.model_dump()["content"][0]) == set(_recorded("sonnet45_redacted_thinking_json")["content"][0])
    with client.messages.stream(**args) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0] == reply.content[0]


def test_redacted_thinking_fault(emu: EmulatorHandle) -> None:
    """The redacted_thinking fault redacts the thinking block of that request only."""
    client: Any = anthropic.Anthropic(api_key=KEY, base_url=emu.url_for("redacted_thinking", "ok"), max_retries=0)
    _CLIENTS.append(client)
    args: dict[str, Any] = {"model": "claude-opus-5", "max_tokens": 2000, "thinking": {"type": "adaptive"}}
    first = client.messages.create(**args, messages=_ask())
    second = client.messages.create(**args, messages=_ask())
    assert [first.content[0].type, second.content[0].type] == ["redacted_thinking", "thinking"]
    assert first.content[1] == second.content[1]


def test_thinking_history_round_trips(emu: EmulatorHandle) -> None:
    """A reply's thinking blocks sent back in the history are accepted."""
    client = _client(emu)
    args: dict[str, Any] = {"model": "claude-opus-5", "max_tokens": 2000, "thinking": {"type": "adaptive"}}
    first = client.messages.create(**args, messages=_ask())
    second = client.messages.create(
        **args,
        messages=[*_ask(), {"role": "assistant", "content": first.content}, {"role": "user", "content": "And?"}],
    )
    assert second.stop_reason == "end_turn" and second.usage.input_tokens > first.usage.input_tokens


def test_thinking_counts_toward_max_tokens(emu: EmulatorHandle) -> None:
    """Thinking and text together never exceed max_tokens."""
    reply = _client(emu).messages.create(
        model="claude-opus-5", max_tokens=20, thinking={"type": "adaptive"}, messages=_ask()
    )
    assert reply.usage.output_tokens == 20 and reply.stop_reason == "max_tokens"


@pytest.mark.parametrize(
    ("model", "thinking", "message"),
    [
        ("claude-opus-5", {"type": "enabled", "budget_tokens": 2000}, "'enabled' is not supported"),
        ("claude-sonnet-4-5", {"type": "adaptive"}, "'adaptive' is not supported"),
        ("claude-fable-5-1", {"type": "disabled"}, "'disabled' is not supported"),
        ("claude-sonnet-4-5", {"type": "enabled", "budget_tokens": 100}, "greater than or equal to 1024"),
        ("claude-sonnet-4-5", {"type": "enabled", "budget_tokens": 5000}, "max_tokens"),
        ("claude-opus-4-8", {"type": "adaptive", "tool_choice": "any"}, "tool_choice forces tool use"),
    ],
)
def test_thinking_configs_the_model_rejects(
    emu: EmulatorHandle, model: str, thinking: dict[str, Any], message: str
) -> None:
    """Thinking types and budgets the API rejects are 400s naming the problem."""
    body: dict[str, Any] = {"model": model, "max_tokens": 3000, "thinking": thinking, "messages": _ask()}
    if thinking.pop("tool_choice", None):
        body["tool_choice"] = {"type": "any"}
        body["tools"] = [{"name": "lookup", "input_schema": {"type": "object"}}]
    response = httpx2.post(emu.url_for() + "/v1/messages", json=body, headers=HEADERS)
    assert response.status_code == 400 and message in response.json()["error"]["message"]


def test_web_search_runs_and_counts_like_the_recording(emu: EmulatorHandle) -> None:
    """Web search returns server_tool_use + web_search_tool_result in the recorded shapes and counts one search."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "tools": [SEARCH],
        "messages": _ask("Search Paris weather"),
    }
    got = httpx2.post(emu.url_for() + "/v1/messages", json=body, headers=HEADERS).json()
    recorded = _recorded("sonnet45_web_search_json")
    assert [b["type"] for b in got["content"][:2]] == ["server_tool_use", "web_search_tool_result"]
    assert set(got["content"][0]) == set(recorded["content"][0])
    assert set(got["content"][1]) == set(recorded["content"][1])
    assert set(got["content"][1]["content"][0]) == set(recorded["content"][1]["content"][0])
    assert got["content"][0]["input"] == {"query": "Search Paris weather"}
    assert got["usage"]["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert got["content"][2]["type"] == "text"


def test_server_tool_results_are_billed_as_input(emu: EmulatorHandle) -> None:
    """The final input tokens include the results read back; message_start shows the prompt alone."""
    body = {"model": "claude-opus-5", "max_tokens": 1000, "stream": True, "tools": [SEARCH], "messages": _ask()}
    events = _sse_events(httpx2.post(emu.url_for() + "/v1/messages", json=body, headers=HEADERS).text)
    start = events[0]["message"]["usage"]["input_tokens"]
    final = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
    assert final["input_tokens"] > start and final["server_tool_use"]["web_search_requests"] == 1
    use = next(e for e in events if e["type"] == "content_block_start")["content_block"]
    assert use["type"] == "server_tool_use" and use["input"] == {}
    first_delta = next(e for e in events if e["type"] == "content_block_delta")
    assert first_delta["delta"] == {"type": "input_json_delta", "partial_json": ""}


def test_web_fetch_fetches_the_prompt_url(emu: EmulatorHandle) -> None:
    """Web fetch fetches the prompt's URL and answers a document like the recording."""
    reply = _client(emu).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=1000,
        tools=[FETCH],
        messages=_ask("Summarise https://example.org/page please"),
    )
    got = reply.model_dump(exclude_none=True)["content"]
    recorded = _recorded("sonnet46_web_fetch_json")["content"]
    assert got[0]["input"] == {"url": "https://example.org/page"}
    assert set(got[1]) == set(recorded[1]) and set(got[1]["content"]) == set(recorded[1]["content"])
    assert reply.usage.server_tool_use is not None and reply.usage.server_tool_use.web_fetch_requests == 1


@pytest.mark.parametrize(
    ("tool", "name", "result"),
    [
        (CODE, "bash_code_execution", "bash_code_execution_tool_result"),
        (OLD_CODE, "code_execution", "code_execution_tool_result"),
    ],
)
def test_code_execution_runs_in_a_container(emu: EmulatorHandle, tool: dict[str, Any], name: str, result: str) -> None:
    """Code execution answers the tool version's block types, a zero return code and a container."""
    with _client(emu).messages.stream(
        model="claude-opus-5", max_tokens=1000, tools=[tool], messages=_ask("Compute 6 times 7")
    ) as stream:
        message = stream.get_final_message()
    use, output = message.content[0], message.content[1]
    assert use.type == "server_tool_use" and use.name == name
    assert output.type == result and output.content.return_code == 0
    assert message.container is not None and message.container.id.startswith("container_")
    assert message.usage.server_tool_use is not None and message.usage.server_tool_use.web_search_requests == 0


def test_server_tools_run_once_per_exchange(emu: EmulatorHandle) -> None:
    """After a client tool result, server tools do not run again; tool_choice none runs none."""
    client = _client(emu)
    lookup = {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    first = client.messages.create(model="claude-opus-5", max_tokens=1000, tools=[SEARCH, lookup], messages=_ask())
    assert [b.type for b in first.content][:2] == ["server_tool_use", "web_search_tool_result"]
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    history = [
        *_ask(),
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]},
    ]
    second = client.messages.create(model="claude-opus-5", max_tokens=1000, tools=[SEARCH, lookup], messages=history)
    assert [b.type for b in second.content] == ["text"]
    none = client.messages.create(
        model="claude-opus-5", max_tokens=1000, tools=[SEARCH], tool_choice={"type": "none"}, messages=_ask()
    )
    assert [b.type for b in none.content] == ["text"]


def test_low_effort_adaptive_thinking_skips_the_block_unless_always_on(emu: EmulatorHandle) -> None:
    """Adaptive thinking at effort low answers without a thinking block, except on Fable (always on)."""
    client = _client(emu)
    args: dict[str, Any] = {"max_tokens": 2000, "thinking": {"type": "adaptive"}, "output_config": {"effort": "low"}}
    low = client.messages.create(model="claude-opus-5", messages=_ask(), **args)
    assert [b.type for b in low.content] == ["text"] and low.stop_reason == "end_turn"
    fable = client.messages.create(model="claude-fable-5-1", messages=_ask(), **args)
    assert fable.content[0].type == "thinking"
