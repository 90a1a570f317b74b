"""Tool use: whether the emulator calls a tool, which one, and with what input.

The decision is a pure function of the request. Only custom tools (those with an
``input_schema``) are ever called. With ``tool_choice`` ``none``, or no custom tool, the
answer is text. With ``any`` or ``tool`` (forced), every answer is a tool call, as with
the API. With ``auto`` (the default), the emulator counts the tool turns of the current
*exchange* (the user turns holding ``tool_result`` blocks since the last user turn that
held none) and calls a tool while that count is below ``[[tool_turns=N]]`` (default 1:
one tool call, then a text answer).

Which tool: ``tool_choice: {"type": "tool", "name": X}`` calls X; otherwise
``[[tool=A+B,C]]`` names the tools of each tool turn in order, cycling (``+`` calls several
at once, ``,`` separates turns); otherwise the first custom tool. ``disable_parallel_tool_use``
keeps only the first of a group. Both directives are read from the user message that opened
the exchange, falling back to the first user message.

Inputs are built from the tool's ``input_schema``: an enum's first value, a ``const``,
strings from the opening message's words, small integers and numbers within any
``minimum``/``maximum``, booleans, arrays of ``minItems`` (at least one) items and nested
objects, each deterministic for the conversation. Required properties are filled (all of
them when the schema lists none as required). Ids are ``toolu_01`` plus 22 characters
derived from the conversation, so a retried request gets the same id.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from canny.emulator.tokens import Directives, count_tokens, parse_directives, truncate_to_tokens
from canny.emulator.validation import ApiError, MessagesRequest, Turn, content_text, conversation_turns

__all__ = [
    "ToolCall",
    "hidden_prompt_tokens",
    "input_chunks",
    "plan_calls",
    "preface",
    "run_on",
]

_ALPHABET = string.ascii_letters + string.digits
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_DIRECTIVES = re.compile(r"\[\[.*?\]\]", re.DOTALL)
_MAX_DEPTH = 8
_CHUNK = 12
_FORMATS = {
    "date": "2026-01-15",
    "date-time": "2026-01-15T09:30:00Z",
    "time": "09:30:00",
    "email": "someone@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One ``tool_use`` block: ``input`` is what a non-streamed reply shows, ``json`` the
    text the stream sends (a prefix of the full input's JSON when ``max_tokens`` cut it)."""

    id: str
    name: str
    input: dict[str, Any]
    json: str

    @property
    def tokens(self) -> int:
        """Output tokens of the input JSON."""
        return count_tokens(self.json)

    def block(self) -> dict[str, Any]:
        """The ``tool_use`` content block (``caller`` direct, as recorded since 2026)."""
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": self.input, "caller": {"type": "direct"}}

    def cut(self, tokens: int) -> ToolCall:
        """The call as ``max_tokens`` leaves it after ``tokens`` tokens of input JSON: the
        JSON prefix, and an input of the top-level keys whose values arrived whole."""
        prefix = truncate_to_tokens(self.json, tokens)
        kept: dict[str, Any] = {}
        end = 1  # after "{"
        for key, value in self.input.items():
            end += len(json.dumps(key, ensure_ascii=False)) + 2 + len(json.dumps(value, ensure_ascii=False))
            if end > len(prefix):
                break
            kept[key] = value
            end += 2  # ", "
        return replace(self, input=kept, json=prefix)


def _custom(tool: Mapping[str, Any]) -> bool:
    return tool.get("type", "custom") in ("custom", None) and isinstance(tool.get("input_schema"), Mapping)


def hidden_prompt_tokens(request: MessagesRequest) -> int:
    """The hidden tool-use system prompt (input tokens) a request with ``tools`` carries."""
    if not request.tools:
        return 0
    forced = request.tool_choice is not None and request.tool_choice.get("type") in ("any", "tool")
    return request.model.tool_prompt[1 if forced else 0]


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def _tool_id(request: MessagesRequest, name: str, index: int) -> str:
    history = json.dumps(list(request.messages), sort_keys=True, separators=(",", ":"), default=str)
    number = int.from_bytes(_digest(request.model.id, history, name, index), "big")
    chars = []
    for _ in range(22):
        number, rest = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[rest])
    return "toolu_01" + "".join(chars)


