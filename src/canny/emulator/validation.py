"""Request validation for ``/v1/messages`` and ``/v1/messages/count_tokens``.

Mirrors the API's checks closely enough that a client's request bugs show up offline:
400 ``invalid_request_error`` with the API's ``field: message`` wording (one error per
response, as the API does), and 404 ``not_found_error`` ``model: X`` for an unknown or
retired model. Consecutive messages with the same role are accepted: the API merges them
into one turn.

Versions (the ``anthropic-version`` header, :func:`check_version`): a request without it
is a 400 ``anthropic-version: header is required``; an unknown value is a 400
``anthropic-version: "X" is not a valid version``. Under ``2026-10-21`` ``temperature``,
``top_p`` and ``top_k`` are removed ("Extra inputs are not permitted"). Under
``2023-06-01`` (and ``2023-01-01``) they are accepted by the models before Opus 4.7, within
their ranges and not ``temperature`` with ``top_p``; Opus 4.7, 4.8 and the 5.x models
answer "`temperature` is deprecated for this model.".

Strictness: every top-level field is in :data:`MESSAGE_FIELDS` (count_tokens:
:data:`COUNT_TOKENS_FIELDS`), every content block's ``type`` in :data:`BLOCK_FIELDS` and its
keys among that type's fields; anything else is the API's "Extra inputs are not permitted"
or "Input tag 'X' found using 'type' does not match any of the expected tags: ...".

Tool use: each tool needs a ``name`` (``^[a-zA-Z0-9_-]{1,64}$``, unique) and, for custom
tools, an ``input_schema`` object of ``type`` ``object``; ``tool_choice`` is one of
``auto``, ``any``, ``tool`` (naming a tool) or ``none``, and models that reject forced
tool use answer ``any``/``tool`` with a 400. Every ``tool_result`` must answer a
``tool_use`` of the assistant turn just before it, and every ``tool_use`` that has a next
turn must be answered there, with the API's wording.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canny.emulator.fields import ApiError, only, optional, required, typed
from canny.emulator.fields import invalid as _invalid
from canny.emulator.models import ModelInfo, resolve_model

__all__ = [
    "API_VERSIONS",
    "BLOCK_FIELDS",
    "COUNT_TOKENS_FIELDS",
    "LATEST_VERSION",
    "MESSAGE_FIELDS",
    "TOOL_NAME",
    "TOOL_TYPES",
    "ApiError",
    "MessagesRequest",
    "Turn",
    "check_version",
    "content_blocks",
    "conversation_turns",
    "validate_messages",
]

#: The ``anthropic-version`` values the API accepts, and the one the SDK 2.x sends.
API_VERSIONS = ("2023-01-01", "2023-06-01", "2026-10-21")
LATEST_VERSION = "2026-10-21"

#: Every top-level field of a Messages request the emulator accepts, and the shape it
#: checks (the SDK's ``MessageCreateParams`` and beta ``MessageCreateParams``; canny's own
#: requests use a subset). Anything else: "NAME: Extra inputs are not permitted".
MESSAGE_FIELDS: Mapping[str, str] = {
    "model": "string, required: a known, not retired model id or alias",
    "messages": "list of {role, content}, required",
    "max_tokens": "integer >= 0, required (0: cache pre-warm, not when streaming)",
    "stream": "boolean",
    "system": "string or list of text blocks",
    "metadata": "object: user_id (string or null)",
    "stop_sequences": "list of strings with non-whitespace",
    "temperature": "number 0-1; anthropic-version 2023-06-01 only, models before Opus 4.7",
    "top_p": "number 0-1; as temperature, and not together with it",
    "top_k": "integer >= 0; as temperature",
    "tools": "list of custom tools (name, input_schema, ...) or typed tools (TOOL_TYPES)",
    "tool_choice": "object: type auto, any, tool (name) or none",
    "thinking": "object: type enabled (budget_tokens), adaptive or disabled",
    "cache_control": "object: type ephemeral, ttl 5m or 1h (automatic caching)",
    "output_config": "object: effort, format ({type: json_schema, schema}), task_budget",
    "output_format": "object: {type: json_schema, schema} (the older structured-outputs beta)",
    "thread": "object: {type: create} or {type: continue, previous_message_id} (threads beta)",
    "container": "string id, object or null (code execution container)",
    "context_management": "object (context editing beta)",
    "compaction": "object or null (compaction beta)",
    "mcp_servers": "list of objects (MCP connector beta)",
    "service_tier": "auto or standard_only",
    "inference_geo": "string or null (global, us)",
    "speed": "standard, fast or null",
    "diagnostics": "object or null",
    "fallbacks": "list or string or null (server-side fallback beta)",
    "fallback_credit_token": "object or null (fallback credit beta)",
    "billing_policy": "object or null",
}
#: The fields ``/v1/messages/count_tokens`` accepts (no ``max_tokens``, sampling or stream).
COUNT_TOKENS_FIELDS = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "cache_control",
        "output_config",
        "output_format",
        "thread",
        "context_management",
        "compaction",
        "mcp_servers",
        "speed",
        "billing_policy",
    }
)
_SAMPLING = ("temperature", "top_p", "top_k")
_OLD_VERSION_ONLY = frozenset(_SAMPLING)

_TOOL_RESULT_FIELDS = ("tool_use_id", "content", "cache_control", "caller")
#: Content block types and their fields (the SDK's beta ``ContentBlockParam`` union).
BLOCK_FIELDS: Mapping[str, frozenset[str]] = {
    name: frozenset({"type", *fields})
    for name, fields in {
        "text": ("text", "cache_control", "citations"),
        "image": ("source", "cache_control", "transformations"),
        "document": ("source", "cache_control", "citations", "context", "title"),
        "search_result": ("content", "source", "title", "cache_control", "citations"),
        "thinking": ("thinking", "signature"),
        "redacted_thinking": ("data",),
        "tool_use": ("id", "name", "input", "cache_control", "caller", "toolset_name"),
        "tool_result": ("tool_use_id", "content", "is_error", "cache_control", "toolset_name"),
        "server_tool_use": ("id", "name", "input", "cache_control", "caller"),
        "web_search_tool_result": _TOOL_RESULT_FIELDS,
        "web_fetch_tool_result": _TOOL_RESULT_FIELDS,
        "code_execution_tool_result": _TOOL_RESULT_FIELDS[:3],
        "bash_code_execution_tool_result": _TOOL_RESULT_FIELDS[:3],
        "text_editor_code_execution_tool_result": _TOOL_RESULT_FIELDS[:3],
        "tool_search_tool_result": _TOOL_RESULT_FIELDS[:3],
        "advisor_tool_result": _TOOL_RESULT_FIELDS[:3],
        "container_upload": ("file_id", "cache_control"),
        "mcp_tool_use": ("id", "name", "input", "server_name", "cache_control"),
        "mcp_tool_result": ("tool_use_id", "content", "is_error", "cache_control"),
        "mcp_tool_listing": ("mcp_server_name", "tools"),
        "compaction": ("content", "encrypted_content", "signature", "tool_changes", "block", "cache_control"),
        "fallback": ("to", "trigger"),
        "tool_addition": ("tool", "cache_control"),
        "tool_reference": ("tool_name", "cache_control"),
        "tool_removal": ("tool", "cache_control"),
    }.items()
}
#: Typed (non-custom) tool ``type`` values (the SDK's beta ``ToolUnionParam``).
TOOL_TYPES = frozenset(
    {
        "advisor_20260301",
        "bash_20241022",
        "bash_20250124",
        "browser_toolset_20260801",
        "code_execution_20250522",
        "code_execution_20250825",
        "code_execution_20260120",
        "code_execution_20260521",
        "computer_20241022",
        "computer_20250124",
        "computer_20251124",
        "computer_toolset_20260801",
        "mcp_toolset",
        "memory_20250818",
        "text_editor_20241022",
        "text_editor_20250124",
        "text_editor_20250429",
        "text_editor_20250728",
        "tool_search_tool_bm25",
        "tool_search_tool_bm25_20251119",
        "tool_search_tool_regex",
        "tool_search_tool_regex_20251119",
        "web_fetch_20250910",
        "web_fetch_20260209",
        "web_fetch_20260309",
        "web_fetch_20260318",
        "web_search_20250305",
        "web_search_20260209",
        "web_search_20260318",
    }
)
_CUSTOM_TOOL_FIELDS = frozenset(
    {
        "type",
        "name",
        "description",
        "input_schema",
        "cache_control",
        "strict",
        "input_examples",
        "defer_loading",
        "allowed_callers",
        "eager_input_streaming",
    }
)
_MESSAGE_KEYS = frozenset({"role", "content"})
_THINKING = ("adaptive", "disabled", "enabled")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_OUTPUT_CONFIG = frozenset({"effort", "format", "task_budget"})
_ROLES = ("user", "assistant")
_TTLS = ("5m", "1h")
#: The API's pattern for tool names.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+\Z")
_CHOICES = ("auto", "any", "tool", "none")
#: The smallest ``thinking.budget_tokens`` the API takes.
MIN_THINKING_BUDGET = 1024


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


def check_version(value: str | None) -> str:
    """The request's ``anthropic-version``; a 400 when missing or unknown (the API's texts)."""
    if value is None:
        raise _invalid("anthropic-version: header is required")
    if value not in API_VERSIONS:
        raise _invalid(f'anthropic-version: "{value}" is not a valid version')
    return value


def validate_messages(body: object, *, count_only: bool = False, version: str = LATEST_VERSION) -> MessagesRequest:
    """Check a request body under API ``version``; return its parsed form or raise :class:`ApiError`."""
    if not isinstance(body, dict):
        raise _invalid("Request body must be a JSON object")
    allowed = COUNT_TOKENS_FIELDS if count_only else MESSAGE_FIELDS
    for name in body:
        if name not in allowed or (name in _OLD_VERSION_ONLY and version == LATEST_VERSION):
            raise _invalid(f"{name}: Extra inputs are not permitted")
    model_id = _model_id(body)
    max_tokens = 0 if count_only else _max_tokens(body)
    stream = typed(body.get("stream", False), "boolean", "stream")
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
    _check_options(body)
    model = resolve_model(model_id)
    if model is None or model.lifecycle == "retired":
        raise ApiError(404, "not_found_error", f"model: {model_id}")
    _check_sampling(body, model)
    _check_effort(body, model)
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


def check_context_window(request: MessagesRequest, input_tokens: int) -> None:
    """A 400 when the prompt alone is over the model's context window (every model)."""
    limit = request.model.max_input_tokens
    if input_tokens > limit:
        raise _invalid(f"prompt is too long: {input_tokens} tokens > {limit} maximum")


