"""Budgets that no number of processes can overspend: per day and per month, in a time
zone, optionally per project, tag or key.

Budgets live in the ledger's database, so every process and machine that shares the
ledger shares them::

    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger("~/.local/share/canny/ledger.db")
    budget.set_budget(ledger, period="day", limit="5", time_zone="Europe/Paris")
    budget.set_budget(ledger, period="month", limit="100", project="acme")
    for line in budget.budget_status(ledger):
        print(line.budget.name, line.spent, line.reserved, line.headroom)

A config profile can add budgets of its own (``[profiles.NAME.budget]``, see
:func:`profile_budgets`); the CLI has ``canny budget set|show|reset``.

Before each call, :class:`BudgetGuard` reserves the call's worst case (``CallSpec.worst_case``)
against every budget in scope in one transaction. If it does not fit, ``max_tokens`` is
lowered to what the tightest budget affords (down to :data:`~canny._call.MIN_MAX_TOKENS`,
with a :class:`~canny._call.CannyWarning`) or the call is refused with
:class:`~canny.errors.BudgetExceeded` before anything is sent. When the call ends, the
reservation is replaced by the actual cost in one more transaction. Reservations carry a
lease, so a killed process pins a budget only until its lease ends. ``docs/budgets.md``
explains the guarantees and the bound on overspend.
"""

from __future__ import annotations

import functools
import math
import os
import socket
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from canny import _budget_store as store
from canny._call import MIN_MAX_TOKENS, NoReservation
from canny.errors import BudgetExceeded, CannyWarning, ConfigError, LedgerError
from canny.ledger._sql import pico_to_usd, sweep_inflight, to_us, usd_to_pico
from canny.pricing import format_usd as _usd

if TYPE_CHECKING:
    from canny._call import CallSpec
    from canny.config import Settings
    from canny.ledger import Ledger

__all__ = [
    "LEASE_MARGIN",
    "PERIODS",
    "PROFILE_KEYS",
    "Budget",
    "BudgetGuard",
    "BudgetStatus",
    "LedgerReservation",
    "Period",
    "Window",
    "budget_status",
    "clear_in_flight",
    "clear_reservations",
    "guard_for",
    "period_window",
    "profile_budgets",
    "reconcile",
    "remove_budgets",
    "reservations_in_flight",
    "set_budget",
    "stored_budgets",
]

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")
#: Keys of a profile's ``budget`` table.
PROFILE_KEYS = frozenset({"day", "month", "project", "tag", "key", "time_zone", "lease"})
#: Seconds added to a call's longest possible duration (the retry deadline, plus one
#: attempt's total timeout, plus one idle gap) to make its default lease.
LEASE_MARGIN = 60.0

Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def _host() -> str:
    return socket.gethostname()


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}", hint="use an IANA name such as Europe/Paris or UTC") from None


@dataclass(frozen=True, slots=True)
class Window:
    """One period of a budget in its time zone: ``[start, end)`` and a label."""

    period: Period
    time_zone: str
    label: str
    start: datetime
    end: datetime


