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
``minimum``/``maximum``, booleans, arrays of ``minItems`` (at least one) items, nested
objects and ``$ref`` into ``$defs`` (:class:`SchemaFiller`, which structured outputs use
too), each deterministic for the conversation. Required properties are filled (all of
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
    "SchemaFiller",
    "ToolCall",
    "hidden_prompt_tokens",
    "input_chunks",
    "plan_calls",
    "preface",
    "run_on",
    "words_of",
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
    "duration": "P1D",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
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
        if choice["type"] == "auto" and not directives.tool and _lacks_an_id(tools[names[0]], _turn_text(opening)):
            return ()  # as a model would, it asks for the identifier instead of inventing one
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
    words = words_of(_turn_text(opening))
    calls = []
    for index, name in enumerate(n for n in names if n in tools):
        seed = (_turn_text(opening), done, index, name)
        value = SchemaFiller(words, seed).value(tools[name]["input_schema"], "", 0)
        data = value if isinstance(value, dict) else {}
        calls.append(ToolCall(_tool_id(request, name, index), name, data, json.dumps(data, ensure_ascii=False)))
    return tuple(calls)


def _lacks_an_id(tool: Mapping[str, Any], text: str) -> bool:
    """Whether the tool requires an identifier (a parameter named ``*_id``, such as
    ``order_id``) that the user's text cannot supply: it has no digit. ("Hi! I have a
    question about an order." gets an answer; "Where is order #4821?" gets the call.)"""
    schema = tool.get("input_schema")
    if not isinstance(schema, Mapping) or any(ch.isdigit() for ch in text):
        return False
    return any(str(name).lower().endswith("_id") for name in schema.get("required") or ())


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


def words_of(text: str) -> list[str]:
    words = [w.lower() for w in _WORD.findall(_DIRECTIVES.sub(" ", text)) if len(w) >= 3]
    return words or ["example"]


class SchemaFiller:
    """Builds a value for a JSON schema, deterministic for (words, seed, path).

    Understands ``type`` (or a list of types), ``const``, ``enum``, ``anyOf``/``oneOf``
    (the first option; ``null`` when nesting gets deep), ``allOf`` (merged), ``$ref`` to
    ``#``, ``#/$defs/...`` or ``#/definitions/...``, ``properties``/``required``, ``items``,
    ``minItems``/``maxItems``, ``minimum``/``maximum`` (exclusive too), ``multipleOf``,
    ``minLength``/``maxLength`` and the common string ``format`` values, plus the
    constraints the SDK moves into a ``description`` (``{minimum: 18, maxLength: 5}``).
    """

    def __init__(self, words: Sequence[str], seed: tuple[object, ...], root: object = None) -> None:
        self.words = words
        self.seed = seed
        self.root = root

    def _n(self, path: str) -> int:
        return int.from_bytes(_digest(*self.seed, path)[:8], "big")

    def _resolve(self, schema: Mapping[str, Any], depth: int) -> Mapping[str, Any]:
        """``schema`` with ``$ref`` followed (a few hops) and ``allOf`` merged in."""
        for _ in range(_MAX_DEPTH):
            ref = schema.get("$ref")
            if not isinstance(ref, str):
                break
            target = self._lookup(ref)
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            schema = {**target, **rest} if isinstance(target, Mapping) else rest
        parts = schema.get("allOf")
        if isinstance(parts, list) and parts:
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                if not isinstance(part, Mapping):
                    continue
                for key, value in self._resolve(part, depth).items():
                    if key == "properties" and isinstance(value, Mapping):
                        merged["properties"] = {**merged.get("properties", {}), **value}
                    elif key == "required" and isinstance(value, list):
                        merged["required"] = [*merged.get("required", []), *value]
                    else:
                        merged.setdefault(key, value)
            schema = merged
        return schema

    def _lookup(self, ref: str) -> object:
        if ref == "#":
            return self.root
        if not ref.startswith("#/"):
            return {}
        node: object = self.root
        for raw in ref[2:].split("/"):
            name = raw.replace("~1", "/").replace("~0", "~")
            node = node.get(name) if isinstance(node, Mapping) else None
        return node if isinstance(node, Mapping) else {}

    def value(self, schema: object, path: str, depth: int) -> Any:
        """A value that satisfies ``schema`` (the keywords in the class docstring)."""
        if self.root is None:
            self.root = schema
        if not isinstance(schema, Mapping):
            return self._string({}, path)
        schema = _with_hints(self._resolve(schema, depth))
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                pick = options[0]
                if depth >= _MAX_DEPTH // 2:  # deep (recursive) schemas end where they may
                    pick = next((o for o in options if isinstance(o, Mapping) and o.get("type") == "null"), pick)
                elif isinstance(pick, Mapping) and pick.get("type") == "null" and len(options) > 1:
                    pick = options[1]
                return self.value(pick, path, depth + 1)
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
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        if isinstance(required, list):
            names = [n for n in properties if n in required] + [n for n in required if n not in properties]
        else:
            names = list(properties)
        if depth >= 2 * _MAX_DEPTH or (depth >= _MAX_DEPTH and not isinstance(required, list)):
            return {}
        return {str(n): self.value(properties.get(n, {}), f"{path}/{n}", depth + 1) for n in names}

    def _array(self, schema: Mapping[str, Any], path: str, depth: int) -> list[Any]:
        low, high = schema.get("minItems"), schema.get("maxItems")
        count = 1 if depth < _MAX_DEPTH // 2 else 0
        if isinstance(low, int):
            count = max(count, low)
        if isinstance(high, int):
            count = min(count, high)
        return [self.value(schema.get("items", {}), f"{path}/{i}", depth + 1) for i in range(count)]

    def _number(self, schema: Mapping[str, Any], path: str, *, integer: bool) -> int | float:
        step = 1 if integer else 0.5
        low: float | None = None
        high: float | None = None
        if _is_number(schema.get("minimum")):
            low = float(schema["minimum"])
        if _is_number(schema.get("exclusiveMinimum")):
            low = float(schema["exclusiveMinimum"]) + step
        if _is_number(schema.get("maximum")):
            high = float(schema["maximum"])
        if _is_number(schema.get("exclusiveMaximum")):
            high = float(schema["exclusiveMaximum"]) - step
        if low is None:
            low = 1.0 if high is None or high >= 1 else high
        if integer:
            low = float(-(-low // 1))
        multiple = schema.get("multipleOf")
        if isinstance(multiple, int | float) and not isinstance(multiple, bool) and multiple > 0:
            value = -(-low // multiple) * multiple
            return int(value) if integer else float(value)
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


_HINT_KEYS = (
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
_HINT = re.compile(r"\b(" + "|".join(_HINT_KEYS) + r"): (-?\d+(?:\.\d+)?)\b")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _with_hints(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """``schema`` plus the constraints the SDK's strict-schema transform moved into the
    last ``{...}`` of its ``description`` (schema keywords win)."""
    description = schema.get("description")
    if not isinstance(description, str) or not description.rstrip().endswith("}"):
        return schema
    block = description[description.rfind("{") :]
    hints: dict[str, Any] = {}
    for key, raw in _HINT.findall(block):
        number = float(raw)
        hints[key] = int(number) if number.is_integer() else number
    return {**hints, **schema} if hints else schema
