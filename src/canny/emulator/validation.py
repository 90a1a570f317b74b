"""Request validation for ``/v1/messages`` and ``/v1/messages/count_tokens``.

Mirrors the API's checks closely enough that a client's request bugs show up offline:
400 ``invalid_request_error`` with the API's ``field: message`` wording (one error per
response, as the API does), and 404 ``not_found_error`` ``model: X`` for an unknown or
retired model. Behaviour follows API version ``2026-10-21``: ``temperature``, ``top_p``
and ``top_k`` are rejected, and models from the 4.6 generation on reject a final
assistant message (prefill). Consecutive messages with the same role are accepted: the
API merges them into one turn.

Tool use: each tool needs a ``name`` (``^[a-zA-Z0-9_-]{1,64}$``, unique) and, for custom
tools, an ``input_schema`` object of ``type`` ``object``; ``tool_choice`` is one of
``auto``, ``any``, ``tool`` (naming a tool) or ``none``, and models that reject forced
tool use answer ``any``/``tool`` with a 400. Every ``tool_result`` must answer a
``tool_use`` of the assistant turn just before it, and every ``tool_use`` that has a next
turn must be answered there, with the API's wording.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canny.emulator.models import ModelInfo, resolve_model

__all__ = [
    "TOOL_NAME",
    "ApiError",
    "MessagesRequest",
    "Turn",
    "content_blocks",
    "conversation_turns",
    "validate_messages",
]

_REMOVED_SAMPLING = ("temperature", "top_p", "top_k")
_ROLES = ("user", "assistant")
_TTLS = ("5m", "1h")
#: The API's pattern for tool names.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+\Z")
_CHOICES = ("auto", "any", "tool", "none")


class ApiError(Exception):
    """An error the emulator answers with the API's error body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated Messages (or count_tokens) request: the parts the emulator uses."""

    model: ModelInfo
    messages: tuple[Mapping[str, Any], ...]
    max_tokens: int = 0
    stream: bool = False
    system: str | Sequence[Mapping[str, Any]] | None = None
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: Mapping[str, Any] | None = None
    stop_sequences: tuple[str, ...] = ()
    cache_control: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def last_user_text(self) -> str:
        """The text of the last user message (the answer depends on it alone); when it
        holds only ``tool_result`` blocks, the text of those results."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                content = message["content"]
                return content_text(content) or content_text(_result_texts(content_blocks(content)))
        return ""


def content_text(content: str | Sequence[Mapping[str, Any]]) -> str:
    """The text blocks of a message's content, joined by newlines."""
    if isinstance(content, str):
        return content
    return "\n".join(str(block.get("text", "")) for block in content if block.get("type") == "text")


