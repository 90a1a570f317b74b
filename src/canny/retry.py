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

Which class an HTTP status or an in-band ``error.type`` becomes, and whether it is
retried, is ONE table here (:data:`STATUS_RULES`, :data:`ERROR_TYPE_RULES`), read by
:func:`error_class` / :func:`event_error_class` (building the error) and
:func:`is_retryable` (deciding). ``x-should-retry: false`` vetoes a retry;
``x-should-retry: true`` allows one for a status that is not on the never list (it
cannot make a 400 retryable). The delay is the server's ``retry-after-ms`` /
``retry-after`` (seconds or an HTTP date) when it sent one, taken exactly; a server delay
above ``max_delay`` (default 60 s) ends the retries at once rather than sleeping for an
hour or retrying early into certain failure. Otherwise the delay is exponential with full
jitter: ``uniform(0, min(max_delay, initial * 2**n))``. Attempts and the total deadline
bound the loop. Sleep, clock and random source are injectable.

:class:`Attempts` is the one attempt loop, sync and async, that every call drives::

    attempts = run.retrying()                 # canny._call.CallRun: the call's books
    for attempt in attempts:                  # ``async for`` in async code
        with attempt:                         # leaving it decides: done, retry, raise
            send(attempt.state)
    return attempts.result
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, Protocol, TypeVar

from canny import errors
from canny.config import RetrySettings
from canny.errors import APIError, CannyError

__all__ = [
    "ERROR_TYPE_RULES",
    "NEVER_RETRY_STATUSES",
    "STATUS_RULES",
    "Attempt",
    "AttemptCall",
    "Attempts",
    "Retry",
    "RetryPolicy",
    "RetryState",
    "Rule",
    "announce_retry",
    "describe_failure",
    "error_class",
    "event_error_class",
    "is_retryable",
    "parse_retry_after",
    "retry_log",
]


