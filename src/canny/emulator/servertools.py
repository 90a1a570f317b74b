"""Server tools (web search, web fetch, code execution) that run with canned results.

When ``tools`` holds a typed server tool (``web_search_*``, ``web_fetch_*``,
``code_execution_*``) and the last user turn opens a new exchange (it holds no
``tool_result``), the reply calls each such tool once, in the order given, before its text:
a ``server_tool_use`` block and its result block, in the API's shapes. Results are canned
and deterministic for the prompt:

- web search: ``{"query": <the prompt's words>}``, three ``web_search_result`` entries on
  ``example.com``-style pages with opaque ``encrypted_content``;
- web fetch: the first ``http(s)://`` URL in the prompt (else ``https://example.com/``),
  answered with a plain-text ``document``;
- code execution: ``code_execution_20250522`` runs ``code`` (``code_execution_tool_result``),
  later versions run a ``bash_code_execution`` command; stdout is fixed, return code 0, and
  the reply carries a ``container``.

Billing follows the API: ``usage.server_tool_use`` counts ``web_search_requests`` and
``web_fetch_requests`` whenever the request has server tools; the results are read back as
input, so they add to the final ``input_tokens`` (``message_start`` shows the prompt alone).
``tool_choice`` ``none`` runs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from canny.emulator.tokens import count_tokens
from canny.emulator.validation import MessagesRequest, conversation_turns

__all__ = ["ServerRun", "has_server_tools", "plan_server_tools"]

_ALPHABET = string.ascii_letters + string.digits
_URL = re.compile(r"https?://[^\s\"'<>\])]+")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_DIRECTIVES = re.compile(r"\[\[.*?\]\]", re.DOTALL)
_KINDS = ("web_search", "web_fetch", "code_execution")
_RETRIEVED_AT = "2026-01-15T09:30:00.000000+00:00"
_STDOUT = "Hello from the canny emulator's sandbox.\n42\n"


@dataclass(frozen=True, slots=True)
class ServerRun:
    """The server tool calls of one reply: their blocks (use, result, ...), the input
    tokens their results add, the ``server_tool_use`` counts, and the container if any."""

    blocks: tuple[dict[str, Any], ...] = ()
    input_tokens: int = 0
    counts: Mapping[str, int] = field(default_factory=dict)
    container: bool = False


def _kind(tool: Mapping[str, Any]) -> str | None:
    kind = tool.get("type")
    if not isinstance(kind, str):
        return None
    return next((k for k in _KINDS if kind.startswith(k + "_")), None)


def has_server_tools(request: MessagesRequest) -> bool:
    """Whether ``tools`` holds a web search, web fetch or code execution tool."""
    return any(_kind(tool) for tool in request.tools)


def _id(request: MessagesRequest, *parts: object) -> str:
    history = json.dumps(list(request.messages), sort_keys=True, separators=(",", ":"), default=str)
    number = int.from_bytes(
        hashlib.sha256("\x00".join(map(str, (request.model.id, history, *parts))).encode()).digest()
    )
    chars = []
    for _ in range(22):
        number, rest = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[rest])
    return "srvtoolu_01" + "".join(chars)


def _opaque(*parts: object) -> str:
    data = b"".join(hashlib.sha256(f"{i}\x00{parts}".encode()).digest() for i in range(4))
    return base64.b64encode(b"\x12" + data).decode()


def _opening_text(request: MessagesRequest) -> str | None:
    """The last user turn's text when it opens an exchange (no ``tool_result``), else ``None``."""
    turns = conversation_turns(request.messages)
    last = next((turn for turn in reversed(turns) if turn.role == "user"), None)
    if last is None or last.of_type("tool_result") or turns[-1].role != "user":
        return None
    return "\n".join(str(b.get("text", "")) for _, _, b in last.of_type("text"))


