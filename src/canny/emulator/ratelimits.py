"""Rate-limit accounting: the ``anthropic-ratelimit-*`` headers and the drained 429.

Each run (and the unprefixed server) has its own window of :class:`RateLimits` budgets.
Every ``/v1/messages`` request takes one request and its input (input plus cache writes,
as the API's cache-aware ITPM counts) and output tokens; the budgets refill when the
window's reset time passes. Every response carries the headers; only an enforced budget
(a scenario's ``[rate_limits]``) turns a spent budget into a 429.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from canny.emulator.scenario import RateLimits

__all__ = ["RateWindow"]


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(math.ceil(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rounded(remaining: int, limit: int) -> int:
    """Token budgets are shown rounded to the nearest thousand (docs), small ones exactly."""
    return remaining if limit < 10_000 else round(remaining, -3)


class RateWindow:
    """The budgets of one run: what is left, and when it refills (thread-safe)."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.time) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._reset = 0.0
        self._requests = limits.requests
        self._input = limits.input_tokens
        self._output = limits.output_tokens

    def _refill(self, now: float) -> None:
        if now >= self._reset:
            self._reset = now + self.limits.window
            self._requests = self.limits.requests
            self._input = self.limits.input_tokens
            self._output = self.limits.output_tokens

    def admit(self) -> float | None:
        """Take one request; ``None`` when admitted, else the seconds until the reset
        (only when enforced and a budget is spent)."""
        with self._lock:
            now = self._clock()
            self._refill(now)
            spent = self._requests <= 0 or self._input <= 0 or self._output <= 0
            if spent and self.limits.enforce:
                return max(0.0, self._reset - now)
            self._requests = max(0, self._requests - 1)
            return None

    def charge(self, input_tokens: int, output_tokens: int) -> None:
        """Take an admitted request's tokens."""
        with self._lock:
            self._input = max(0, self._input - input_tokens)
            self._output = max(0, self._output - output_tokens)

    def headers(self) -> dict[str, str]:
        """The ``anthropic-ratelimit-*`` headers as of now."""
        with self._lock:
            now = self._clock()
            if now >= self._reset:
                self._refill(now)
            limits = self.limits
            reset = _rfc3339(self._reset)
            tokens_left = _rounded(self._input + self._output, limits.input_tokens + limits.output_tokens)
            rows = (
                ("requests", limits.requests, self._requests),
                ("input-tokens", limits.input_tokens, _rounded(self._input, limits.input_tokens)),
                ("output-tokens", limits.output_tokens, _rounded(self._output, limits.output_tokens)),
                ("tokens", limits.input_tokens + limits.output_tokens, tokens_left),
            )
        result: dict[str, str] = {}
        for name, limit, remaining in rows:
            result[f"anthropic-ratelimit-{name}-limit"] = str(limit)
            result[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            result[f"anthropic-ratelimit-{name}-reset"] = reset
        return result