def period_window(period: Period, time_zone: str, now: datetime) -> Window:
    """The day or month of ``now`` in ``time_zone``."""
    tz = _zone(time_zone)
    local = now.astimezone(tz)
    first: date = local.date() if period == "day" else local.date().replace(day=1)
    if period == "day":
        after, label = first + timedelta(days=1), first.isoformat()
    else:
        after, label = (first + timedelta(days=32)).replace(day=1), f"{first.year:04d}-{first.month:02d}"
    start = datetime.combine(first, time(), tzinfo=tz)
    end = datetime.combine(after, time(), tzinfo=tz)
    return Window(period, time_zone, label, start, end)


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit per ``period`` in ``time_zone``, for the calls in its scope.

    A scope field left ``None`` matches every call; ``project`` matches the call's
    project, ``tag`` any of its tags, ``key`` the fingerprint of its API key
    (``Secret.fingerprint``). ``source`` is ``"ledger"`` (stored, shared by every process
    using the ledger) or ``"profile"`` (from this process's configuration).
    """

    period: Period
    limit: Decimal
    project: str | None = None
    tag: str | None = None
    key: str | None = None
    time_zone: str = "UTC"
    source: Literal["ledger", "profile"] = "ledger"

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ConfigError(f"budget period must be 'day' or 'month', not {self.period!r}")
        if not self.limit.is_finite() or self.limit < 0:
            raise ConfigError(f"budget limit must be a non-negative dollar amount, not {self.limit}")
        _zone(self.time_zone)
        for name in ("project", "tag", "key"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ConfigError(f"budget {name} must not be empty")

    @property
    def scope(self) -> str:
        """``project acme, tag nightly`` or ``all calls``."""
        parts = [f"{n} {v}" for n, v in (("project", self.project), ("tag", self.tag), ("key", self.key)) if v]
        return ", ".join(parts) or "all calls"

    @property
    def name(self) -> str:
        """``day`` or ``month[project=acme]``: the ``budget`` of a BudgetExceeded and its ledger row."""
        parts = [f"{n}={v}" for n, v in (("project", self.project), ("tag", self.tag), ("key", self.key)) if v]
        return self.period + (f"[{','.join(parts)}]" if parts else "")

    def applies_to(self, spec: CallSpec) -> bool:
        """Whether a call falls in this budget's scope."""
        return (
            (self.project is None or spec.project == self.project)
            and (self.tag is None or self.tag in spec.tags)
            and (self.key is None or spec.key_fingerprint == self.key)
        )

    def window(self, now: datetime) -> Window:
        """The period ``now`` falls in."""
        return period_window(self.period, self.time_zone, now)

    def counter_key(self, now: datetime) -> store.CounterKey:
        w = self.window(now)
        return store.CounterKey(
            self.period, self.time_zone, w.label, to_us(w.start), to_us(w.end),
            self.project or "", self.tag or "", self.key or "",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """A budget in its current window: ``spent`` (actual costs), ``reserved`` (worst cases
    of calls in flight) and what is left (``headroom``, negative when overdrawn)."""

    budget: Budget
    window: Window
    spent: Decimal
    reserved: Decimal

    @property
    def headroom(self) -> Decimal:
        return self.budget.limit - self.spent - self.reserved


def _pico_up(amount: Decimal) -> int:
    return math.ceil(amount.scaleb(12))


def _dollars(pico: int) -> Decimal:
    """Pico-dollars as a tidy Decimal (``0.006948``, not ``0.006948000000``)."""
    amount = pico_to_usd(pico).normalize()
    exponent = amount.as_tuple().exponent
    return amount.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else amount


# --- stored budgets ----------------------------------------------------------------------


def _as_ledger(ledger: Ledger | store.BudgetLedger) -> store.BudgetLedger:
    if not isinstance(ledger, store.BudgetLedger):
        raise ConfigError(
            f"budgets need a SQLite or PostgreSQL ledger; {type(ledger).__name__} cannot hold them",
            hint="open the ledger with canny.ledger.open_ledger(...)",
        )
    store.ensure_schema(ledger)
    return ledger


def _budget(row: store.LimitRow, source: Literal["ledger", "profile"] = "ledger") -> Budget:
    return Budget(
        period=cast(Period, row.period),
        limit=Decimal(row.limit_usd),
        project=row.project or None,
        tag=row.tag or None,
        key=row.key or None,
        time_zone=row.time_zone,
        source=source,
    )


def set_budget(
    ledger: Ledger,
    *,
    period: Period,
    limit: Decimal | str | int | float,
    project: str | None = None,
    tag: str | None = None,
    key: str | None = None,
    time_zone: str = "UTC",
) -> Budget:
    """Store a budget in the ledger, replacing the one of the same period and scope.

    It applies from the next call of every process using the ledger; spending already in
    the ledger for its current window counts against it.
    """
    from canny.config import parse_money

    new = Budget(period, parse_money(limit, "budget limit"), project, tag, key, time_zone)
    db = _as_ledger(ledger)
    row = store.LimitRow(period, project or "", tag or "", key or "", str(new.limit), time_zone)
    store.write_limit(db, row, to_us(_utc_now()))
    return new


def stored_budgets(ledger: Ledger) -> list[Budget]:
    """The budgets stored in the ledger."""
    return [_budget(row) for row in store.read_limits(_as_ledger(ledger))]


def remove_budgets(
    ledger: Ledger,
    *,
    period: Period | None = None,
    project: str | None = None,
    tag: str | None = None,
    key: str | None = None,
) -> list[Budget]:
    """Remove the stored budgets matching every given field (all of them when none is
    given); return what was removed. Their counters go with them."""
    rows = store.delete_limits(_as_ledger(ledger), period=period, project=project, tag=tag, key=key)
    return [_budget(row) for row in rows]


def reconcile(ledger: Ledger, *, now: datetime | None = None) -> int:
    """End the reservations whose lease ran out, charging what the ledger holds for their
    calls; return how many. Attempts in flight whose lease ran out are recorded as ``lost``
    first, so their billed input is charged. Every reservation and status check does this too."""
    db = _as_ledger(ledger)
    now_us = to_us(now or _utc_now())
    with store.begin(db) as tx:
        sweep_inflight(tx, now_us)
        return store.expire(tx, now_us)


def clear_in_flight(ledger: Ledger) -> tuple[int, int]:
    """Record every attempt in flight as ``lost`` and end every reservation now, as if
    their leases had run out (``canny budget reset --reservations``), in one transaction;
    return ``(lost attempts, ended reservations)``. A call still running is charged in
    full when it ends, minus what was charged here, and its real row replaces the lost one."""
    db = _as_ledger(ledger)
    now_us = to_us(_utc_now())
    with store.begin(db) as tx:
        held = store.reservation_summary(tx)[0]  # every one ends, some with a lost attempt
        lost = sweep_inflight(tx, now_us, everything=True)
        store.expire(tx, None)
        return lost, held


def clear_reservations(ledger: Ledger) -> int:
    """:func:`clear_in_flight`, returning how many reservations ended."""
    return clear_in_flight(ledger)[1]


def budget_status(
    ledger: Ledger, budgets: Iterable[Budget] | None = None, *, now: datetime | None = None
) -> list[BudgetStatus]:
    """Limit, spent, reserved and headroom of each budget (default: the stored ones) in
    its current window. Expired leases are reconciled first."""
    db = _as_ledger(ledger)
    chosen = list(budgets) if budgets is not None else stored_budgets(ledger)
    moment = now or _utc_now()
    now_us = to_us(moment)
    with store.begin(db) as tx:
        sweep_inflight(tx, now_us)
        store.expire(tx, now_us)
        states = store.counters(tx, [b.counter_key(moment) for b in chosen], now_us)
    return [
        BudgetStatus(b, b.window(moment), _dollars(s.spent), _dollars(s.reserved))
        for b, s in zip(chosen, states, strict=True)
    ]


def reservations_in_flight(ledger: Ledger) -> tuple[int, int, datetime | None]:
    """``(held, expired tombstones, earliest lease end)`` of the reservations."""
    db = _as_ledger(ledger)
    with db.transaction(write=False) as tx:
        held, gone, first = store.reservation_summary(tx)
    return held, gone, None if first is None else datetime.fromtimestamp(first / 1e6, UTC)


# --- profile budgets ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Profile:
    budgets: tuple[Budget, ...]
    lease: float | None


_profile_cache: dict[tuple[str, tuple[tuple[str, str], ...]], _Profile] = {}


def _parse_profile(table: Mapping[str, Any], default_tz: str) -> _Profile:
    unknown = sorted(set(table) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown budget setting {unknown[0]!r}", hint=f"a budget table takes {', '.join(sorted(PROFILE_KEYS))}"
        )
    scope: dict[str, str | None] = {}
    for name in ("project", "tag", "key", "time_zone"):
        value = table.get(name)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"budget.{name} must be a string")
        scope[name] = value
    lease = table.get("lease")
    from canny.config import MAX_SECONDS, parse_money

    if lease is not None and (
        isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease <= MAX_SECONDS
    ):
        raise ConfigError(f"budget.lease must be a positive number of seconds, at most {MAX_SECONDS:,}, not {lease!r}")

    found = tuple(
        Budget(
            period=period,
            limit=parse_money(table[period], f"budget.{period}"),
            project=scope["project"],
            tag=scope["tag"],
            key=scope["key"],
            time_zone=scope["time_zone"] or default_tz,
            source="profile",
        )
        for period in PERIODS
        if table.get(period) is not None
    )
    return _Profile(found, None if lease is None else float(lease))


def _profile(settings: Settings) -> _Profile:
    table = settings.budgets
    if not table:
        return _Profile((), None)
    cache_key = (settings.time_zone, tuple(sorted((str(k), repr(v)) for k, v in table.items())))
    found = _profile_cache.get(cache_key)
    if found is None:
        found = _profile_cache[cache_key] = _parse_profile(table, settings.time_zone)
    return found


def profile_budgets(settings: Settings) -> list[Budget]:
    """The budgets of a config profile's ``budget`` table.

    Keys: ``day`` and ``month`` (dollar limits), ``project``, ``tag``, ``key`` (a key
    fingerprint) for the scope both limits share, ``time_zone`` (default: the profile's
    ``time_zone``, else UTC) and ``lease`` (seconds a reservation lives; default: the
    retry deadline, plus the total and idle timeouts, plus :data:`LEASE_MARGIN`)::

        [profiles.work.budget]
        day = "5"
        month = "100"
        project = "acme"
        time_zone = "Europe/Paris"
    """
    return list(_profile(settings).budgets)


# --- the guard ---------------------------------------------------------------------------


def guard_for(ledger: Ledger, settings: Settings, *, clock: Clock | None = None) -> BudgetGuard | None:
    """The :class:`BudgetGuard` of the budgets stored in ``ledger`` and in ``settings``'
    profile, or ``None`` when there are none. The client calls this before every call:
    without budgets it costs one read of the (small) limits table."""
    profile = _profile(settings)
    if not isinstance(ledger, store.BudgetLedger):
        if profile.budgets:
            _as_ledger(ledger)  # raises: profile budgets cannot be enforced without a database
        return None
    store.ensure_schema(ledger)
    budgets = [_budget(row) for row in store.read_limits(ledger)] + list(profile.budgets)
    if not budgets:
        return None
    longest = settings.retry.deadline + settings.timeouts.total + settings.timeouts.idle
    lease = profile.lease or longest + LEASE_MARGIN
    return BudgetGuard(ledger, budgets, lease=lease, clock=clock)


class LedgerReservation:
    """A call's hold on its budgets; :meth:`settle` or :meth:`release` ends it (once)."""

    def __init__(self, guard: BudgetGuard, rid: int, counter_ids: list[int], amount: int, max_tokens: int) -> None:
        self.guard = guard
        self.id = rid
        self.counter_ids = counter_ids
        self._pico = amount
        #: The worst case held, in dollars.
        self.amount = _dollars(amount)
        self.max_tokens = max_tokens
        self.done = False

    def settle(self, cost: Decimal | None) -> None:
        """Replace the hold by the call's actual cost (``None``, unpriced: the worst case
        is charged). A ledger failure here is a warning: the lease then ends the hold."""
        charge = None if cost is None else usd_to_pico(cost)
        self._end(lambda db: store.settle(db, self.id, self.counter_ids, self._pico, charge))

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


@dataclass(frozen=True, slots=True)
class _Decision:
    amount: int | None
    max_tokens: int
    tightest: Budget
    status: BudgetStatus


class BudgetGuard:
    """Reserves each call's worst case against the budgets that apply to it (a
    :class:`~canny._call.Reserver`). ``lease``: seconds a reservation lives unless settled
    or renewed; ``clock``: the current UTC time (injectable for tests)."""

    def __init__(
        self, ledger: Ledger, budgets: Iterable[Budget], *, lease: float = 1320.0, clock: Clock | None = None
    ) -> None:
        self.db = _as_ledger(ledger)
        self.budgets = tuple(budgets)
        self.lease = lease
        self.clock: Clock = clock or _utc_now
        self.owner = f"{_host()}:{os.getpid()}"

    def reserve(self, spec: CallSpec) -> LedgerReservation | NoReservation:
        """Hold ``spec``'s worst case against every budget in scope, in one transaction;
        lower ``spec``'s ``max_tokens`` (returned in ``.max_tokens``) or raise
        :class:`~canny.errors.BudgetExceeded` when it does not fit."""
        applicable = [b for b in self.budgets if b.applies_to(spec)]
        if not applicable:
            return NoReservation(spec.max_tokens)
        worst = spec.worst_case()
        if worst is None:
            raise _unpriced(spec, applicable[0])
        floor = _pico_up(spec.worst_case(0) or Decimal(0))
        full = _pico_up(worst)
        per_token = Fraction(full - floor, spec.max_tokens) if spec.max_tokens else Fraction(0)
        now = self.clock()
        now_us = to_us(now)
        keys = [b.counter_key(now) for b in applicable]
        with store.begin(self.db) as tx:
            sweep_inflight(tx, now_us)
            store.expire(tx, now_us)
            states = store.counters(tx, keys, now_us)
            decision = _decide(applicable, states, now, spec.max_tokens, full, floor, per_token)
            rid = None
            ids = sorted({s.id for s in states})
            if decision.amount is not None:
                expires = to_us(now + timedelta(seconds=self.lease))
                rid = store.hold(
                    tx, call_id=spec.call_id, counter_ids=ids, amount=decision.amount,
                    now_us=now_us, expires_us=expires, owner=self.owner,
                )  # fmt: skip
        if rid is None or decision.amount is None:
            raise _refusal(decision.status, worst, floor, per_token)
        if decision.max_tokens < spec.max_tokens:
            left = decision.status.headroom
            warnings.warn(
                f"max_tokens lowered from {spec.max_tokens} to {decision.max_tokens} to fit the "
                f"{decision.tightest.name} budget ({_usd(left)} left of {_usd(decision.tightest.limit)})",
                CannyWarning,
                stacklevel=4,
            )
        return LedgerReservation(self, rid, ids, decision.amount, decision.max_tokens)


def _decide(
    budgets: list[Budget],
    states: list[store.CounterState],
    now: datetime,
    max_tokens: int,
    full: int,
    floor: int,
    per_token: Fraction,
) -> _Decision:
    """How much to hold and at what ``max_tokens``, against the tightest budget."""
    rooms = [
        (math.floor(b.limit.scaleb(12)) - s.spent - s.reserved, i)
        for i, (b, s) in enumerate(zip(budgets, states, strict=True))
    ]
    room, index = min(rooms)
    tight, state = budgets[index], states[index]
    status = BudgetStatus(tight, tight.window(now), _dollars(state.spent), _dollars(state.reserved))
    if full <= room:
        return _Decision(full, max_tokens, tight, status)
    affordable = -1
    if per_token > 0 and room >= floor:
        affordable = min(max_tokens - 1, math.floor((room - floor) / per_token))
    if affordable < MIN_MAX_TOKENS:
        return _Decision(None, max_tokens, tight, status)
    return _Decision(floor + math.ceil(affordable * per_token), affordable, tight, status)


def _hint(budget: Budget, window: Window) -> str:
    flags = "".join(
        f" --{n} {v}" for n, v in (("project", budget.project), ("tag", budget.tag), ("key", budget.key)) if v
    )
    where = (
        f"raise it with `canny budget set --{budget.period} AMOUNT{flags}`"
        if budget.source == "ledger"
        else f"raise budget.{budget.period} in the config profile"
    )
    resets = window.end.strftime("%Y-%m-%d %H:%M")
    return f"wait for the next {budget.period} ({resets} {budget.time_zone}), {where}, or shorten the prompt"


def _refusal(status: BudgetStatus, worst: Decimal, floor: int, per_token: Fraction) -> BudgetExceeded:
    b = status.budget
    least = floor + math.ceil(MIN_MAX_TOKENS * per_token)
    return BudgetExceeded(
        f"the {b.period} budget for {b.scope} ({_usd(b.limit)}, {status.window.label} {b.time_zone}) has "
        f"{_usd(status.headroom)} left: {_usd(status.spent)} spent, {_usd(status.reserved)} reserved by calls "
        f"in flight; this call needs up to {_usd(worst)} (at least {_usd(_dollars(least))} with "
        f"max_tokens={MIN_MAX_TOKENS})",
        budget=b.name,
        limit=b.limit,
        spent=status.spent,
        reserved=status.reserved,
        needed=worst,
        hint=_hint(b, status.window),
    )


def _unpriced(spec: CallSpec, budget: Budget) -> BudgetExceeded:
    return BudgetExceeded(
        f"{spec.model} has no price, so its cost cannot be checked against the {budget.period} budget "
        f"for {budget.scope} ({_usd(budget.limit)})",
        budget=budget.name,
        limit=budget.limit,
        needed=None,
        hint="add the model's prices to your prices.toml (see `canny prices`), or use a priced model",
    )
