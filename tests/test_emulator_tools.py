"""Tool use in the emulator, driven by the real ``anthropic`` SDK: tool_use answers streamed and
not, multi-turn loops, usage and count_tokens, validation, tool_choice, directives and faults."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, ToolUseBlock
from hypothesis import given, settings
from hypothesis import strategies as st

from canny.emulator import serve_in_thread
from canny.emulator.models import resolve_model
from canny.emulator.server import EmulatorHandle
from canny.emulator.tokens import count_tokens
from canny.emulator.tools import plan_calls
from canny.emulator.validation import validate_messages
from tests.conftest import transport_error

KEY = "sk-ant-api03-CANARY-tools"
MODEL = "claude-opus-5"  # hidden tool prompt: 286 tokens (auto/none), 406 (any/tool)
LOOKUP: dict[str, Any] = {
    "name": "lookup",
    "description": "Look a term up in the glossary.",
    "input_schema": {
        "type": "object",
        "properties": {
            "term": {"type": "string", "maxLength": 40},
            "limit": {"type": "integer", "minimum": 2, "maximum": 5},
            "strict": {"type": "boolean"},
        },
        "required": ["term", "limit"],
    },
}
CALC: dict[str, Any] = {
    "name": "calculator",
    "input_schema": {
        "type": "object",
        "properties": {
            "a": {"type": "number"},
            "b": {"type": "number", "exclusiveMaximum": 3},
            "op": {"type": "string", "enum": ["mul", "add"]},
        },
        "required": ["a", "b", "op"],
    },
}
TOOLS = [LOOKUP, CALC]
ASK: list[dict[str, Any]] = [{"role": "user", "content": "What do budgets and ledgers do?"}]


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


@pytest.fixture
def client(emu: EmulatorHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key=KEY, base_url=emu.url_for(), max_retries=0, open_telemetry=False) as c:
        yield c


def _sdk(emu: EmulatorHandle, *plan: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=emu.url_for(*plan), max_retries=0, open_telemetry=False)


def conforms(value: Any, schema: Mapping[str, Any]) -> bool:
    """Whether ``value`` satisfies the JSON-schema keywords these tests use."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(name in value for name in schema.get("required", []))
            and all(conforms(v, props.get(k, {})) for k, v in value.items())
        )
    if kind == "array":
        items = schema.get("items", {})
        return (
            isinstance(value, list)
            and len(value) >= schema.get("minItems", 0)
            and all(conforms(v, items) for v in value)
        )
    if kind in ("integer", "number"):
        ok = isinstance(value, int) if kind == "integer" else isinstance(value, int | float)
        ok = ok and not isinstance(value, bool) and value >= schema.get("minimum", value)
        return ok and value <= schema.get("maximum", value) and value < schema.get("exclusiveMaximum", value + 1)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str) and schema.get("minLength", 0) <= len(value) <= schema.get(
            "maxLength", len(value)
        )
    return True


def params(**given: Any) -> dict[str, Any]:
    """Request parameters: the test model, 300 max_tokens, then ``given``."""
    return {"model": MODEL, "max_tokens": 300, **given}


def create(c: anthropic.Anthropic, **given: Any) -> Message:
    message = c.messages.create(**params(**given))
    assert isinstance(message, Message)
    return message


def counted(c: anthropic.Anthropic, **given: Any) -> int:
    given.pop("max_tokens", None)
    return c.messages.count_tokens(**{"model": MODEL, **given}).input_tokens


def tool_uses(message: Message) -> list[ToolUseBlock]:
    return [block for block in message.content if block.type == "tool_use"]


def text_of(message: Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


def _results(message: Message, text: str = "42") -> dict[str, Any]:
    blocks = [{"type": "tool_result", "tool_use_id": b.id, "content": f"{b.name}: {text}"} for b in tool_uses(message)]
    return {"role": "user", "content": blocks}


def _assistant(message: Message) -> dict[str, Any]:
    return {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in message.content]}


def _post(url: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(f"{url}/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"})


def _events(raw: str) -> list[dict[str, Any]]:
    return [json.loads(frame.split("\ndata: ", 1)[1]) for frame in raw.split("\n\n") if frame]


# -- answers -----------------------------------------------------------------------------


