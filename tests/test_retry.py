"""The one retry policy: what is retried, how long it waits, when it stops."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from canny import errors
from canny.retry import RetryPolicy, parse_retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _policy(**kwargs: object) -> RetryPolicy:
    clock = FakeClock()
    return RetryPolicy(clock=clock, rng=lambda: 1.0, sleep=lambda s: None, **kwargs)  # type: ignore[arg-type]


def test_retry_after_ms_beats_retry_after() -> None:
    """retry-after-ms is read first, in milliseconds."""
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "5"}) == 0.25


def test_retry_after_seconds_and_date() -> None:
    """retry-after may be seconds (float) or an HTTP date."""
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "Wed, 25 Nov 2026 12:00:30 GMT"}, now=lambda: now) == 30.0


@pytest.mark.parametrize("value", ["0", "-3", "soon", ""])
def test_unusable_retry_after_is_ignored(value: str) -> None:
    """Zero, negative and unparseable values fall back to backoff (None)."""
    assert parse_retry_after({"retry-after": value}) is None


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (errors.RateLimited("x", status_code=429), True),
        (errors.Overloaded("x", status_code=529), True),
        (errors.ServerError("x", status_code=500), True),
        (errors.ServerError("x", status_code=408), True),
        (errors.ConnectionFailed("x"), True),
        (errors.TimeoutError("x"), True),
        (errors.Overloaded("x", status_code=200, error_type="overloaded_error"), True),
        (errors.RequestRejected("x", status_code=400), False),
        (errors.RequestRejected("x", status_code=400, should_retry=True), False),
        (errors.AuthenticationError("x", status_code=401), False),
        (errors.AuthenticationError("x", status_code=403), False),
        (errors.RequestRejected("x", status_code=404), False),
        (errors.RequestRejected("x", status_code=413), False),
        (errors.RequestRejected("x", status_code=422), False),
        (errors.SpendLimitReached("x", status_code=429), False),
        (errors.ServerError("x", status_code=500, should_retry=False), False),
        (errors.RequestRejected("x", status_code=425, should_retry=True), True),
        (errors.ConfigError("x"), False),
    ],
)
def test_retry_table(error: errors.CannyError, retryable: bool) -> None:
    """The DESIGN 3.3 table: transient errors retry; 4xx, spend limits and vetoes never do."""
    assert _policy().is_retryable(error) is retryable


def test_server_delay_is_taken_exactly() -> None:
    """A retry-after within the cap is slept exactly, without jitter."""
    state = _policy().start()
    state.begin_attempt()
    assert state.next_delay(errors.RateLimited("x", status_code=429, retry_after=1.0)) == 1.0


def test_server_delay_above_cap_gives_up() -> None:
    """A retry-after above the cap ends the retries instead of sleeping for an hour."""
    state = _policy(max_delay=60).start()
    state.begin_attempt()
    assert state.next_delay(errors.RateLimited("x", status_code=429, retry_after=3600)) is None
    assert "3600" in (state.gave_up_because or "")


def test_backoff_is_capped_full_jitter() -> None:
    """Backoff is uniform(0, min(cap, initial * 2**n)): rng=1 gives the ceiling."""
    policy = _policy(initial_delay=0.5, max_delay=4.0)
    assert [policy.backoff(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    low = RetryPolicy(rng=lambda: 0.25, initial_delay=0.5)
    assert low.backoff(2) == 0.5


def test_attempts_bound() -> None:
    """After max_attempts the loop stops."""
    state = _policy(max_attempts=3).start()
    delays = []
    for _ in range(3):
        state.begin_attempt()
        delays.append(state.next_delay(errors.Overloaded("x", status_code=529)))
    assert delays[:2] != [None, None]
    assert delays[2] is None
    assert "3 attempts" in (state.gave_up_because or "")


def test_deadline_bound() -> None:
    """A delay that would pass the total deadline stops the loop."""
    clock = FakeClock()
    policy = RetryPolicy(clock=clock, rng=lambda: 1.0, deadline=10.0, max_delay=60.0)
    state = policy.start()
    state.begin_attempt()
    clock.now = 9.5
    assert state.next_delay(errors.RateLimited("x", status_code=429, retry_after=1.0)) is None


def test_status_rules_are_the_one_classification_table() -> None:
    """STATUS_RULES decides the class of every listed status and is_retryable follows its retry column."""
    from canny.retry import STATUS_RULES, Retry, error_class, is_retryable

    for status, rule in STATUS_RULES.items():
        assert error_class(status, None, None) is rule.error
        error = rule.error("x", status_code=status)
        assert is_retryable(error) is (rule.retry is Retry.YES)


@pytest.mark.parametrize("status", [402, 429])
def test_a_spend_limit_is_never_retried_even_when_the_server_asks(status: int) -> None:
    """A spend limit (402, or a 429 with a spend-limit code) is never retried, x-should-retry: true or not."""
    from canny.retry import error_class, is_retryable

    cls = error_class(status, "rate_limit_error", "workspace_spend_limit_reached")
    assert cls is errors.SpendLimitReached
    assert not is_retryable(cls("limit", status_code=status, should_retry=True))


def test_error_type_rules_classify_in_band_errors() -> None:
    """ERROR_TYPE_RULES maps each in-band error.type to its class; unknown types are server errors."""
    from canny.retry import ERROR_TYPE_RULES, event_error_class

    for etype, rule in ERROR_TYPE_RULES.items():
        assert event_error_class(etype) is rule.error
    assert event_error_class("something_new") is errors.ServerError


def test_attempt_loop_retries_then_returns_the_result() -> None:
    """Attempts sleeps the delay failed() returns, starts a new attempt, and keeps succeeded()'s result."""
    from canny.retry import Attempts

    slept: list[float] = []

    class Call:
        policy = RetryPolicy(sleep=slept.append)

        def __init__(self) -> None:
            self.started = 0

        def start_attempt(self) -> int:
            self.started += 1
            return self.started

        def failed(self, attempt: int, error: errors.CannyError) -> float:
            return 0.25

        def aborted(self, attempt: int) -> None:
            raise AssertionError("not aborted")

        def succeeded(self, attempt: int) -> str:
            return f"answer {attempt}"

    attempts = Attempts(Call())
    for attempt in attempts:
        with attempt as number:
            if number < 3:
                raise errors.Overloaded("busy", status_code=529)
    assert (attempts.result, slept) == ("answer 3", [0.25, 0.25])
