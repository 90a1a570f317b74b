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

import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import partial
from typing import TYPE_CHECKING, Any, Self

from canny.errors import APIError, ConfigError, SessionLimitReached
from canny.usage import Usage

if TYPE_CHECKING:
    from canny._call import CallRun, CallSpec
    from canny._client_base import ClientBase
    from canny.caching import CacheMode, CacheTTL
    from canny.client import AsyncClient, AsyncMessageStream, Client, MessageStream
    from canny.result import CallResult

__all__ = ["AsyncSession", "Session", "SessionTotals"]

Prompt = str | Sequence[Mapping[str, Any]]


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


class _Caps:
    """The caps, the running totals, and the check made before every call."""

    def __init__(
        self,
        client: ClientBase,
        *,
        max_cost: Decimal | float | str | None,
        max_iterations: int | None,
        max_wall_time: float | None,
        clock: Callable[[], float],
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
        self.id = uuid.uuid4().hex
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

    def _check(self, prompt: Prompt, kwargs: dict[str, Any], *, stream: bool) -> tuple[CallSpec, Decimal | None]:
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
        spec = self.client._spec(prompt, stream=stream, session_id=self.id, **_spec_args(kwargs))
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

    def _record_result(self, result: CallResult | None, worst: Decimal | None, started: float) -> None:
        if result is not None:
            self._record(result.cost, result.usage, worst, started)

    def _record_run(self, run: CallRun, worst: Decimal | None, started: float) -> None:
        if run.attempts:
            self._record(run.total_cost(), run.total_usage(), worst, started)

    def _counted(self, worst: Decimal | None) -> Callable[[CallRun], None]:
        """What a stream calls when it ends: add its call to the totals."""
        return partial(self._record_run, worst=worst, started=self.clock())


_SPEC_KEYS = ("system", "model", "max_tokens", "project", "tags", "max_cost", "cache", "cache_ttl")


def _spec_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split call keywords into ``ClientBase._spec`` arguments (the rest are API params)."""
    args = {k: kwargs.get(k) for k in _SPEC_KEYS}
    args["params"] = {k: v for k, v in kwargs.items() if k not in _SPEC_KEYS}
    return args


def _call_args(
    system: str | Sequence[Mapping[str, Any]] | None,
    model: str | None,
    max_tokens: int | None,
    project: str | None,
    tags: Iterable[str] | None,
    max_cost: Decimal | float | str | None,
    cache: CacheMode | None,
    cache_ttl: CacheTTL | None,
    params: dict[str, Any],
) -> dict[str, Any]:
    if "session_id" in params:
        raise TypeError("a session sets session_id itself")
    tags = tuple(tags) if tags is not None else None
    return {"system": system, "model": model, "max_tokens": max_tokens, "project": project, "tags": tags,
            "max_cost": max_cost, "cache": cache, "cache_ttl": cache_ttl, **params}  # fmt: skip


class Session(_Caps):
    """A capped run of calls on a :class:`~canny.client.Client` (see the module docstring)."""

    client: Client

    def __init__(
        self,
        client: Client,
        *,
        max_cost: Decimal | float | str | None = None,
        max_iterations: int | None = None,
        max_wall_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            client, max_cost=max_cost, max_iterations=max_iterations, max_wall_time=max_wall_time, clock=clock
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()

    def create(
        self,
        prompt: Prompt,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        max_cost: Decimal | float | str | None = None,
        cache: CacheMode | None = None,
        cache_ttl: CacheTTL | None = None,
        **params: Any,
    ) -> CallResult:
        """``Client.create`` within the session's caps."""
        kwargs = _call_args(system, model, max_tokens, project, tags, max_cost, cache, cache_ttl, params)
        _, worst = self._check(prompt, kwargs, stream=False)
        started = self.clock()
        try:
            result = self.client.create(prompt, session_id=self.id, **kwargs)
        except APIError as exc:
            self._record_result(exc.result, worst, started)
            raise
        self._record_result(result, worst, started)
        return result

    def stream(
        self,
        prompt: Prompt,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        max_cost: Decimal | float | str | None = None,
        cache: CacheMode | None = None,
        cache_ttl: CacheTTL | None = None,
        **params: Any,
    ) -> MessageStream:
        """``Client.stream`` within the session's caps; the call counts once the stream
        ends (finished, failed or closed early)."""
        kwargs = _call_args(system, model, max_tokens, project, tags, max_cost, cache, cache_ttl, params)
        spec, worst = self._check(prompt, kwargs, stream=True)
        return self.client._stream(spec, on_end=self._counted(worst))


class AsyncSession(_Caps):
    """The async twin of :class:`Session` (``async with client.session(...) as s``)."""

    client: AsyncClient

    def __init__(
        self,
        client: AsyncClient,
        *,
        max_cost: Decimal | float | str | None = None,
        max_iterations: int | None = None,
        max_wall_time: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            client, max_cost=max_cost, max_iterations=max_iterations, max_wall_time=max_wall_time, clock=clock
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.end()

    async def create(
        self,
        prompt: Prompt,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        max_cost: Decimal | float | str | None = None,
        cache: CacheMode | None = None,
        cache_ttl: CacheTTL | None = None,
        **params: Any,
    ) -> CallResult:
        """``AsyncClient.create`` within the session's caps."""
        kwargs = _call_args(system, model, max_tokens, project, tags, max_cost, cache, cache_ttl, params)
        _, worst = self._check(prompt, kwargs, stream=False)
        started = self.clock()
        try:
            result = await self.client.create(prompt, session_id=self.id, **kwargs)
        except APIError as exc:
            self._record_result(exc.result, worst, started)
            raise
        self._record_result(result, worst, started)
        return result

    def stream(
        self,
        prompt: Prompt,
        *,
        system: str | Sequence[Mapping[str, Any]] | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        max_cost: Decimal | float | str | None = None,
        cache: CacheMode | None = None,
        cache_ttl: CacheTTL | None = None,
        **params: Any,
    ) -> AsyncMessageStream:
        """``AsyncClient.stream`` within the session's caps."""
        kwargs = _call_args(system, model, max_tokens, project, tags, max_cost, cache, cache_ttl, params)
        spec, worst = self._check(prompt, kwargs, stream=True)
        return self.client._stream(spec, on_end=self._counted(worst))