def _check_sampling(body: Mapping[str, Any], model: ModelInfo) -> None:
    """``temperature``/``top_p``/``top_k`` under API version 2023-06-01."""
    given = [name for name in _SAMPLING if name in body and body[name] is not None]
    if not given:
        return
    if not model.sampling:
        raise _invalid(f"`{given[0]}` is deprecated for this model.")
    for name in given:
        value = body[name]
        typed(value, "integer" if name == "top_k" else "number", name)
        if value < 0:
            raise _invalid(f"{name}: Input should be greater than or equal to 0")
        if value > 1 and name != "top_k":
            raise _invalid(f"{name}: Input should be less than or equal to 1")
    if "temperature" in given and "top_p" in given:
        raise _invalid("`temperature` and `top_p` cannot both be specified for this model. Please use only one.")


def _check_effort(body: Mapping[str, Any], model: ModelInfo) -> None:
    """An effort level the model does not offer (recorded wording; the levels sorted)."""
    config = body.get("output_config")
    effort = config.get("effort") if isinstance(config, dict) else None
    if effort is None:
        return
    levels = model.capabilities()["effort"]
    if levels["supported"] and not levels[effort]["supported"]:
        offered = sorted(name for name in _EFFORTS if levels[name]["supported"])
        raise _invalid(f"This model does not support effort level '{effort}'. Supported levels: {', '.join(offered)}.")