def test_create_answers_with_a_tool_use_block(client: anthropic.Anthropic) -> None:
    """A request with tools gets a short text, then a tool_use whose input fits the schema."""
    message = create(client, messages=ASK, tools=TOOLS)
    assert message.stop_reason == "tool_use"
    assert text_of(message) == "I'll use the lookup tool."
    (call,) = tool_uses(message)
    assert re.fullmatch(r"toolu_01[A-Za-z0-9]{22}", call.id)
    assert call.name == "lookup"
    assert isinstance(call.input, dict)
    assert conforms(call.input, LOOKUP["input_schema"])
    assert set(call.input) == {"term", "limit"}
    output = count_tokens(text_of(message)) + count_tokens(json.dumps(call.input))
    assert message.usage.output_tokens == output


def test_stream_assembles_the_same_tool_call(client: anthropic.Anthropic) -> None:
    """messages.stream yields the same tool_use (id, name, dict input) and usage as create."""
    created = create(client, messages=ASK, tools=TOOLS)
    with client.messages.stream(**params(messages=ASK, tools=TOOLS)) as stream:
        final = stream.get_final_message()
    (call,) = tool_uses(final)
    assert isinstance(call.input, dict)
    assert conforms(call.input, LOOKUP["input_schema"])
    assert [b.model_dump() for b in tool_uses(final)] == [b.model_dump() for b in tool_uses(created)]
    assert final.stop_reason == "tool_use"
    assert final.usage.model_dump() == created.usage.model_dump()


def test_stream_sends_input_json_deltas_in_the_api_order(emu: EmulatorHandle) -> None:
    """The tool_use block starts with input {}, then input_json_delta pieces that join to the input."""
    body = {"model": MODEL, "max_tokens": 300, "messages": ASK, "tools": TOOLS, "stream": True}
    events = _events(_post(emu.url_for(), body).text)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    tool = starts[1]["content_block"]
    assert tool["input"] == {}
    assert tool["id"].startswith("toolu_")
    pieces = [e["delta"]["partial_json"] for e in events if e.get("delta", {}).get("type") == "input_json_delta"]
    assert len(pieces) >= 2
    assert all(e["index"] == 1 for e in events if e.get("delta", {}).get("type") == "input_json_delta")
    assert conforms(json.loads("".join(pieces)), LOOKUP["input_schema"])
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"]["input_tokens"] == events[0]["message"]["usage"]["input_tokens"]
    names = [e["type"] for e in events]
    collapsed = [name for i, name in enumerate(names) if i == 0 or name != names[i - 1]]
    assert collapsed == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_tool_loop_runs_three_turns_then_answers(client: anthropic.Anthropic) -> None:
    """[[tool_turns=3]]: three tool calls, each result sent back, then end_turn; input grows, count_tokens agrees."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Check budgets [[tool_turns=3]]"}]
    reasons, inputs, ids = [], [], []
    for _ in range(10):
        with client.messages.stream(**params(messages=messages, tools=TOOLS)) as stream:
            message = stream.get_final_message()
        in_tokens = counted(client, messages=messages, tools=TOOLS)
        assert in_tokens == message.usage.input_tokens
        reasons.append(message.stop_reason)
        inputs.append(message.usage.input_tokens)
        ids += [b.id for b in tool_uses(message)]
        messages.append(_assistant(message))
        if message.stop_reason != "tool_use":
            break
        messages.append(_results(message))
    assert reasons == ["tool_use", "tool_use", "tool_use", "end_turn"]
    assert inputs == sorted(inputs) and len(set(inputs)) == 4
    assert len(set(ids)) == 3
    assert not tool_uses(message)
    assert text_of(message)


def test_default_is_one_tool_call_then_text(client: anthropic.Anthropic) -> None:
    """Without a directive: one tool call, a text answer after its result, and a new question calls again."""
    first = create(client, messages=ASK, tools=TOOLS)
    messages = [*ASK, _assistant(first), _results(first)]
    second = create(client, messages=messages, tools=TOOLS)
    assert (first.stop_reason, second.stop_reason) == ("tool_use", "end_turn")
    messages += [_assistant(second), {"role": "user", "content": "And reservations?"}]
    third = create(client, messages=messages, tools=TOOLS)
    assert third.stop_reason == "tool_use"


def test_a_required_id_missing_from_the_prompt_gets_an_answer_not_a_call(client: anthropic.Anthropic) -> None:
    """A tool requiring an *_id is not called on a turn with no digit to fill it; it is once one is given."""
    order = {
        "name": "lookup_order",
        "description": "Look up an order.",
        "input_schema": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    }
    greeting = create(client, messages=[{"role": "user", "content": "Hi! A question about an order."}], tools=[order])
    assert (greeting.stop_reason, tool_uses(greeting)) == ("end_turn", [])
    asked = create(client, messages=[{"role": "user", "content": "Where is order #4821?"}], tools=[order])
    assert asked.stop_reason == "tool_use"
    assert [b.name for b in tool_uses(asked)] == ["lookup_order"]


def test_tool_directive_picks_tools_per_turn_and_in_parallel(client: anthropic.Anthropic) -> None:
    """[[tool=calculator,lookup+calculator]] calls calculator, then both at once; inputs fit each schema."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Work it out [[tool_turns=2]] [[tool=calculator,lookup+calculator]]"}
    ]
    first = create(client, messages=messages, tools=TOOLS)
    assert [b.name for b in tool_uses(first)] == ["calculator"]
    assert tool_uses(first)[0].input["op"] == "mul"
    messages += [_assistant(first), _results(first)]
    second = create(client, messages=messages, tools=TOOLS)
    assert [b.name for b in tool_uses(second)] == ["lookup", "calculator"]
    assert text_of(second) == "I'll use the lookup and calculator tools."
    schemas = {t["name"]: t["input_schema"] for t in TOOLS}
    assert all(conforms(b.input, schemas[b.name]) for b in tool_uses(second))
    single = create(
        client,
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
    )
    assert [b.name for b in tool_uses(single)] == ["lookup"]


