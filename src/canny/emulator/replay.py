"""The ``replay`` fault: answer with a recorded response, byte for byte, from a file.

``replay;file=PATH`` serves what a real exchange returned, so a client can be tested
against exactly what the API once sent. PATH (absolute, or relative to the server's
working directory) is either

- an *exchange* file: JSON with ``status``, ``headers`` (a mapping) and ``body`` (text),
  the shape of canny's wire corpus (``tests/wire/*.json``); or
- a raw body: an SSE stream (text starting with ``event:`` or ``data:``), sent as
  ``text/event-stream`` one event at a time, or anything else, sent as JSON; status 200.

The file is read on each request. A missing, unreadable or oversized file is a 400
naming it. This module is stdlib-only apart from the wire steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from canny.emulator.faults import Fault
from canny.emulator.validation import ApiError
from canny.emulator.wire import Body, Pause, Start, Step

__all__ = ["MAX_REPLAY_BYTES", "replay_script"]

#: The largest recorded body the emulator replays.
MAX_REPLAY_BYTES = 32 * 1024 * 1024
_KEPT_HEADERS = frozenset({"content-type", "request-id", "x-should-retry", "retry-after", "retry-after-ms"})


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_REPLAY_BYTES + 1)
    except OSError as exc:
        raise ApiError(
            400, "invalid_request_error", f"emulator fault replay: cannot read {str(path)!r}: {exc.strerror}"
        ) from None
    if len(data) > MAX_REPLAY_BYTES:
        raise ApiError(400, "invalid_request_error", f"emulator fault replay: {str(path)!r} is too large")
    return data


def _exchange(data: bytes) -> dict[str, Any] | None:
    """The recorded exchange, if ``data`` is one (a JSON object with status and body)."""
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("status"), int) and isinstance(parsed.get("body"), str):
        return parsed
    return None


def replay_script(fault: Fault, request_id: str) -> list[Step]:
    """The recorded response named by ``fault``'s ``file`` as a response script."""
    name = fault.text("file")
    if not name:
        raise ApiError(400, "invalid_request_error", "emulator fault replay: a 'file' parameter is required")
    data = _read(Path(name))
    exchange = _exchange(data)
    status = 200
    headers: dict[str, str] = {}
    if exchange is not None:
        status = exchange["status"]
        recorded = exchange.get("headers")
        if isinstance(recorded, dict):
            headers = {str(k).lower(): str(v) for k, v in recorded.items() if str(k).lower() in _KEPT_HEADERS}
        data = exchange["body"].encode()
    is_sse = data.lstrip().startswith((b"event:", b"data:"))
    headers.setdefault("content-type", "text/event-stream; charset=utf-8" if is_sse else "application/json")
    headers["request-id"] = headers.get("request-id") or request_id
    steps: list[Step] = [Pause(fault.number("delay"))] if fault.number("delay") > 0 else []
    if is_sse:
        frames = [frame + b"\n\n" for frame in data.split(b"\n\n") if frame.strip()]
        return [*steps, Start(status, tuple(headers.items())), *(Body(frame) for frame in frames)]
    headers["content-length"] = str(len(data))
    return [*steps, Start(status, tuple(headers.items())), Body(data)]
