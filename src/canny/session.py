"""Agent loops with caps that stop *before* the call that could cross them.

::

    with client.session(max_cost="0.50", max_iterations=20, max_wall_time=300) as s:
        messages = [{"role": "user", "content": task}]
        while True:
            try:
                result = s.create(messages, tools=TOOLS)
            except SessionLimitReached as stop:
                print(f"stopped: {stop.reason}; {stop.totals.calls} calls, ${stop.totals.cost}")
                break
            ...                         # run the tools, append the turns, loop

:class:`Session` (and :class:`AsyncSession`) offer ``create`` and ``stream`` with the
client's signature; every call carries the session's ``session_id``, so its ledger rows
share it. Before each call the session checks, in this order:

``iterations``
    the number of calls made so far would exceed ``max_iterations``;
``wall_time``
    the time since the session began plus the longest call so far would pass
    ``max_wall_time`` seconds (a projection: a call longer than every earlier one can
    still end past the cap, by its excess);
``cost``
    the cost so far plus the call's worst case would exceed ``max_cost``. The worst case
    is that of exactly what is about to be sent (``CallSpec.worst_case``, the same figure
    a budget reserves): the whole context passed (system, messages, tools) estimated high,
    cache-aware (a prompt marked for caching is priced at the cache-write rate, since a
    hit cannot be promised), plus ``max_tokens`` of output. A model without a price
    cannot be checked, so it is stopped too.

A stop raises :class:`~canny.errors.SessionLimitReached` (a ``BudgetExceeded``: exit
code 4 in the CLI) with ``reason``, ``cap`` and ``totals``; nothing is sent. Calls that
failed count with what they cost (the API bills a failed attempt's input once it started
streaming); a call whose cost could not be priced counts at its worst case. The daily
and monthly budgets of :mod:`canny.budget` still apply to every call, independently.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from canny._client_base import ClientBase, Prompt, call_signature, signature_of, spec_args
from canny.errors import APIError, ConfigError, SessionLimitReached
from canny.ids import new_id
from canny.usage import Usage

if TYPE_CHECKING:
    from canny._call import CallRun, CallSpec
    from canny.client import AsyncClient, AsyncMessageStream, Client, MessageStream  # noqa: F401 (Client: in a base)
    from canny.result import CallResult

__all__ = ["AsyncSession", "Session", "SessionTotals", "cap_signature"]


@dataclass(frozen=True, slots=True)
class SessionTotals:
    """What a session used: calls made, their ``cost`` (dollars; a call that could not be
    priced counts at its worst case, and ``unpriced`` says how many did), ``usage`` summed
    over every attempt, and ``elapsed`` seconds since the session began."""

    calls: int
    cost: Decimal
    usage: Usage = field(default_factory=Usage)
    elapsed: float = 0.0
    unpriced: int = 0


def _cost_cap(value: Decimal | float | str | None) -> Decimal | None:
    if value is None:
        return None
    from canny.config import parse_money

    return parse_money(value, "max_cost")


_ClientT = TypeVar("_ClientT", bound=ClientBase)


def cap_keywords(
    *,
    max_cost: Decimal | float | str | None = None,
    max_iterations: int | None = None,
    max_wall_time: float | None = None,
) -> None:
    """The caps a session takes (``client.session(...)``): see the module docstring."""


#: ``@cap_signature`` on ``Client.session``: its keywords are those of :func:`cap_keywords`.
cap_signature = signature_of(cap_keywords)


class _Caps(Generic[_ClientT]):
    """The caps, the running totals, and the check made before every call."""

    def __init__(
        self,
        client: _ClientT,
        *,
        max_cost: Decimal | float | str | None = None,
        max_iterations: int | None = None,
        max_wall_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_iterations is not None and (isinstance(max_iterations, bool) or max_iterations < 0):
            raise ConfigError(f"max_iterations must be a non-negative whole number, not {max_iterations!r}")
        if max_wall_time is not None and not max_wall_time > 0:
            raise ConfigError(f"max_wall_time must be a positive number of seconds, not {max_wall_time!r}")
        self.client = client
        self.max_cost = _cost_cap(max_cost)
        self.max_iterations = max_iterations
        self.max_wall_time = max_wall_time
        self.clock = clock
        #: Shared by every ledger row of this session.
        self.id = new_id()
        self.started = clock()
        self._ended_at: float | None = None
        self._calls = 0
        self._cost = Decimal(0)
        self._unpriced = 0
        self._usage = Usage()
        self._longest = 0.0

    @property
    def totals(self) -> SessionTotals:
        """Calls, cost, usage and elapsed time so far."""
        end = self.clock() if self._ended_at is None else self._ended_at
        return SessionTotals(self._calls, self._cost, self._usage, end - self.started, self._unpriced)

    def end(self) -> None:
        """End the session (leaving its ``with`` block does this): no more calls, and
        ``totals.elapsed`` stops."""
        if self._ended_at is None:
            self._ended_at = self.clock()

    def _stop(self, reason: str, message: str, cap: Decimal | int | float, needed: Decimal | None = None) -> None:
        raise SessionLimitReached(
            f"session stopped before call {self._calls + 1}: {message}",
            reason=reason,
            cap=cap,
            totals=self.totals,
            needed=needed,
            hint="end the loop here, or start a session with a higher cap; the totals are in the error's .totals",
        )

    def _check(self, prompt: Prompt, options: dict[str, Any], *, stream: bool) -> tuple[CallSpec, Decimal | None]:
        """Raise :class:`SessionLimitReached` if the next call could cross a cap; return the
        call's spec, and its worst case when a cost cap needs it."""
        if self._ended_at is not None:
            raise ConfigError("this session has ended; start a new one with client.session(...)")
        if self.max_iterations is not None and self._calls >= self.max_iterations:
            self._stop(
                "iterations", f"{self._calls} calls made, max_iterations is {self.max_iterations}", self.max_iterations
            )
        if self.max_wall_time is not None:
            elapsed = self.clock() - self.started
            if elapsed + self._longest > self.max_wall_time:
                self._stop(
                    "wall_time",
                    f"{elapsed:.1f} s elapsed and the next call may take {self._longest:.1f} s (the longest so "
                    f"far), past max_wall_time of {self.max_wall_time:g} s",
                    self.max_wall_time,
                )
        spec = self.client._spec(prompt, stream=stream, **spec_args({**options, "session_id": self.id}))
        if self.max_cost is None:
            return spec, None
        from canny.budget import affordable_max_tokens
        from canny.pricing import format_usd

        worst = spec.worst_case()
        left = Fraction(self.max_cost) - Fraction(self._cost)  # exact: a Decimal difference rounds
        if worst is None:
            self._stop("cost", f"{spec.model} has no price, so max_cost cannot be checked", self.max_cost)
        elif affordable_max_tokens(spec.max_tokens, worst=worst, headroom=left) is None:  # a session never lowers
            self._stop(
                "cost",
                f"{format_usd(self._cost)} spent and the next call could cost up to {format_usd(worst)}, "
                f"over max_cost of {format_usd(self.max_cost)}",
                self.max_cost,
                needed=worst,
            )
        return spec, worst

    def _record(self, run_cost: Decimal | None, usage: Usage, worst: Decimal | None, started: float) -> None:
        self._calls += 1
        if run_cost is None:
            self._unpriced += 1
            run_cost = worst or Decimal(0)
        self._cost += run_cost
        self._usage = self._usage + usage
        self._longest = max(self._longest, self.clock() - started)

    @contextlib.contextmanager
    def _counted_call(self, prompt: Prompt, options: dict[str, Any]) -> Iterator[_Counted]:
        """A non-streamed call within the caps: checked before it is sent; counted with
        :meth:`_Counted.done`, or, failed, with what its error says it cost."""
        options = _session_options(options)
        _, worst = self._check(prompt, options, stream=False)
        call = _Counted(self, options, worst, self.clock())
        try:
            yield call
        except APIError as exc:
            if exc.result is not None:
                call.done(exc.result)
            raise

    def _record_run(self, run: CallRun, worst: Decimal | None, started: float) -> None:
        if run.attempts:
            self._record(run.total_cost(), run.total_usage(), worst, started)

    def _counted(self, worst: Decimal | None) -> Callable[[CallRun], None]:
        """What a stream calls when it ends: add its call to the totals."""
        return partial(self._record_run, worst=worst, started=self.clock())