def test_answers_and_ids_are_deterministic(client: anthropic.Anthropic) -> None:
    """The same conversation gets the same tool_use id and input; the next turn a new id."""
    one = create(client, messages=ASK, tools=TOOLS)
    two = create(client, messages=ASK, tools=TOOLS)
    assert tool_uses(one)[0].model_dump() == tool_uses(two)[0].model_dump()
    messages = [{"role": "user", "content": "Again [[tool_turns=2]]"}]
    first = create(client, messages=messages, tools=TOOLS)
    later = create(client, messages=[*messages, _assistant(first), _results(first)], tools=TOOLS)
    assert tool_uses(first)[0].id != tool_uses(later)[0].id


def test_rich_schemas_get_valid_inputs(client: anthropic.Anthropic) -> None:
    """Nested objects, arrays, enums, bounds, nullable types and formats all get conforming values."""
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 30},
            "count": {"type": "integer", "maximum": 0},
            "ratio": {"type": "number", "minimum": 0.25, "maximum": 0.75},
            "mode": {"enum": ["fast", "slow"]},
            "when": {"type": "string", "format": "date"},
            "maybe": {"type": ["null", "integer"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "filter": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "values": {"type": "array", "items": {"type": "number"}}},
                "required": ["field", "values"],
            },
            "unused": {"type": "string"},
        },
        "required": ["query", "count", "ratio", "mode", "when", "maybe", "tags", "filter"],
    }
    tool = {"name": "search", "input_schema": schema}
    message = create(client, max_tokens=500, messages=ASK, tools=[tool])
    value: dict[str, Any] = dict(tool_uses(message)[0].input)
    assert conforms(value, schema)
    assert "unused" not in value
    assert len(value["query"]) >= 30
    assert value["when"] == "2026-01-15"
    assert isinstance(value["maybe"], int)
    assert len(value["tags"]) == 2
    assert value["count"] <= 0


def _bounded(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    def schema(low: int, extra: int, which: int) -> dict[str, Any]:
        bounds = [{}, {"minimum": low}, {"maximum": low}, {"minimum": low, "maximum": low + extra}]
        return {"type": kind, **bounds[which]}

    return st.builds(schema, st.integers(-50, 50), st.integers(0, 20), st.integers(0, 3))


def _names(longest: int) -> st.SearchStrategy[str]:
    """Property names (a-z): plain text strategies, much cheaper to draw than from_regex."""
    return st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=longest)