def _check_options(body: Mapping[str, Any]) -> None:
    """The shapes of the optional objects (their semantics live elsewhere or nowhere)."""
    metadata = optional(body, "metadata", "dictionary")
    if metadata is not None:
        only(metadata, frozenset({"user_id"}), "metadata")
        optional(metadata, "user_id", "string", "metadata")
    thinking = optional(body, "thinking", "dictionary")
    if thinking is not None:
        kind = thinking.get("type")
        if kind not in _THINKING:
            raise _invalid(_tag_error("thinking", kind, _THINKING))
        if kind == "enabled":
            budget = required(thinking, "budget_tokens", "integer", "thinking.enabled")
            if budget < MIN_THINKING_BUDGET:
                raise _invalid(
                    f"thinking.enabled.budget_tokens: Input should be greater than or equal to {MIN_THINKING_BUDGET}"
                )
    output_config = optional(body, "output_config", "dictionary")
    if output_config is not None:
        only(output_config, _OUTPUT_CONFIG, "output_config")
        effort = output_config.get("effort")
        if effort is not None and effort not in _EFFORTS:
            choices = ", ".join(f"'{e}'" for e in _EFFORTS[:-1]) + f" or '{_EFFORTS[-1]}'"
            raise _invalid(f"output_config.effort: Input should be {choices}")
        if output_config.get("format") is not None:
            _json_format(output_config["format"], "output_config.format")
    if body.get("output_format") is not None:
        _json_format(body["output_format"], "output_format")
    thread = optional(body, "thread", "dictionary")
    if thread is not None and thread.get("type") not in ("create", "continue"):
        raise _invalid(_tag_error("thread", thread.get("type"), ("continue", "create")))
    tier = body.get("service_tier")
    if tier is not None and tier not in ("auto", "standard_only"):
        raise _invalid("service_tier: Input should be 'auto' or 'standard_only'")
    speed = body.get("speed")
    if speed is not None and speed not in ("standard", "fast"):
        raise _invalid("speed: Input should be 'standard' or 'fast'")
    optional(body, "inference_geo", "string")
    servers = body.get("mcp_servers")
    if servers is not None and (not isinstance(servers, list) or not all(isinstance(s, dict) for s in servers)):
        raise _invalid("mcp_servers: Input should be a valid list")
    for name in ("context_management", "diagnostics", "compaction", "fallback_credit_token", "billing_policy"):
        optional(body, name, "dictionary")
    container = body.get("container")
    if container is not None and not isinstance(container, str | dict):
        raise _invalid("container: Input should be a valid string")