def content_blocks(content: str | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A message's content as a list of blocks (a string is one text block)."""
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _result_texts(blocks: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The text inside the ``tool_result`` blocks, as text blocks."""
    texts: list[Mapping[str, Any]] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            inner = block.get("content", "")
            if isinstance(inner, str | list):
                texts += [b for b in content_blocks(inner) if b.get("type") == "text"]
    return texts


@dataclass(frozen=True, slots=True)
class Turn:
    """Consecutive messages of one role, merged as the API merges them; ``blocks`` are
    ``(message index, block index, block)``."""

    role: str
    first: int
    blocks: tuple[tuple[int, int, Mapping[str, Any]], ...]

    def of_type(self, kind: str) -> list[tuple[int, int, Mapping[str, Any]]]:
        """The blocks of one ``type``, with their positions."""
        return [entry for entry in self.blocks if entry[2].get("type") == kind]


def conversation_turns(messages: Sequence[Mapping[str, Any]]) -> list[Turn]:
    """The conversation as turns (consecutive same-role messages merged)."""
    turns: list[Turn] = []
    for i, message in enumerate(messages):
        blocks = tuple((i, j, block) for j, block in enumerate(content_blocks(message["content"])))
        if turns and turns[-1].role == message["role"]:
            last = turns[-1]
            turns[-1] = Turn(last.role, last.first, last.blocks + blocks)
        else:
            turns.append(Turn(str(message["role"]), i, blocks))
    return turns


def validate_messages(body: object, *, count_only: bool = False) -> MessagesRequest:
    """Check a request body; return its parsed form or raise :class:`ApiError`."""
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    for name in _REMOVED_SAMPLING:
        if name in body:
            raise _invalid(f"{name}: Extra inputs are not permitted")
    model_id = _model_id(body)
    max_tokens = 0 if count_only else _max_tokens(body)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream: Input should be a valid boolean")
    if stream and max_tokens == 0 and not count_only:
        raise _invalid("max_tokens: Input should be greater than or equal to 1 when streaming")
    messages = _messages(body)
    system = _system(body.get("system"))
    tools = _tools(body.get("tools", []))
    stop_sequences = body.get("stop_sequences", [])
    if not isinstance(stop_sequences, list) or not all(isinstance(s, str) for s in stop_sequences):
        raise _invalid("stop_sequences: Input should be a valid list of strings")
    if any(not s.strip() for s in stop_sequences):
        raise _invalid("stop_sequences: each stop sequence must contain non-whitespace")
    cache_control = body.get("cache_control")
    if cache_control is not None:
        check_cache_control(cache_control, "cache_control")
    model = resolve_model(model_id)
    if model is None or model.lifecycle == "retired":
        raise ApiError(404, "not_found_error", f"model: {model_id}")
    if max_tokens > model.max_tokens:
        raise _invalid(
            f"max_tokens: {max_tokens} > {model.max_tokens}, which is the maximum allowed number of "
            f"output tokens for {model.id}"
        )
    if messages[-1]["role"] == "assistant" and not model.prefill and not count_only:
        raise _invalid(
            "This model does not support assistant message prefill. The conversation must end with a user message."
        )
    tool_choice = _tool_choice(body.get("tool_choice"), tools, model)
    if tool_choice is not None and tool_choice["type"] in ("any", "tool") and max_tokens == 0 and not count_only:
        raise _invalid("max_tokens: 0 (a cache pre-warm) cannot be used with a forced tool_choice")
    _check_tool_pairs(messages)
    return MessagesRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=stream,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        stop_sequences=tuple(stop_sequences),
        cache_control=cache_control,
        raw=body,
    )


def check_cache_control(value: object, where: str) -> str:
    """Validate a ``cache_control`` object; return its TTL (``"5m"`` or ``"1h"``)."""
    if not isinstance(value, dict) or value.get("type") != "ephemeral":
        raise _invalid(f"{where}.type: Input should be 'ephemeral'")
    ttl = value.get("ttl", "5m")
    if ttl not in _TTLS:
        raise _invalid(f"{where}.ttl: Input should be '5m' or '1h'")
    assert isinstance(ttl, str)
    return ttl


def _model_id(body: Mapping[str, Any]) -> str:
    if "model" not in body:
        raise _invalid("model: Field required")
    model = body["model"]
    if not isinstance(model, str):
        raise _invalid("model: Input should be a valid string")
    if not model:
        raise _invalid("model: String should have at least 1 character")
    return model


def _max_tokens(body: Mapping[str, Any]) -> int:
    if "max_tokens" not in body:
        raise _invalid("max_tokens: Field required")
    value = body["max_tokens"]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid("max_tokens: Input should be a valid integer")
    if value < 0:
        raise _invalid("max_tokens: Input should be greater than or equal to 0")
    return value


def _messages(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    if "messages" not in body:
        raise _invalid("messages: Field required")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _invalid("messages: Input should be a valid list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _invalid(f"{where}: Input should be a valid dictionary")
        role = message.get("role")
        if role is None:
            raise _invalid(f"{where}.role: Field required")
        if role not in _ROLES:
            raise _invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            raise _invalid(f"{where}.content: Field required")
        _content(
            message["content"], f"{where}.content", final_assistant=(i == len(messages) - 1 and role == "assistant")
        )
    if messages[0]["role"] != "user":
        raise _invalid('messages: first message must use the "user" role')
    return tuple(messages)


def _content(content: object, where: str, *, final_assistant: bool = False) -> None:
    if isinstance(content, str):
        if not content and not final_assistant:
            raise _invalid(f"{where}: text content blocks must be non-empty")
        return
    if not isinstance(content, list):
        raise _invalid(f"{where}: Input should be a valid string or list of content blocks")
    if not content and not final_assistant:
        raise _invalid(f"{where}: at least one content block is required")
    for j, block in enumerate(content):
        _block(block, f"{where}.{j}", final_assistant=final_assistant)


def _block(block: object, where: str, *, final_assistant: bool = False) -> None:
    if not isinstance(block, dict):
        raise _invalid(f"{where}: Input should be a valid dictionary")
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type: Field required")
    if kind == "text":
        text = block.get("text")
        if not isinstance(text, str):
            raise _invalid(f"{where}.text: Field required")
        if not text and not final_assistant:
            raise _invalid(f"{where}: text content blocks must be non-empty")
    elif kind == "tool_use":
        _tool_use_block(block, where)
    elif kind == "tool_result":
        _tool_result_block(block, where)
    if "cache_control" in block and block["cache_control"] is not None:
        check_cache_control(block["cache_control"], f"{where}.cache_control")


def _system(system: object) -> str | list[dict[str, Any]] | None:
    if system is None or isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise _invalid("system: Input should be a valid string or list of text blocks")
    for j, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{j}.type: Input should be 'text'")
        _block(block, f"system.{j}")
    return system


def _tools(tools: object) -> list[dict[str, Any]]:
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise _invalid(f"tools.{i}: Input should be a valid dictionary")
        custom = tool.get("type", "custom") in ("custom", None)
        where = f"tools.{i}.custom" if custom else f"tools.{i}"
        name = tool.get("name")
        if name is None:
            raise _invalid(f"{where}.name: Field required")
        if not isinstance(name, str) or not TOOL_NAME.match(name):
            raise _invalid(f"{where}.name: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if name in seen:
            raise _invalid("tools: Tool names must be unique.")
        seen.add(name)
        if not custom:
            continue
        if "description" in tool and not isinstance(tool["description"], str):
            raise _invalid(f"{where}.description: Input should be a valid string")
        if "input_schema" not in tool:
            raise _invalid(f"{where}.input_schema: Field required")
        schema = tool["input_schema"]
        if not isinstance(schema, dict):
            raise _invalid(f"{where}.input_schema: Input should be a valid dictionary")
        if schema.get("type") != "object":
            raise _invalid(f"{where}.input_schema.type: Input should be 'object'")
        if not isinstance(schema.get("properties", {}), dict):
            raise _invalid(f"{where}.input_schema.properties: Input should be a valid dictionary")
    return tools


def _tool_choice(choice: object, tools: Sequence[Mapping[str, Any]], model: ModelInfo) -> dict[str, Any] | None:
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise _invalid("tool_choice: Input should be a valid dictionary")
    kind = choice.get("type")
    if kind not in _CHOICES:
        expected = ", ".join(f"'{c}'" for c in _CHOICES)
        raise _invalid(
            f"tool_choice: Input tag {kind!r} found using 'type' does not match any of the expected tags: {expected}"
        )
    parallel = choice.get("disable_parallel_tool_use")
    if parallel is not None and not isinstance(parallel, bool):
        raise _invalid(f"tool_choice.{kind}.disable_parallel_tool_use: Input should be a valid boolean")
    if kind == "tool":
        name = choice.get("name")
        if name is None:
            raise _invalid("tool_choice.tool.name: Field required")
        if not isinstance(name, str):
            raise _invalid("tool_choice.tool.name: Input should be a valid string")
    if kind in ("any", "tool"):
        if not tools:
            raise _invalid("tool_choice may only be specified while providing tools.")
        if kind == "tool" and choice["name"] not in {t["name"] for t in tools}:
            raise _invalid(f"tool_choice.tool.name: Tool '{choice['name']}' not found in the provided tools")
        if not model.forced_tools:
            raise _invalid(
                f"tool_choice: forced tool use (type '{kind}') is not supported by {model.id}; "
                "use tool_choice type 'auto' or 'none'"
            )
    return choice


def _tool_use_block(block: Mapping[str, Any], where: str) -> None:
    for key in ("id", "name", "input"):
        if key not in block:
            raise _invalid(f"{where}.{key}: Field required")
    if not isinstance(block["id"], str) or not _TOOL_ID.match(block["id"]):
        raise _invalid(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    if not isinstance(block["name"], str) or not block["name"]:
        raise _invalid(f"{where}.name: Input should be a valid string")
    if not isinstance(block["input"], dict):
        raise _invalid(f"{where}.input: Input should be a valid dictionary")


def _tool_result_block(block: Mapping[str, Any], where: str) -> None:
    if "tool_use_id" not in block:
        raise _invalid(f"{where}.tool_use_id: Field required")
    if not isinstance(block["tool_use_id"], str) or not _TOOL_ID.match(block["tool_use_id"]):
        raise _invalid(f"{where}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    content = block.get("content", "")
    if isinstance(content, list):
        for k, inner in enumerate(content):
            if not isinstance(inner, dict) or not isinstance(inner.get("type"), str):
                raise _invalid(f"{where}.content.{k}.type: Field required")
            if inner["type"] in ("tool_use", "tool_result"):
                raise _invalid(f"{where}.content.{k}.type: Input should be a text, image or document block")
            _block(inner, f"{where}.content.{k}")
    elif not isinstance(content, str):
        raise _invalid(f"{where}.content: Input should be a valid string or list of content blocks")
    if "is_error" in block and not isinstance(block["is_error"], bool):
        raise _invalid(f"{where}.is_error: Input should be a valid boolean")


def _check_tool_pairs(messages: Sequence[Mapping[str, Any]]) -> None:
    """Each tool_result answers a tool_use of the turn before; each tool_use is answered."""
    turns = conversation_turns(messages)
    for t, turn in enumerate(turns):
        wrong = "tool_result" if turn.role == "assistant" else "tool_use"
        misplaced = turn.of_type(wrong)
        if misplaced:
            i, j, _ = misplaced[0]
            raise _invalid(f"messages.{i}.content.{j}: `{wrong}` blocks are not allowed in {turn.role} messages")
        if turn.role == "assistant":
            uses = [str(block["id"]) for _, _, block in turn.of_type("tool_use")]
            if len(set(uses)) < len(uses):
                raise _invalid(f"messages.{turn.first}: `tool_use` ids must be unique")
            if t + 1 < len(turns):
                answered = {str(block["tool_use_id"]) for _, _, block in turns[t + 1].of_type("tool_result")}
                missing = [u for u in uses if u not in answered]
                if missing:
                    i = max(i for i, _, block in turn.of_type("tool_use") if block["id"] in missing)
                    raise _invalid(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: "
                        f"{', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` "
                        "block in the next message."
                    )
            continue
        _results_first(turn)
        before = {str(b["id"]) for _, _, b in turns[t - 1].of_type("tool_use")} if t > 0 else set()
        for i, j, block in turn.of_type("tool_result"):
            if block["tool_use_id"] not in before:
                raise _invalid(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block['tool_use_id']}. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )


def _results_first(turn: Turn) -> None:
    """In a user turn, ``tool_result`` blocks come before any other block (the API's rule)."""
    other: tuple[int, int] | None = None
    for i, j, block in turn.blocks:
        if block.get("type") != "tool_result":
            other = other or (i, j)
        elif other is not None:
            raise _invalid(
                f"messages.{i}.content.{j}: `tool_result` blocks must come first in the user turn, before any "
                f"other content (found messages.{other[0]}.content.{other[1]} before it)"
            )