def _exchange(turns: Sequence[Turn]) -> tuple[Turn | None, int]:
    """The user turn that opened the current exchange, and the tool turns since."""
    done = 0
    for turn in reversed(turns):
        if turn.role != "user":
            continue
        if not turn.of_type("tool_result"):
            return turn, done
        done += 1
    return None, done


def _turn_text(turn: Turn | None) -> str:
    if turn is None:
        return ""
    return content_text([block for _, _, block in turn.blocks if block.get("type") == "text"])


def _directives(opening: Turn | None, first: Turn | None) -> Directives:
    try:
        here = parse_directives(_turn_text(opening))
        if opening is first or (here.tool_turns is not None and here.tool):
            return here
        there = parse_directives(_turn_text(first))
    except ValueError as exc:
        raise ApiError(400, "invalid_request_error", f"emulator directive: {exc}") from None
    turns = here.tool_turns if here.tool_turns is not None else there.tool_turns
    return Directives(tool_turns=turns, tool=here.tool or there.tool)


def plan_calls(request: MessagesRequest) -> tuple[ToolCall, ...]:
    """The tool calls of the reply (none: answer with text). :class:`ApiError` for a
    ``[[tool=...]]`` naming no custom tool of the request."""
    tools = {str(t["name"]): t for t in request.tools if _custom(t)}
    choice = request.tool_choice or {"type": "auto"}
    if not tools or choice["type"] == "none":
        return ()
    turns = conversation_turns(request.messages)
    opening, done = _exchange(turns)
    first = next((turn for turn in turns if turn.role == "user"), None)
    directives = _directives(opening, first)
    if choice["type"] == "tool":
        names: tuple[str, ...] = (str(choice["name"]),)
    else:
        wanted = 1 if directives.tool_turns is None else directives.tool_turns
        if choice["type"] == "auto" and done >= wanted:
            return ()
        names = directives.tool[done % len(directives.tool)] if directives.tool else (next(iter(tools)),)
        unknown = [name for name in names if name not in tools]
        if unknown:
            raise ApiError(
                400,
                "invalid_request_error",
                f"emulator directive: [[tool=...]] names {unknown[0]!r}, which is not a custom tool of this request "
                f"(tools: {', '.join(tools)})",
            )
    if choice.get("disable_parallel_tool_use"):
        names = names[:1]
    words = _words(_turn_text(opening))
    calls = []
    for index, name in enumerate(n for n in names if n in tools):
        seed = (_turn_text(opening), done, index, name)
        value = _Filler(words, seed).value(tools[name]["input_schema"], "", 0)
        data = value if isinstance(value, dict) else {}
        calls.append(ToolCall(_tool_id(request, name, index), name, data, json.dumps(data, ensure_ascii=False)))
    return tuple(calls)


def preface(request: MessagesRequest, calls: Sequence[ToolCall]) -> str:
    """The short text before the calls ("I'll use the lookup tool."); none when forced."""
    if not calls or (request.tool_choice or {}).get("type") in ("any", "tool"):
        return ""
    names = list(dict.fromkeys(call.name for call in calls))
    if len(names) == 1:
        return f"I'll use the {names[0]} tool."
    return f"I'll use the {', '.join(names[:-1])} and {names[-1]} tools."


def run_on(call: ToolCall, text: str) -> ToolCall | None:
    """The call with its first string value replaced by ``text`` (the ``max_tokens``
    fault's endless input); ``None`` when the input holds no string."""
    value, done = _replace_first_string(call.input, text)
    if not done:
        return None
    assert isinstance(value, dict)
    return replace(call, input=value, json=json.dumps(value, ensure_ascii=False))


