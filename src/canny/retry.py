"""The one retry policy. The SDK is built with ``max_retries=0``; this decides alone.

=====================================================  ==============================
condition                                              retried?
=====================================================  ==============================
408, 409, 429 (rate limit), 500, 502, 503, 504, 529,   yes, while nothing was shown
connection refused/reset/dropped, timeouts
in-band ``overloaded_error`` / ``api_error`` before    yes
the first content delta
429 spend limit, 400, 401, 403, 404, 413, 422          never
``stop_reason: refusal``                               never (an answer, not a fault)
any failure after content was shown                    never: ``interrupted``
=====================================================  ==============================

``x-should-retry: false`` vetoes a retry; ``x-should-retry: true`` allows one for a status
that is not on the never list (it cannot make a 400 retryable). The delay is the server's
``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date) when it sent one, taken
exactly; a server delay above ``max_delay`` (default 60 s) ends the retries at once rather
than sleeping for an hour or retrying early into certain failure. Otherwise the delay is
exponential with full jitter: ``uniform(0, min(max_delay, initial * 2**n))``. Attempts
and the total deadline bound the loop. Sleep, clock and random source are injectable.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from canny.errors import APIError, CannyError

__all__ = ["NEVER_RETRY_STATUSES", "RetryPolicy", "RetryState", "parse_retry_after"]

NEVER_RETRY_STATUSES = frozenset({400, 401, 403, 404, 413, 422})


def parse_retry_after(headers: Mapping[str, str], *, now: Callable[[], datetime] | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, else ``retry-after`` (seconds or HTTP date).

    Values that are missing, unparseable, zero or negative give ``None``.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    raw_ms = lowered.get("retry-after-ms")
    if raw_ms is not None:
        try:
            ms = float(raw_ms)
        except ValueError:
            ms = 0.0
        if ms > 0:
            return ms / 1000.0
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        current = now() if now is not None else datetime.now(UTC)
        seconds = (when - current).total_seconds()
    return seconds if seconds > 0 else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds and delays of the attempt loop."""

    max_attempts: int = 5
    max_delay: float = 60.0
    deadline: float = 300.0
    initial_delay: float = 0.5
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def is_retryable(self, error: BaseException) -> bool:
        """May this error be retried at all (ignoring attempt and time bounds)?"""
        if not isinstance(error, APIError):
            return False
        if error.should_retry is False:
            return False
        if error.status_code in NEVER_RETRY_STATUSES:
            return False
        if error.retryable:
            return True
        return bool(error.should_retry)

    def backoff(self, retries_taken: int) -> float:
        """Full-jitter exponential delay before retry number ``retries_taken + 1``."""
        ceiling = min(self.max_delay, self.initial_delay * (2.0 ** min(retries_taken, 32)))
        return self.rng() * ceiling

    def start(self) -> RetryState:
        return RetryState(self, self.clock())


@dataclass(slots=True)
class RetryState:
    """One call's progress through the policy."""

    policy: RetryPolicy
    started: float
    attempts: int = 0
    #: Why the loop stopped retrying, for the error message (``None`` while it goes on).
    gave_up_because: str | None = None

    def begin_attempt(self) -> int:
        self.attempts += 1
        return self.attempts

    def next_delay(self, error: CannyError) -> float | None:
        """Seconds to sleep before the next attempt, or ``None`` to stop and raise."""
        policy = self.policy
        if not policy.is_retryable(error):
            self.gave_up_because = "not retryable"
            return None
        if self.attempts >= policy.max_attempts:
            self.gave_up_because = f"gave up after {self.attempts} attempts"
            return None
        assert isinstance(error, APIError)
        if error.retry_after is not None:
            if error.retry_after > policy.max_delay:
                self.gave_up_because = (
                    f"the server asked to wait {error.retry_after:.0f} s, more than the {policy.max_delay:.0f} s cap"
                )
                return None
            delay = error.retry_after
        else:
            delay = policy.backoff(self.attempts - 1)
        elapsed = policy.clock() - self.started
        if elapsed + delay > policy.deadline:
            self.gave_up_because = f"the retry deadline of {policy.deadline:.0f} s would pass"
            return None
        return delay