_LEAVES = st.one_of(
    _bounded("integer"),
    _bounded("number"),
    st.builds(
        lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
        st.integers(0, 40),
        st.integers(0, 10),
    ),
    st.just({"type": "boolean"}),
    st.lists(st.text("abc", min_size=1), min_size=1, max_size=3).map(lambda values: {"enum": values}),
)
_SCHEMAS = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.builds(lambda items, n: {"type": "array", "items": items, "minItems": n}, inner, st.integers(0, 3)),
        st.dictionaries(_names(6), inner, min_size=1, max_size=4).map(
            lambda props: {"type": "object", "properties": props, "required": list(props)[::2]}
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(properties=st.dictionaries(_names(8), _SCHEMAS, max_size=5))
def test_fuzzed_schemas_get_conforming_inputs(properties: dict[str, Any]) -> None:
    """Fuzz: any combination of the supported keywords gets an input that satisfies the schema."""
    schema = {"type": "object", "properties": properties, "required": list(properties)}
    body = {"model": MODEL, "max_tokens": 50, "messages": ASK, "tools": [{"name": "fuzz", "input_schema": schema}]}
    (call,) = plan_calls(validate_messages(body))
    assert conforms(call.input, schema)
    assert json.loads(call.json) == call.input


# -- usage -------------------------------------------------------------------------------


def test_usage_adds_up_with_the_hidden_tool_prompt(client: anthropic.Anthropic) -> None:
    """Tools cost their JSON plus the model's hidden tool prompt (286 auto, 406 forced on Opus 5)."""
    plain = create(client, messages=ASK)
    with_tools = create(client, messages=ASK, tools=TOOLS)
    forced = create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "tool", "name": "calculator"})
    definitions = sum(count_tokens(json.dumps(t, sort_keys=True, separators=(",", ":"))) for t in TOOLS)
    model = resolve_model(MODEL)
    assert model is not None
    assert model.tool_prompt == (286, 406)
    assert with_tools.usage.input_tokens == plain.usage.input_tokens + definitions + 286
    assert forced.usage.input_tokens == plain.usage.input_tokens + definitions + 406


def test_tool_blocks_in_the_conversation_are_input(client: anthropic.Anthropic) -> None:
    """A tool_use / tool_result exchange adds the blocks' JSON and role markers to input_tokens."""
    first = create(client, messages=ASK, tools=TOOLS)
    assistant, results = _assistant(first), _results(first)
    messages = [*ASK, assistant, results]
    second = create(client, messages=messages, tools=TOOLS)

    def cost(block: dict[str, Any]) -> int:
        if block["type"] == "text":
            return count_tokens(block["text"])
        return count_tokens(json.dumps(block, sort_keys=True, separators=(",", ":")))

    added = 2 + 2 + sum(cost(b) for b in assistant["content"]) + sum(cost(b) for b in results["content"])
    assert second.usage.input_tokens == first.usage.input_tokens + added
    in_tokens = counted(client, messages=messages, tools=TOOLS)
    assert in_tokens == second.usage.input_tokens


def test_cached_tools_include_the_hidden_prompt(emu: EmulatorHandle) -> None:
    """A cache breakpoint on the last tool writes, then reads, the definitions plus the hidden prompt."""
    tools = [LOOKUP, {**CALC, "cache_control": {"type": "ephemeral"}}]
    with _sdk(emu) as c:
        write = create(c, messages=ASK, tools=tools)
        read = create(c, messages=ASK, tools=tools)
        in_tokens = counted(c, messages=ASK, tools=tools)
    written, cached = write.usage.cache_creation_input_tokens, read.usage.cache_read_input_tokens
    assert written == cached
    assert cached is not None and cached > 286
    assert in_tokens == read.usage.input_tokens + cached


# -- tool_choice -------------------------------------------------------------------------


def test_tool_choice_none_answers_with_text(client: anthropic.Anthropic) -> None:
    """tool_choice none never calls a tool, and still bills the tool definitions."""
    message = create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "none"})
    assert message.stop_reason == "end_turn"
    assert not tool_uses(message)
    assert message.usage.input_tokens > 286


def test_forced_tool_choice_always_calls_that_tool(client: anthropic.Anthropic) -> None:
    """tool_choice tool calls the named tool with no preface, even after a tool result; any calls the first."""
    choice: dict[str, Any] = {"type": "tool", "name": "calculator"}
    first = create(client, messages=ASK, tools=TOOLS, tool_choice=choice)
    assert [b.type for b in first.content] == ["tool_use"]
    assert tool_uses(first)[0].name == "calculator"
    messages = [*ASK, _assistant(first), _results(first)]
    again = create(client, messages=messages, tools=TOOLS, tool_choice=choice)
    assert again.stop_reason == "tool_use"
    any_tool = create(client, messages=ASK, tools=TOOLS, tool_choice={"type": "any"})
    assert [b.name for b in tool_uses(any_tool)] == ["lookup"]