def _replace_first_string(value: Any, text: str) -> tuple[Any, bool]:
    if isinstance(value, str):
        return text, True
    if isinstance(value, dict):
        for key, inner in value.items():
            new, done = _replace_first_string(inner, text)
            if done:
                return {**value, key: new}, True
    if isinstance(value, list):
        for i, inner in enumerate(value):
            new, done = _replace_first_string(inner, text)
            if done:
                return [*value[:i], new, *value[i + 1 :]], True
    return value, False


def input_chunks(text: str) -> list[str]:
    """The ``partial_json`` pieces of an input (about 12 characters each, never ending
    on a backslash); joined, they give ``text``."""
    chunks: list[str] = []
    start = 0
    while start < len(text):
        end = min(len(text), start + _CHUNK)
        while end < len(text) and text[end - 1] == "\\":
            end += 1
        chunks.append(text[start:end])
        start = end
    return chunks


def _words(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(_DIRECTIVES.sub(" ", text)) if len(w) >= 3]
    return words or ["example"]


class _Filler:
    """Builds a value for a JSON schema, deterministic for (words, seed, path)."""

    def __init__(self, words: Sequence[str], seed: tuple[object, ...]) -> None:
        self.words = words
        self.seed = seed

    def _n(self, path: str) -> int:
        return int.from_bytes(_digest(*self.seed, path)[:8], "big")

    def value(self, schema: object, path: str, depth: int) -> Any:
        """A value that satisfies ``schema`` (the common keywords; see the module docstring)."""
        if not isinstance(schema, Mapping):
            return self._string({}, path)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf", "allOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                return self.value(options[0], path, depth + 1)
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
        if kind == "object":
            return self._object(schema, path, depth)
        if kind == "array":
            return self._array(schema, path, depth)
        if kind in ("integer", "number"):
            return self._number(schema, path, integer=kind == "integer")
        if kind == "boolean":
            return self._n(path) % 2 == 0
        if kind == "null":
            return None
        return self._string(schema, path)

    def _object(self, schema: Mapping[str, Any], path: str, depth: int) -> dict[str, Any]:
        if depth >= _MAX_DEPTH:
            return {}
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [n for n in properties if n in required] + [n for n in required if n not in properties]
        else:
            names = list(properties)
        return {str(n): self.value(properties.get(n, {}), f"{path}/{n}", depth + 1) for n in names}

    def _array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        if depth >= _MAX_DEPTH:
            return []
        low, high = schema.get("minItems", 1), schema.get("maxItems")
        count = max(1, low) if isinstance(low, int) else 1
        if isinstance(high, int):
            count = min(count, high)
        return [self.value(schema.get("items", {}), f"{path}/{i}", depth + 1) for i in range(count)]

    def _number(self, schema: Mapping[str, Any], path: str, *, integer: bool) -> int | float:
        step = 1 if integer else 0.5
        low: float | None = None
        high: float | None = None
        if isinstance(schema.get("minimum"), int | float):
            low = float(schema["minimum"])
        if isinstance(schema.get("exclusiveMinimum"), int | float):
            low = float(schema["exclusiveMinimum"]) + step
        if isinstance(schema.get("maximum"), int | float):
            high = float(schema["maximum"])
        if isinstance(schema.get("exclusiveMaximum"), int | float):
            high = float(schema["exclusiveMaximum"]) - step
        if low is None:
            low = 1.0 if high is None or high >= 1 else high
        if integer:
            low = float(-(-low // 1))
        span = 9 if high is None else max(1, int(high - low) + 1)
        value = low + self._n(path) % span
        if not integer and (high is None or value + 0.5 <= high):
            value += 0.5
        return int(value) if integer else value

    def _string(self, schema: Mapping[str, Any], path: str) -> str:
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in _FORMATS:
            return _FORMATS[fmt]
        n = self._n(path)
        start, count = n % len(self.words), 1 + (n >> 8) % 2
        text = " ".join(self.words[(start + k) % len(self.words)] for k in range(count))
        low, high = schema.get("minLength"), schema.get("maxLength")
        if isinstance(low, int):
            while len(text) < low:
                text += " " + self.words[len(text) % len(self.words)]
        if isinstance(high, int):
            text = text[:high]
        return text
