"""What arrived at the emulator: a thread-safe log of requests and per-run counters.

The server runs on its own event loop (often in a daemon thread) while tests read the log
from another thread, so every access takes a lock. Credentials are never stored: the
``authorization`` and ``x-api-key`` header values are replaced by ``[redacted]``. The log
keeps the latest 100,000 requests, so a long-running ``canny emulator serve`` stays small.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REDACTED", "RecordedRequest", "Recorder", "redact_headers"]

REDACTED = "[redacted]"
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "proxy-authorization"})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the emulator saw it.

    ``fault`` is the fault applied (``"ok"`` for a normal answer), or ``None`` when the
    request consumed no plan entry (rejected by auth, or an endpoint other than
    ``/v1/messages``). ``status`` is the HTTP status sent (200 for a stream that later
    failed). ``received`` is :func:`time.monotonic` when the request arrived.
    """

    method: str
    path: str
    run: str | None
    fault: str | None
    status: int
    body: Any
    headers: Mapping[str, str]
    received: float
    request_id: str = ""
    index: int | None = field(default=None)


def redact_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Lower-cased headers with credential values replaced by :data:`REDACTED`."""
    result: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        result[key] = REDACTED if key in _SECRET_HEADERS else value
    return result


class Recorder:
    """The request log (the latest ``limit`` requests) plus the per-run ``/v1/messages`` counters."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._requests: deque[RecordedRequest] = deque(maxlen=limit)
        self._counters: dict[str | None, int] = {}

    def next_index(self, run: str | None) -> int:
        """Claim the next 0-based ``/v1/messages`` number for ``run`` (``None``: unprefixed)."""
        with self._lock:
            index = self._counters.get(run, 0)
            self._counters[run] = index + 1
            return index

    def add(self, request: RecordedRequest) -> None:
        """Append one request to the log."""
        with self._lock:
            self._requests.append(request)

    def requests(self, run: str | None = None) -> list[RecordedRequest]:
        """A copy of the log, in arrival order; only ``run``'s requests when given."""
        with self._lock:
            if run is None:
                return list(self._requests)
            return [r for r in self._requests if r.run == run]