def plan_server_tools(request: MessagesRequest) -> ServerRun:
    """The server tool calls of the reply (none when the request has no server tool, the
    exchange already started, or ``tool_choice`` is ``none``)."""
    if not has_server_tools(request) or (request.tool_choice or {}).get("type") == "none":
        return ServerRun()
    counts = {"web_search_requests": 0, "web_fetch_requests": 0}
    prompt = _opening_text(request)
    if prompt is None:
        return ServerRun(counts=counts)
    blocks: list[dict[str, Any]] = []
    extra = 0
    container = False
    for index, tool in enumerate(request.tools):
        kind = _kind(tool)
        if kind is None:
            continue
        tool_id = _id(request, kind, index)
        if kind == "web_search":
            use, result = _web_search(prompt, tool_id)
            counts["web_search_requests"] += 1
        elif kind == "web_fetch":
            use, result = _web_fetch(prompt, tool_id)
            counts["web_fetch_requests"] += 1
        else:
            use, result = _code_execution(str(tool.get("type")), tool_id)
            container = True
        blocks += [use, result]
        extra += count_tokens(json.dumps(result, ensure_ascii=False))
    return ServerRun(tuple(blocks), extra, counts, container)


def _query(prompt: str) -> str:
    words = _WORD.findall(_URL.sub(" ", _DIRECTIVES.sub(" ", prompt)))
    return " ".join(words[:8]) or "example"


def _web_search(prompt: str, tool_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    query = _query(prompt)
    slug = "-".join(query.lower().split()[:4]) or "example"
    results = [
        {
            "type": "web_search_result",
            "title": f"{query.title()} - {site}",
            "url": f"https://{site}/{slug}",
            "encrypted_content": _opaque("search", query, site),
            "page_age": age,
        }
        for site, age in (("example.com", None), ("example.org", "January 15, 2026"), ("example.net", None))
    ]
    use = {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": query}}
    result = {
        "type": "web_search_tool_result",
        "tool_use_id": tool_id,
        "content": results,
        "caller": {"type": "direct"},
    }
    return use, result


def _web_fetch(prompt: str, tool_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = _URL.search(prompt)
    url = found.group().rstrip(".,;:!?") if found else "https://example.com/"
    page = f"Example page\n\nThis is the canny emulator's canned copy of {url}. It stands in for the real page."
    use = {"type": "server_tool_use", "id": tool_id, "name": "web_fetch", "input": {"url": url}}
    result = {
        "type": "web_fetch_tool_result",
        "tool_use_id": tool_id,
        "content": {
            "type": "web_fetch_result",
            "url": url,
            "retrieved_at": _RETRIEVED_AT,
            "content": {
                "type": "document",
                "source": {"type": "text", "media_type": "text/plain", "data": page},
                "title": "Example page",
            },
        },
        "caller": {"type": "direct"},
    }
    return use, result


#: What the sandbox runs, per tool version: (tool name, input key, input), the result
#: block types named after the tool (``X_result`` inside ``X_tool_result``).
_SANDBOX_RUNS = {
    "code_execution_20250522": (
        "code_execution",
        "code",
        'print("Hello from the canny emulator\'s sandbox.")\nprint(6 * 7)',
    ),
    "bash": (
        "bash_code_execution",
        "command",
        "echo \"Hello from the canny emulator's sandbox.\" && python3 -c 'print(6 * 7)'",
    ),
}


def _code_execution(version: str, tool_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    name, key, source = _SANDBOX_RUNS.get(version, _SANDBOX_RUNS["bash"])
    use = {"type": "server_tool_use", "id": tool_id, "name": name, "input": {key: source}}
    content = {"type": f"{name}_result", "stdout": _STDOUT, "stderr": "", "return_code": 0, "content": []}
    return use, {"type": f"{name}_tool_result", "tool_use_id": tool_id, "content": content}


def stream_server_block(block: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The ``content_block_start`` block of a server tool block, and the input JSON to
    stream after it (``None`` for result blocks, which arrive whole)."""
    if block["type"] == "server_tool_use":
        start = {"type": "server_tool_use", "id": block["id"], "name": block["name"], "input": {}}
        return start, json.dumps(block["input"], ensure_ascii=False)
    return dict(block), None