class Retry(enum.Enum):
    """Whether an error is retried (while no output was shown)."""

    YES = "yes"
    #: never, whatever the server's ``x-should-retry`` says
    NEVER = "never"
    #: only when the server sends ``x-should-retry: true``
    IF_ASKED = "if the server asks"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the classification table: the canny error and its retry rule."""

    error: type[APIError]
    retry: Retry


_R, _N, _A = Retry.YES, Retry.NEVER, Retry.IF_ASKED

#: THE table: HTTP status -> canny error class and retry rule. A status not listed is a
#: :class:`~canny.errors.ServerError` (5xx, retried) or a
#: :class:`~canny.errors.RequestRejected` (4xx, retried only if the server asks); a 429
#: whose ``error_code`` names a spend limit is a :class:`~canny.errors.SpendLimitReached`
#: (:data:`SPEND_CODES`), and an ``overloaded_error`` body an
#: :class:`~canny.errors.Overloaded` unless the status says more (401/402/403/429).
STATUS_RULES: Mapping[int, Rule] = {
    400: Rule(errors.RequestRejected, _N),
    401: Rule(errors.AuthenticationError, _N),
    402: Rule(errors.SpendLimitReached, _N),
    403: Rule(errors.AuthenticationError, _N),
    404: Rule(errors.RequestRejected, _N),
    408: Rule(errors.ServerError, _R),
    409: Rule(errors.ServerError, _R),
    413: Rule(errors.RequestRejected, _N),
    422: Rule(errors.RequestRejected, _N),
    429: Rule(errors.RateLimited, _R),
    500: Rule(errors.ServerError, _R),
    502: Rule(errors.ServerError, _R),
    503: Rule(errors.ServerError, _R),
    504: Rule(errors.ServerError, _R),
    529: Rule(errors.Overloaded, _R),
}
#: In-band ``event: error`` (HTTP 200) by ``error.type``; an unknown type is a ServerError.
ERROR_TYPE_RULES: Mapping[str, Rule] = {
    "overloaded_error": Rule(errors.Overloaded, _R),
    "api_error": Rule(errors.ServerError, _R),
    "timeout_error": Rule(errors.ServerError, _R),
    "rate_limit_error": Rule(errors.RateLimited, _R),
    "authentication_error": Rule(errors.AuthenticationError, _N),
    "permission_error": Rule(errors.AuthenticationError, _N),
    "invalid_request_error": Rule(errors.RequestRejected, _N),
    "not_found_error": Rule(errors.RequestRejected, _N),
    "request_too_large": Rule(errors.RequestRejected, _N),
}
#: ``error.details.error_code`` fragments that make a 429 an organisation spend limit.
SPEND_CODES = ("spend_limit_reached", "credit_balance", "billing")
#: A class retried unless its status says never: the transient ones (connection failures
#: and timeouts have no status and are always such).
_RETRIED: type[APIError] = errors.TransientError
NEVER_RETRY_STATUSES = frozenset(status for status, rule in STATUS_RULES.items() if rule.retry is Retry.NEVER)
#: Statuses whose class is not decided by an ``overloaded_error`` body.
_STATUS_FIRST = frozenset({401, 402, 403, 429})


def error_class(status: int, error_type: str | None, error_code: str | None) -> type[APIError]:
    """The canny error class of an HTTP error response, by :data:`STATUS_RULES`."""
    if status == 429 and error_code and any(s in error_code for s in SPEND_CODES):
        return errors.SpendLimitReached
    rule = STATUS_RULES.get(status)
    if error_type == "overloaded_error" and status not in _STATUS_FIRST:
        return errors.Overloaded
    if rule is not None:
        return rule.error
    return errors.RequestRejected if 400 <= status < 500 else errors.ServerError


def event_error_class(error_type: str | None) -> type[APIError]:
    """The canny error class of an in-band error event, by :data:`ERROR_TYPE_RULES`."""
    rule = ERROR_TYPE_RULES.get(error_type or "")
    return rule.error if rule is not None else errors.ServerError


def is_retryable(error: BaseException) -> bool:
    """May this error be retried at all (ignoring attempt and time bounds)? The table's
    rule, with the server's ``x-should-retry`` as veto or (not for a never status) leave."""
    if not isinstance(error, APIError):
        return False
    if error.should_retry is False:
        return False
    if error.status_code in NEVER_RETRY_STATUSES or isinstance(error, errors.SpendLimitReached):
        return False  # a spend limit (a 429 with a spend-limit code too) waits for a person
    if isinstance(error, _RETRIED):
        return True
    return bool(error.should_retry)


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
class RetryPolicy(RetrySettings):
    """Bounds (the ``[retry]`` settings) and the clock, sleep and randomness of the attempt loop."""

    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, repr=False, compare=False)
    rng: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    @classmethod
    def from_settings(cls, bounds: RetrySettings) -> RetryPolicy:
        """The policy with the bounds of ``[retry]`` (see :class:`canny.config.RetrySettings`)."""
        return cls(**{f.name: getattr(bounds, f.name) for f in fields(bounds)})

    def is_retryable(self, error: BaseException) -> bool:
        """May this error be retried at all (:func:`is_retryable`)?"""
        return is_retryable(error)

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
        announce_retry(error, delay, self.attempts + 1, policy.max_attempts)
        return delay


#: Retries are told on this logger: one INFO record per wait, DEBUG with the request id.
#: A library is silent unless its user adds a handler; ``canny ask`` prints them on stderr.
retry_log = logging.getLogger("canny.retry")

_WAIT_REASONS: tuple[tuple[type[CannyError], str], ...] = (
    (errors.RateLimited, "rate limited"),
    (errors.Overloaded, "the API is overloaded"),
    (errors.TimeoutError, "timed out"),
)


def describe_failure(error: CannyError) -> str:
    """A few words on why an attempt failed (``rate limited``, ``server error 503`` ...)."""
    for cls, words in _WAIT_REASONS:
        if isinstance(error, cls):
            return words
    if isinstance(error, errors.ServerError):
        status = error.status_code
        return f"server error {status}" if status and status != 200 else "server error"
    return error.message


def announce_retry(error: CannyError, delay: float, next_attempt: int, max_attempts: int) -> None:
    """Log one wait before a retry: ``rate limited, retrying in 3 s, attempt 2 of 5``."""
    if not retry_log.isEnabledFor(logging.INFO):
        return
    seconds = f"{delay:.0f} s" if delay >= 10 else f"{delay:.1f} s" if delay >= 0.1 else f"{delay * 1000:.0f} ms"
    retry_log.info("%s, retrying in %s, attempt %d of %d", describe_failure(error), seconds, next_attempt, max_attempts)
    request_id = getattr(error, "request_id", None)
    if request_id:
        retry_log.debug(
            "attempt %d failed: %s (request id %s, status %s)",
            next_attempt - 1,
            error.message,
            request_id,
            getattr(error, "status_code", None),
        )


