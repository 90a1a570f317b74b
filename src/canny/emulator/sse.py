"""Server-sent events in the Messages API's framing.

Each event is ``event: NAME\\ndata: JSON\\n\\n``. Like the real API, most payloads use
whitespace-padded JSON (``{"type": "message_start", "message": {...}}``) while
``message_delta`` is compact, so clients that depend on either spacing break here first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = [
    "content_block_start",
    "content_block_stop",
    "encode",
    "error",
    "input_json_delta",
    "malformed",
    "message_delta",
    "message_start",
    "message_stop",
    "ping",
    "text_delta",
]

_COMPACT = (",", ":")


def encode(event: str, data: Mapping[str, Any], *, compact: bool = False) -> bytes:
    """One SSE frame; ``compact`` drops the spaces after ``:`` and ``,``."""
    payload = json.dumps(data, ensure_ascii=False, separators=_COMPACT if compact else None)
    return f"event: {event}\ndata: {payload}\n\n".encode()


def message_start(message: Mapping[str, Any]) -> bytes:
    """``message_start`` carrying the message shell (empty content, usage so far)."""
    return encode("message_start", {"type": "message_start", "message": message})


def content_block_start(index: int, block: Mapping[str, Any] | None = None) -> bytes:
    """Start of a content block (default: an empty text block; a ``tool_use`` block starts
    with its id, name and ``"input": {}``)."""
    return encode(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block or {"type": "text", "text": ""}},
    )


def ping() -> bytes:
    """A keep-alive ``ping`` (the SDK drops it)."""
    return encode("ping", {"type": "ping"})


def text_delta(index: int, text: str) -> bytes:
    """One ``text_delta`` of a content block."""
    return encode(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
    )


def input_json_delta(index: int, partial_json: str) -> bytes:
    """One piece of a ``tool_use`` block's input JSON (the pieces concatenate to it)."""
    return encode(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "input_json_delta", "partial_json": partial_json},
        },
    )


def content_block_stop(index: int) -> bytes:
    """End of a content block."""
    return encode("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(
    stop_reason: str,
    stop_sequence: str | None,
    usage: Mapping[str, Any],
    stop_details: Mapping[str, Any] | None = None,
) -> bytes:
    """The final top-level changes: stop reason and cumulative usage (compact JSON)."""
    delta: dict[str, Any] = {"stop_reason": stop_reason, "stop_sequence": stop_sequence, "stop_details": stop_details}
    return encode("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}, compact=True)


def message_stop() -> bytes:
    """The last event of a complete stream."""
    return encode("message_stop", {"type": "message_stop"})


def error(error_type: str, message: str) -> bytes:
    """An in-band error after the 200 headers (``event: error``), with ``details: null`` as
    recorded (anthropics/anthropic-sdk-go#200)."""
    return encode("error", {"type": "error", "error": {"details": None, "type": error_type, "message": message}})


def malformed() -> bytes:
    """A ``content_block_delta`` frame whose data is not valid JSON."""
    return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n'