# -- validation --------------------------------------------------------------------------

_USE = {"type": "tool_use", "id": "toolu_01abc", "name": "lookup", "input": {"term": "x", "limit": 2}}
_RESULT = {"type": "tool_result", "tool_use_id": "toolu_01abc", "content": "42"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tools": [{"input_schema": {"type": "object"}}]}, "tools.0.custom.name: Field required"),
        ({"tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "tools.0.custom.name: String should"),
        ({"tools": [{"name": "x" * 65, "input_schema": {"type": "object"}}]}, "^[a-zA-Z0-9_-]{1,64}$"),
        ({"tools": [{"name": "lookup"}]}, "tools.0.custom.input_schema: Field required"),
        ({"tools": [{"name": "t", "input_schema": {"type": "string"}}]}, "input_schema.type: Input should be 'object'"),
        ({"tools": [{"name": "t", "input_schema": []}]}, "input_schema: Input should be a valid dictionary"),
        ({"tools": [LOOKUP, LOOKUP]}, "Tool names must be unique"),
        ({"tools": {"name": "t"}}, "tools: Input should be a valid list"),
        ({"tool_choice": {"type": "sometimes"}}, "does not match any of the expected tags"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.tool.name: Field required"),
        ({"tool_choice": {"type": "tool", "name": "nope"}}, "Tool 'nope' not found"),
        ({"tool_choice": {"type": "auto", "disable_parallel_tool_use": "yes"}}, "valid boolean"),
        ({"tools": None, "tool_choice": {"type": "any"}}, "tool_choice may only be specified while providing tools"),
        ({"model": "claude-opus-5-5", "tool_choice": {"type": "any"}}, "forced tool use (type 'any') is not supported"),
        ({"max_tokens": 0, "tool_choice": {"type": "any"}}, "cannot be used with a forced tool_choice"),
        (
            {"messages": [*ASK, {"role": "assistant", "content": "Sure"}, {"role": "user", "content": [_RESULT]}]},
            "unexpected `tool_use_id` found in `tool_result` blocks: toolu_01abc",
        ),
        (
            {"messages": [*ASK, {"role": "assistant", "content": [_USE]}, {"role": "user", "content": "hm"}]},
            "messages.1: `tool_use` ids were found without `tool_result` blocks immediately after: toolu_01abc",
        ),
        (
            {
                "messages": [
                    *ASK,
                    {"role": "assistant", "content": [_USE, _USE]},
                    {"role": "user", "content": [_RESULT]},
                ]
            },
            "`tool_use` ids must be unique",
        ),
        (
            {
                "messages": [
                    *ASK,
                    {"role": "assistant", "content": [_USE]},
                    {"role": "user", "content": [{"type": "text", "text": "here"}, _RESULT]},
                ]
            },
            "`tool_result` blocks must come first",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "tool_use", "id": "toolu_x", "name": "t", "input": {}}]}
                ]
            },
            "`tool_use` blocks are not allowed in user messages",
        ),
        (
            {"messages": [*ASK, {"role": "assistant", "content": [{**_USE, "input": "x"}]}]},
            "messages.1.content.0.input: Input should be a valid dictionary",
        ),
        (
            {"messages": [{"role": "user", "content": "go [[tool=nothing]]"}]},
            "names 'nothing', which is not a custom tool",
        ),
        ({"messages": [{"role": "user", "content": "go [[tool_turns=-1]]"}]}, "[[tool_turns=-1]]"),
        ({"messages": [{"role": "user", "content": "go [[tool=a,,b]]"}]}, "[[tool=a,,b]]"),
    ],
)
def test_invalid_tool_requests_are_400(emu: EmulatorHandle, change: dict[str, Any], message: str) -> None:
    """Malformed tools, tool_choice and tool_use/tool_result pairs get a 400 invalid_request_error."""
    body: dict[str, Any] = {"model": MODEL, "max_tokens": 100, "messages": ASK, "tools": TOOLS}
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}
    response = _post(emu.url_for(), body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert message in error["message"]


def test_count_tokens_validates_tools_too(client: anthropic.Anthropic) -> None:
    """count_tokens rejects a bad tool like /v1/messages does."""
    with pytest.raises(anthropic.BadRequestError, match="Tool names must be unique"):
        counted(client, messages=ASK, tools=[LOOKUP, LOOKUP])


# -- stops and faults --------------------------------------------------------------------


def test_small_max_tokens_cuts_the_tool_input(client: anthropic.Anthropic) -> None:
    """max_tokens inside the input JSON: stop_reason max_tokens, exactly max_tokens out, complete keys only."""
    full = create(client, messages=ASK, tools=TOOLS)
    limit = full.usage.output_tokens - 2
    cut = create(client, max_tokens=limit, messages=ASK, tools=TOOLS)
    assert (cut.stop_reason, cut.usage.output_tokens) == ("max_tokens", limit)
    (call,) = tool_uses(cut)
    assert call.id == tool_uses(full)[0].id
    assert call.input == {"term": tool_uses(full)[0].input["term"]}
    with client.messages.stream(**params(max_tokens=limit, messages=ASK, tools=TOOLS)) as stream:
        streamed = stream.get_final_message()
    assert (streamed.stop_reason, streamed.usage.output_tokens) == ("max_tokens", limit)
    tiny = create(client, max_tokens=4, messages=ASK, tools=TOOLS)
    assert (tiny.stop_reason, tiny.usage.output_tokens, tool_uses(tiny)) == ("max_tokens", 4, [])


def test_max_tokens_fault_runs_the_tool_input_on(emu: EmulatorHandle) -> None:
    """The max_tokens fault fills max_tokens inside the tool input, streamed and not."""
    with _sdk(emu, "max_tokens", "max_tokens") as c:
        plain = create(c, max_tokens=120, messages=ASK, tools=TOOLS)
        with c.messages.stream(**params(max_tokens=120, messages=ASK, tools=TOOLS)) as stream:
            streamed = stream.get_final_message()
    for message in (plain, streamed):
        assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", 120)
        assert [b.type for b in message.content] == ["text", "tool_use"]


def test_drop_mid_tool_input(emu: EmulatorHandle) -> None:
    """drop;after=3 closes the stream after the first input_json_delta: the SDK raises mid-tool-input."""
    seen: list[str] = []
    with (  # noqa: PT012
        _sdk(emu, "drop;after=3") as c,
        pytest.raises((httpx2.RemoteProtocolError, anthropic.APIConnectionError)) as raised,
        c.messages.stream(**params(messages=ASK, tools=TOOLS)) as stream,
    ):
        for event in stream:
            if event.type == "content_block_delta":
                seen.append(event.delta.type)
    assert type(transport_error(raised.value)) is httpx2.RemoteProtocolError
    assert seen == ["text_delta", "text_delta", "input_json_delta"]


def test_error_event_and_stop_sequence_with_tools(emu: EmulatorHandle) -> None:
    """An in-band error after the first input delta raises; a stop sequence in the preface ends before the call."""
    with _sdk(emu, "error_event;after=3", "ok") as c:
        with (
            pytest.raises(anthropic.APIStatusError, match="Overloaded"),
            c.messages.stream(**params(messages=ASK, tools=TOOLS)) as stream,
        ):
            stream.get_final_message()
        stopped = create(c, messages=ASK, tools=TOOLS, stop_sequences=["lookup"])
    assert (stopped.stop_reason, stopped.stop_sequence, text_of(stopped)) == (
        "stop_sequence",
        "lookup",
        "I'll use the ",
    )
    assert not tool_uses(stopped)


def test_canny_client_assembles_tool_input(emu: EmulatorHandle) -> None:
    """canny's own client (always streaming) returns the tool_use block with its parsed input."""
    from canny import Client

    with Client(api_key=KEY, base_url=emu.url_for(), ledger=False, model=MODEL, max_tokens=300) as client:
        result = client.create(ASK, tools=TOOLS)
    assert result.stop_reason == "tool_use"
    blocks = [b for b in result.message["content"] if b["type"] == "tool_use"]
    assert len(blocks) == 1
    assert conforms(blocks[0]["input"], LOOKUP["input_schema"])
    assert result.usage.output > 0
