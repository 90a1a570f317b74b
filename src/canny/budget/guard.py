"""Guards: what reserves a call's worst case before it is sent, and the reservations.

A guard (a :class:`Reserver`) takes the call about to be sent (a :class:`CallLike`:
``canny``'s own ``CallSpec`` is one) and returns a :class:`Reservation` holding its worst
case, possibly at a lower ``max_tokens``, or raises :class:`~canny.errors.BudgetExceeded`.
:class:`MaxCostGuard` enforces a per-call ``max_cost`` in memory; :class:`BudgetGuard`
holds the worst case against every stored and profile budget in scope, in one
transaction of the ledger. Both lower ``max_tokens`` by the one rule,
:func:`~canny.budget.clamp.affordable_max_tokens`.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from canny.budget import alerts, store
from canny.budget.clamp import MIN_MAX_TOKENS, affordable_max_tokens, worst_case_at
from canny.budget.limits import Budget, BudgetStatus, Clock, Window, as_ledger, dollars, limits_stamp, utc_now
from canny.errors import BudgetExceeded, CannyWarning, LedgerError
from canny.pricing import format_usd as _usd
from canny.units import to_us, usd_to_pico

if TYPE_CHECKING:
    from canny.budget.slices import SliceReservation
    from canny.ledger import Ledger

__all__ = [
    "BudgetGuard",
    "CallLike",
    "LedgerReservation",
    "MaxCostGuard",
    "NoReservation",
    "Reservation",
    "Reserver",
]


class CallLike(Protocol):
    """What a guard reserves against: the call about to be sent (``canny``'s ``CallSpec``)."""

    @property
    def model(self) -> str: ...
    @property
    def max_tokens(self) -> int: ...
    @property
    def project(self) -> str | None: ...
    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def key_fingerprint(self) -> str | None: ...
    @property
    def call_id(self) -> str: ...

    def worst_case(self, max_tokens: int | None = None) -> Decimal | None:
        """The call's highest possible cost at ``max_tokens`` of output (default: its own);
        ``None`` when its model has no price."""
        ...


class Reservation(Protocol):
    """A budget reservation held for the duration of one call."""

    max_tokens: int

    def settle(self, cost: Decimal | None) -> None:
        """Replace the reservation by the actual cost."""

    def release(self) -> None:
        """Drop the reservation (nothing was sent)."""

    def renew(self, seconds: float | None = None) -> bool:
        """Extend the reservation's lease (before a retry); ``False`` if it already ended."""


class NoReservation:
    """The reservation of a call that no budget limits: holds nothing."""

    def __init__(self, max_tokens: int) -> None:
        self.max_tokens = max_tokens

    def settle(self, cost: Decimal | None) -> None:
        return None

    def release(self) -> None:
        return None

    def renew(self, seconds: float | None = None) -> bool:
        return True


class Reserver(Protocol):
    """Anything that can reserve a call's worst case against budgets."""

    def reserve(self, spec: CallLike) -> Reservation:
        """Reserve ``spec``'s worst case, possibly lowering ``max_tokens``; may raise
        :class:`~canny.errors.BudgetExceeded`."""


# --- per call ------------------------------------------------------------------------------


class MaxCostGuard:
    """The per-call ``max_cost``: in memory, lowers ``max_tokens`` or refuses."""

    def __init__(self, limit: Decimal) -> None:
        self.limit = limit

    def reserve(self, spec: CallLike) -> NoReservation:
        worst = spec.worst_case()
        if worst is None:
            raise BudgetExceeded(
                f"max_cost {_usd(self.limit)} cannot be enforced: {spec.model} has no known price",
                budget="call",
                limit=self.limit,
                hint="add the model's rates to your prices.toml, or drop --max-cost for this model",
            )
        floor = spec.worst_case(0) or Decimal(0)
        affordable = affordable_max_tokens(spec.max_tokens, worst=worst, headroom=self.limit, floor=floor)
        if affordable is None:
            raise BudgetExceeded(
                f"this call could cost up to {_usd(worst)}, over its max_cost of {_usd(self.limit)}",
                budget="call",
                limit=self.limit,
                spent=Decimal(0),
                reserved=Decimal(0),
                needed=worst,
                hint="raise --max-cost, shorten the prompt, or lower --max-tokens",
            )
        if affordable < spec.max_tokens:
            warnings.warn(
                f"max_tokens lowered from {spec.max_tokens} to {affordable} to stay within max_cost {_usd(self.limit)}",
                CannyWarning,
                stacklevel=3,
            )
        return NoReservation(affordable)


# --- stored and profile budgets ------------------------------------------------------------


@functools.cache
def _host() -> str:
    return socket.gethostname()


@functools.cache
def _slices() -> ModuleType:
    """:mod:`canny.budget.slices`, imported on the first PostgreSQL reservation, or SQLite
    one behind the call (it registers an exit hook)."""
    from canny.budget import slices

    return slices


class LedgerReservation:
    """A call's hold on its budgets; :meth:`settle` or :meth:`release` ends it (once)."""

    def __init__(self, guard: BudgetGuard, rid: int, counter_ids: list[int], amount: int, max_tokens: int) -> None:
        self.guard = guard
        self.id = rid
        self.counter_ids = counter_ids
        self._pico = amount
        #: The worst case held, in dollars.
        self.amount = dollars(amount)
        self.max_tokens = max_tokens
        self.done = False

    def settle(self, cost: Decimal | None) -> None:
        """Replace the hold by the call's actual cost (``None``, unpriced: the worst case
        is charged). A ledger failure here is a warning: the lease then ends the hold."""
        charge = None if cost is None else usd_to_pico(cost)
        fired: list[alerts.Alert] = []
        now_us = to_us(self.guard.clock())
        self._end(lambda db: fired.extend(store.settle(db, self.id, self.counter_ids, self._pico, charge, now_us)))
        alerts.deliver(fired)  # budget alerts: after commit, outside any lock; never raises

    def release(self) -> None:
        """Drop the hold without a charge (nothing was sent)."""
        self._end(lambda db: store.release(db, self.id))

    def renew(self, seconds: float | None = None) -> bool:
        """Extend the lease to ``seconds`` (default: the guard's lease) from now; ``False``
        when the reservation already ended or its lease ran out."""
        if self.done:
            return False
        until = self.guard.clock() + timedelta(seconds=seconds or self.guard.lease)
        return store.renew(self.guard.db, self.id, to_us(until))

    def _end(self, action: Callable[[store.BudgetLedger], None]) -> None:
        if self.done:
            return
        self.done = True
        try:
            action(self.guard.db)
        except LedgerError as exc:
            warnings.warn(f"budget reservation not settled ({exc}); its lease will end it", CannyWarning, stacklevel=3)


def _pico_up(amount: Decimal) -> int:
    return math.ceil(amount.scaleb(12))


class _Lazy:
    """An amount worked out on first use, then kept."""

    __slots__ = ("_make", "_value")

    def __init__(self, make: Callable[[], int]) -> None:
        self._make = make
        self._value: int | None = None

    def __call__(self) -> int:
        if self._value is None:
            self._value = self._make()
        return self._value


@dataclass(frozen=True, slots=True)
class _Decision:
    amount: int | None
    max_tokens: int
    tightest: Budget
    status: BudgetStatus


#: Each budget's counter key of the window last seen, shared by the guards of this process
#: (the client makes one per call): worked out once per window.
_KEYS: dict[Budget, store.CounterKey] = {}
_MAX_KEYS = 1024


class BudgetGuard:
    """Reserves each call's worst case against the budgets that apply to it (a
    :class:`Reserver`). ``lease``: seconds a reservation lives unless settled or renewed;
    ``clock``: the current UTC time (injectable for tests); ``stamp``: the
    :func:`~canny.budget.limits.limits_stamp` the budgets were read at (``guard_for`` gives
    it; else it is read before a slice is used)."""

    def __init__(
        self,
        ledger: Ledger,
        budgets: Iterable[Budget],
        *,
        lease: float = 1320.0,
        clock: Clock | None = None,
        stamp: tuple[object, ...] | None = None,
    ) -> None:
        self.db = as_ledger(ledger)
        self.budgets = tuple(budgets)
        self.lease = lease
        self.clock: Clock = clock or utc_now
        self.owner = f"{_host()}:{os.getpid()}"
        self._postgres = getattr(self.db, "dialect", None) == "postgres"
        #: SQLite with rows written behind the call (a client's or meter's ledger): a hot
        #: counter set reserves from a slice in memory (:func:`canny.budget.slices.take`).
        self._sliced = not self._postgres and bool(getattr(self.db, "writes_behind", False))
        self.stamp = stamp
        #: Each budget's limit in whole pico-dollars (rounded down), worked out once.
        self._limits = [math.floor(b.limit.scaleb(12)) for b in self.budgets]

    def _key(self, index: int, now: datetime, now_us: int) -> store.CounterKey:
        """Budget ``index``'s counter key at ``now``: worked out once per window."""
        budget = self.budgets[index]
        key = _KEYS.get(budget)
        if key is None or not key.start_us <= now_us < key.end_us:
            key = budget.counter_key(now)
            if len(_KEYS) >= _MAX_KEYS:
                _KEYS.clear()
            _KEYS[budget] = key
        return key

    def reserve(self, spec: CallLike) -> LedgerReservation | NoReservation | SliceReservation:
        """Hold ``spec``'s worst case against every budget in scope, in one transaction (or,
        for a busy process, from its slice in memory: :mod:`canny.budget.slices`); lower
        ``spec``'s ``max_tokens`` (returned in ``.max_tokens``) or raise
        :class:`~canny.errors.BudgetExceeded` when it does not fit. A call that does not fit
        while this process's earlier calls still hold their worst cases (their settles wait
        on the ledger's writer for their group) waits for those settles and is decided again."""
        return self._reserve(spec, settled=False)

    def _settles_waiting(self) -> bool:
        """Whether settles this process queued wait on the ledger's writer (:meth:`reserve`)."""
        waiting = getattr(self.db, "settles_waiting", None)
        return waiting is not None and bool(waiting())

    def _reserve(self, spec: CallLike, *, settled: bool) -> LedgerReservation | NoReservation | SliceReservation:
        chosen = [i for i, b in enumerate(self.budgets) if b.scope.matches(spec)]
        if not chosen:
            return NoReservation(spec.max_tokens)
        applicable = [self.budgets[i] for i in chosen]
        worst = spec.worst_case()
        if worst is None:
            raise _unpriced(spec, applicable[0])
        full = _pico_up(worst)
        # The worst case with no output: asked only when the call does not fit as it is.
        floor = _Lazy(lambda: _pico_up(spec.worst_case(0) or Decimal(0)))
        now = self.clock()
        now_us = to_us(now)
        keys = [self._key(i, now, now_us) for i in chosen]
        if self._postgres:  # no global lock: canny.budget.slices
            slices = _slices()
            held: SliceReservation | tuple[int | None, list[int], _Decision] = slices.reserve(
                self.db, owner=self.owner, lease=self.lease, call_id=spec.call_id, max_tokens=spec.max_tokens,
                limits=[self._limits[i] for i in chosen], keys=keys, now_us=now_us, full=full,
                decide=lambda states: _decide(applicable, states, now, spec.max_tokens, full, floor),
            )  # fmt: skip
            if not isinstance(held, tuple):  # a slice's
                return held
            rid, ids, decision = held
        else:
            if self._sliced:
                taken: SliceReservation | None = _slices().take(
                    self.db, owner=self.owner, lease=self.lease, max_tokens=spec.max_tokens,
                    stamp=self.stamp if self.stamp is not None else limits_stamp(self.db),
                    limits=[self._limits[i] for i in chosen], keys=keys, now_us=now_us, full=full,
                )  # fmt: skip
                if taken is not None:
                    return taken
            rid, ids, decision = self._hold(spec, applicable, keys, now, full, floor)
        tight = rid is None or decision.amount is None or decision.max_tokens < spec.max_tokens
        if tight and not settled and self._settles_waiting():
            if rid is not None and decision.amount is not None:
                LedgerReservation(self, rid, ids, decision.amount, decision.max_tokens).release()
            getattr(self.db, "flush")()  # noqa: B009 - a ledger with settles waiting has a writer
            return self._reserve(spec, settled=True)
        if rid is None or decision.amount is None:
            least = worst_case_at(MIN_MAX_TOKENS, max_tokens=spec.max_tokens, worst=full, floor=floor())
            raise _refusal(decision.status, worst, math.ceil(least))
        if decision.max_tokens < spec.max_tokens:
            left = decision.status.headroom
            warnings.warn(
                f"max_tokens lowered from {spec.max_tokens} to {decision.max_tokens} to fit the "
                f"{decision.tightest.name} budget ({_usd(left)} left of {_usd(decision.tightest.limit)})",
                CannyWarning,
                stacklevel=4,
            )
        return LedgerReservation(self, rid, ids, decision.amount, decision.max_tokens)

    def _hold(
        self,
        spec: CallLike,
        budgets: list[Budget],
        keys: list[store.CounterKey],
        now: datetime,
        full: int,
        floor: _Lazy,
    ) -> tuple[int | None, list[int], _Decision]:
        """Decide and hold in one transaction under the budget lock (SQLite)."""
        now_us = to_us(now)
        with store.begin(self.db) as tx:
            self.db.sweep_lost_in(tx, now_us)
            store.expire(tx, now_us)
            states = store.counters(tx, keys, now_us)
            decision = _decide(budgets, states, now, spec.max_tokens, full, floor)
            rid = None
            ids = sorted({s.id for s in states})
            if decision.amount is not None:
                expires = to_us(now + timedelta(seconds=self.lease))
                rid = store.hold(
                    tx, call_id=spec.call_id, counter_ids=ids, amount=decision.amount,
                    now_us=now_us, expires_us=expires, owner=self.owner,
                )  # fmt: skip
        return rid, ids, decision


def _decide(
    budgets: list[Budget], states: list[store.CounterState], now: datetime, max_tokens: int, full: int, floor: _Lazy
) -> _Decision:
    """How much to hold (pico-dollars) and at what ``max_tokens``, against the tightest
    budget: :func:`~canny.budget.clamp.affordable_max_tokens` with its headroom (``floor``,
    the worst case with no output, is worked out only when the call does not fit)."""
    rooms = [
        (math.floor(b.limit.scaleb(12)) - s.spent - s.reserved, i)
        for i, (b, s) in enumerate(zip(budgets, states, strict=True))
    ]
    room, index = min(rooms)
    tight, state = budgets[index], states[index]
    status = BudgetStatus(tight, tight.window(now), dollars(state.spent), dollars(state.reserved))
    if full <= room:
        return _Decision(full, max_tokens, tight, status)
    affordable = affordable_max_tokens(max_tokens, worst=full, headroom=room, floor=floor())
    if affordable is None:
        return _Decision(None, max_tokens, tight, status)
    held = worst_case_at(affordable, max_tokens=max_tokens, worst=full, floor=floor())
    return _Decision(math.ceil(held), affordable, tight, status)


def _hint(budget: Budget, window: Window) -> str:
    flags = "".join(f" --{n} {v}" for n, v in budget.scope.items())
    where = (
        f"raise it with `canny budget set --{budget.period} AMOUNT{flags}`"
        if budget.source == "ledger"
        else f"raise budget.{budget.period} in the config profile"
    )
    resets = window.end.strftime("%Y-%m-%d %H:%M")
    return f"wait for the next {budget.period} ({resets} {budget.time_zone}), {where}, or shorten the prompt"


def _refusal(status: BudgetStatus, worst: Decimal, least: int) -> BudgetExceeded:
    b = status.budget
    return BudgetExceeded(
        f"the {b.period} budget for {b.scope} ({_usd(b.limit)}, {status.window.label} {b.time_zone}) has "
        f"{_usd(status.headroom)} left: {_usd(status.spent)} spent, {_usd(status.reserved)} reserved by calls "
        f"in flight; this call needs up to {_usd(worst)} (at least {_usd(dollars(least))} with "
        f"max_tokens={MIN_MAX_TOKENS})",
        budget=b.name,
        limit=b.limit,
        spent=status.spent,
        reserved=status.reserved,
        needed=worst,
        hint=_hint(b, status.window),
    )


def _unpriced(spec: CallLike, budget: Budget) -> BudgetExceeded:
    return BudgetExceeded(
        f"{spec.model} has no price, so its cost cannot be checked against the {budget.period} budget "
        f"for {budget.scope} ({_usd(budget.limit)})",
        budget=budget.name,
        limit=budget.limit,
        needed=None,
        hint="add the model's prices to your prices.toml (see `canny prices`), or use a priced model",
    )
