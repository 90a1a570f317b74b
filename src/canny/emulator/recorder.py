"""What arrived at the emulator: a thread-safe log of requests and per-run counters.

The server runs on its own event loop (often in a daemon thread) while tests read the log
from another thread, so every access takes a lock. Credentials are never stored: the
``authorization`` and ``x-api-key`` header values are replaced by ``[redacted]``.

Memory is bounded, so a long-running ``canny emulator serve`` stays small: the log keeps
the latest 100,000 requests and at most 64 MiB of request bodies and headers (the newest
request is always kept, whatever its size), and the per-run counters remember the latest
100,000 runs (a run unused since then starts again at request 0).
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


#: Defaults of :class:`Recorder`'s bounds.
MAX_REQUESTS = 100_000
MAX_BYTES = 64 * 1024 * 1024
MAX_RUNS = 100_000


class Recorder:
    """The request log (the latest ``limit`` requests, at most ``max_bytes`` of bodies and
    headers) plus the per-run ``/v1/messages`` counters (the latest ``max_runs`` runs)."""

    def __init__(self, limit: int = MAX_REQUESTS, *, max_bytes: int = MAX_BYTES, max_runs: int = MAX_RUNS) -> None:
        self._lock = threading.Lock()
        self._limit = limit
        self._max_bytes = max_bytes
        self._max_runs = max_runs
        self._requests: deque[tuple[RecordedRequest, int]] = deque()
        self._bytes = 0
        self._counters: dict[str | None, int] = {}

    @property
    def held_bytes(self) -> int:
        """The estimated size of the requests held (bodies and headers)."""
        with self._lock:
            return self._bytes

    def next_index(self, run: str | None) -> int:
        """Claim the next 0-based ``/v1/messages`` number for ``run`` (``None``: unprefixed)."""
        with self._lock:
            index = self._counters.pop(run, 0)
            self._counters[run] = index + 1  # re-inserted: the dict is ordered by last use
            if len(self._counters) > self._max_runs:
                del self._counters[next(iter(self._counters))]
            return index

    def add(self, request: RecordedRequest) -> None:
        """Append one request to the log, dropping the oldest beyond the bounds."""
        size = _size(request.body) + _size(request.headers) + len(request.path)
        with self._lock:
            self._requests.append((request, size))
            self._bytes += size
            while len(self._requests) > 1 and (len(self._requests) > self._limit or self._bytes > self._max_bytes):
                _, dropped = self._requests.popleft()
                self._bytes -= dropped

    def requests(self, run: str | None = None) -> list[RecordedRequest]:
        """A copy of the log, in arrival order; only ``run``'s requests when given."""
        with self._lock:
            if run is None:
                return [r for r, _ in self._requests]
            return [r for r, _ in self._requests if r.run == run]


def _size(value: Any) -> int:
    """About how many bytes ``value`` (parsed JSON, headers) holds: its text, plus a few
    bytes per item, walked without recursion so any nesting depth is fine."""
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += 8
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return total