def _json_format(raw: object, where: str) -> None:
    value: dict[str, Any] = typed(raw, "dictionary", where)
    if value.get("type") != "json_schema":  # one format, not a tagged union: a literal's wording
        raise _invalid(f"{where}.type: Input should be 'json_schema'")
    only(value, frozenset({"type", "schema"}), where)
    required(value, "schema", "dictionary", where)


def _tag_error(where: str, tag: object, expected: Iterable[str]) -> str:
    """The API's text for a ``type`` outside a tagged union (expected tags sorted)."""
    tags = ", ".join(f"'{t}'" for t in sorted(expected))
    shown = repr(tag) if isinstance(tag, str) else repr(str(tag))
    return f"{where}: Input tag {shown} found using 'type' does not match any of the expected tags: {tags}"


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
    model: str = required(body, "model", "string")
    if not model:
        raise _invalid("model: String should have at least 1 character")
    return model


def _max_tokens(body: Mapping[str, Any]) -> int:
    value: int = required(body, "max_tokens", "integer")
    if value < 0:
        raise _invalid("max_tokens: Input should be greater than or equal to 0")
    return value


def _messages(body: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    messages = required(body, "messages", "list")
    if not messages:
        raise _invalid("messages: at least one message is required")
    for i, raw in enumerate(messages):
        where = f"messages.{i}"
        message: dict[str, Any] = typed(raw, "dictionary", where)
        only(message, _MESSAGE_KEYS, where)
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


def _block(raw: object, where: str, *, final_assistant: bool = False, tagged: bool = True) -> None:
    """One content block: a known ``type``, only that type's fields (the API names the
    field as ``where.TYPE.field`` for a tagged union, ``where.field`` otherwise)."""
    block: dict[str, Any] = typed(raw, "dictionary", where)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{where}.type: Field required")
    if kind not in BLOCK_FIELDS:
        raise _invalid(_tag_error(where, kind, BLOCK_FIELDS.keys()))
    only(block, BLOCK_FIELDS[kind], f"{where}.{kind}" if tagged else where)
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
        _block(block, f"system.{j}", tagged=False)
    return system


def _tools(tools: object) -> list[dict[str, Any]]:
    checked: list[dict[str, Any]] = typed(tools, "list", "tools")
    seen: set[str] = set()
    for i, item in enumerate(checked):
        tool = typed(item, "dictionary", f"tools.{i}")
        custom = tool.get("type", "custom") in ("custom", None)
        if not custom and tool.get("type") not in TOOL_TYPES:
            raise _invalid(_tag_error(f"tools.{i}", tool.get("type"), TOOL_TYPES | {"custom"}))
        where = f"tools.{i}.custom" if custom else f"tools.{i}"
        if custom:
            only(tool, _CUSTOM_TOOL_FIELDS, where)
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
        if "description" in tool:
            typed(tool["description"], "string", f"{where}.description")
        schema = required(tool, "input_schema", "dictionary", where)
        if schema.get("type") != "object":
            raise _invalid(f"{where}.input_schema.type: Input should be 'object'")
        if not isinstance(schema.get("properties", {}), dict):
            raise _invalid(f"{where}.input_schema.properties: Input should be a valid dictionary")
    return checked


def _tool_choice(raw: object, tools: Sequence[Mapping[str, Any]], model: ModelInfo) -> dict[str, Any] | None:
    if raw is None:
        return None
    choice: dict[str, Any] = typed(raw, "dictionary", "tool_choice")
    kind = choice.get("type")
    if kind not in _CHOICES:
        expected = ", ".join(f"'{c}'" for c in _CHOICES)
        raise _invalid(
            f"tool_choice: Input tag {kind!r} found using 'type' does not match any of the expected tags: {expected}"
        )
    optional(choice, "disable_parallel_tool_use", "boolean", f"tool_choice.{kind}")
    if kind == "tool":
        required(choice, "name", "string", "tool_choice.tool")
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
    typed(block["input"], "dictionary", f"{where}.input")


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
    if "is_error" in block:
        typed(block["is_error"], "boolean", f"{where}.is_error")


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
