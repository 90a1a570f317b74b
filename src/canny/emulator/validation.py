"""Request validation for ``/v1/messages`` and ``/v1/messages/count_tokens``.

Mirrors the API's checks closely enough that a client's request bugs show up offline:
400 ``invalid_request_error`` with the API's ``field: message`` wording (one error per
response, as the API does), and 404 ``not_found_error`` ``model: X`` for an unknown or
retired model. Behaviour follows API version ``2026-10-21``: ``temperature``, ``top_p``
and ``top_k`` are rejected, and models from the 4.6 generation on reject a final
assistant message (prefill). Consecutive messages with the same role are accepted: the
API merges them into one turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canny.emulator.models import ModelInfo, resolve_model

__all__ = ["ApiError", "MessagesRequest", "validate_messages"]

_REMOVED_SAMPLING = ("temperature", "top_p", "top_k")
_ROLES = ("user", "assistant")
_TTLS = ("5m", "1h")


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
    stop_sequences: tuple[str, ...] = ()
    cache_control: Mapping[str, Any] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def last_user_text(self) -> str:
        """The text of the last user message (the answer depends on it alone)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return content_text(message["content"])
        return ""


def content_text(content: str | Sequence[Mapping[str, Any]]) -> str:
    """The text blocks of a message's content, joined by newlines."""
    if isinstance(content, str):
        return content
    return "\n".join(str(block.get("text", "")) for block in content if block.get("type") == "text")


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
    tools = body.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _invalid("tools: Input should be a valid list of tool definitions")
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
    return MessagesRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=stream,
        system=system,
        tools=tools,
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