@dataclass(frozen=True, slots=True)
class _Counted:
    """A non-streamed session call: its checked keywords, and what counting it needs."""

    caps: _Caps[Any]
    options: dict[str, Any]
    worst: Decimal | None
    started: float

    def done(self, result: CallResult) -> CallResult:
        self.caps._record(result.cost, result.usage, self.worst, self.started)
        return result


def _session_options(options: dict[str, Any]) -> dict[str, Any]:
    """A session call's keywords, checked by the caps and then sent: a session sets
    ``session_id`` itself, and ``tags`` are read twice, so an iterator is taken once."""
    if "session_id" in options:
        raise TypeError("a session sets session_id itself")
    if options.get("tags") is not None:
        options["tags"] = tuple(options["tags"])
    return options


class Session(_Caps["Client"]):
    """A capped run of calls on a :class:`~canny.client.Client` (see the module docstring)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    @call_signature
    def create(self, prompt: Prompt, **options: Any) -> CallResult:
        """``Client.create`` within the session's caps."""
        with self._counted_call(prompt, options) as call:
            return call.done(self.client.create(prompt, session_id=self.id, **call.options))

    @call_signature
    def stream(self, prompt: Prompt, **options: Any) -> MessageStream:
        """``Client.stream`` within the session's caps; the call counts once the stream
        ends (finished, failed or closed early)."""
        options = _session_options(options)
        spec, worst = self._check(prompt, options, stream=True)
        return self.client._stream(spec, on_end=self._counted(worst))


class AsyncSession(_Caps["AsyncClient"]):
    """The async twin of :class:`Session` (``async with client.session(...) as s``)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.end()

    @call_signature
    async def create(self, prompt: Prompt, **options: Any) -> CallResult:
        """``AsyncClient.create`` within the session's caps."""
        with self._counted_call(prompt, options) as call:
            return call.done(await self.client.create(prompt, session_id=self.id, **call.options))

    @call_signature
    def stream(self, prompt: Prompt, **options: Any) -> AsyncMessageStream:
        """``AsyncClient.stream`` within the session's caps."""
        options = _session_options(options)
        spec, worst = self._check(prompt, options, stream=True)
        return self.client._stream(spec, on_end=self._counted(worst))