# --------------------------------------------------------------------------- the loop

_S = TypeVar("_S")
_T = TypeVar("_T")
_T_co = TypeVar("_T_co", covariant=True)


class AttemptCall(Protocol[_S, _T_co]):
    """What a call does at each step of :class:`Attempts` (``canny._call.CallRun``)."""

    policy: RetryPolicy

    def start_attempt(self) -> _S:
        """Begin an attempt and return its state."""

    def failed(self, attempt: _S, error: CannyError) -> float:
        """The attempt failed: the delay before the next one, or raise the call's error."""

    def aborted(self, attempt: _S) -> None:
        """The caller stopped the attempt (a closed stream, Ctrl-C, a cancelled task)."""

    def succeeded(self, attempt: _S) -> _T_co:
        """The attempt got its answer: the call's result."""


class Attempt(Generic[_S, _T]):
    """One attempt; leaving its ``with`` block decides what happens next.

    No exception: the call succeeded. A :class:`~canny.errors.CannyError`, or an SDK or
    transport error that ``translate`` maps to one: the call's ``failed`` either returns
    a delay (the error is swallowed and :class:`Attempts` sleeps, then tries again) or
    raises the error the caller sees. Anything else (``KeyboardInterrupt``, a closed
    generator, a cancelled task, an error canny does not know): the attempt is aborted
    and the exception goes on unchanged.
    """

    __slots__ = ("_attempts", "delay", "state")

    def __init__(self, attempts: Attempts[_S, _T], state: _S) -> None:
        self._attempts = attempts
        self.state = state
        self.delay: float | None = None

    def __enter__(self) -> _S:
        return self.state

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        call = self._attempts.call
        if exc is None:
            self._attempts.finish(call.succeeded(self.state))
            return False
        error = self._attempts.translate(exc) if isinstance(exc, Exception) else None
        if error is None:
            call.aborted(self.state)
            return False
        if error is exc:
            self.delay = call.failed(self.state, error)
            return True
        try:  # an SDK error: go on from its canny error, cut from the SDK's (it holds the request)
            raise error from None
        except CannyError:
            error.__context__ = None
            self.delay = call.failed(self.state, error)
        return True


def _canny_only(exc: BaseException) -> CannyError | None:
    return exc if isinstance(exc, CannyError) else None


class Attempts(Generic[_S, _T]):
    """The attempt loop of one call: iterate (``for`` or ``async for``) and run each
    attempt in ``with attempt:``; :attr:`result` holds what the call returned.

    ``translate`` maps a foreign exception to a canny error (``None``: not one it knows);
    sleeping uses the policy's ``sleep``, or ``asyncio.sleep`` in async code when the
    policy keeps the default ``time.sleep``.
    """

    def __init__(
        self, call: AttemptCall[_S, _T], *, translate: Callable[[BaseException], CannyError | None] = _canny_only
    ) -> None:
        self.call = call
        self.translate = translate
        self._done = False
        self._result: _T | None = None

    @property
    def result(self) -> _T:
        """The call's result, once an attempt succeeded."""
        if not self._done:
            raise RuntimeError("the call has not succeeded")
        return self._result  # type: ignore[return-value]

    def finish(self, result: _T) -> None:
        self._done, self._result = True, result

    def __iter__(self) -> Iterator[Attempt[_S, _T]]:
        while not self._done:
            attempt = Attempt(self, self.call.start_attempt())
            yield attempt
            if attempt.delay is not None:
                self.call.policy.sleep(attempt.delay)
            elif not self._done:
                raise RuntimeError("an attempt was not run in its `with` block")

    async def __aiter__(self) -> AsyncIterator[Attempt[_S, _T]]:
        sleep = self.call.policy.sleep
        while not self._done:
            attempt = Attempt(self, self.call.start_attempt())
            yield attempt
            if attempt.delay is not None:
                if sleep is time.sleep:
                    await asyncio.sleep(attempt.delay)
                else:
                    sleep(attempt.delay)
            elif not self._done:
                raise RuntimeError("an attempt was not run in its `with` block")
