"""Budgets that no number of processes can overspend: per day and per month, in a time
zone, optionally per project, tag or key.

Budgets live in the ledger's database, so every process and machine that shares the
ledger shares them::

    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger("~/.local/share/canny/ledger.db")
    budget.set_budget(ledger, period="day", limit="5", time_zone="Europe/Paris")
    budget.set_budget(ledger, period="month", limit="100", scope=budget.Scope(project="acme"))
    for line in budget.budget_status(ledger):
        print(line.budget.name, line.spent, line.reserved, line.headroom)

A config profile can add budgets of its own (``[profiles.NAME.budget]``, see
:func:`profile_budgets`); the CLI has ``canny budget set|show|reset``.

Before each call, :class:`BudgetGuard` reserves the call's worst case (``CallSpec.worst_case``)
against every budget in scope in one transaction. If it does not fit, ``max_tokens`` is
lowered to what the tightest budget affords (down to :data:`MIN_MAX_TOKENS`, with a
:class:`~canny.errors.CannyWarning`) or the call is refused with
:class:`~canny.errors.BudgetExceeded` before anything is sent. When the call ends, the
reservation is replaced by the actual cost in one more transaction. Reservations carry a
lease, so a killed process pins a budget only until its lease ends. ``docs/budgets.md``
explains the guarantees and the bound on overspend.

The package: :mod:`~canny.budget.clamp` (THE rule that lowers ``max_tokens`` to what the
money allows, used by every cost check), :mod:`~canny.budget.guard` (the guards and
reservations: per-call ``max_cost``, stored and profile budgets), :mod:`~canny.budget.limits`
(a budget, its window and status), :mod:`~canny.budget.scope` (which calls a budget
covers) and :mod:`~canny.budget.store` (the SQL; the tables are
the ledger's migration ``budget.0001_tables``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, cast

from canny.budget import alerts, store
from canny.budget.clamp import MIN_MAX_TOKENS, affordable_max_tokens, worst_case_at
from canny.budget.guard import (
    BudgetGuard,
    CallLike,
    LedgerReservation,
    MaxCostGuard,
    NoReservation,
    Reservation,
    Reserver,
)
from canny.budget.limits import (
    PERIODS,
    Budget,
    BudgetStatus,
    Clock,
    Period,
    Window,
    as_ledger,
    cached_limits_at,
    dollars,
    holds_budgets,
    limits_changed,
    period_window,
    utc_now,
)
from canny.budget.scope import ALL_CALLS, Scope
from canny.errors import ConfigError
from canny.units import to_us

if TYPE_CHECKING:
    from canny.config import Settings
    from canny.ledger import Ledger

__all__ = [
    "ALL_CALLS",
    "LEASE_MARGIN",
    "MIN_MAX_TOKENS",
    "PERIODS",
    "PROFILE_KEYS",
    "Budget",
    "BudgetGuard",
    "BudgetStatus",
    "CallLike",
    "LedgerReservation",
    "MaxCostGuard",
    "NoReservation",
    "Period",
    "Reservation",
    "Reserver",
    "Scope",
    "Window",
    "affordable_max_tokens",
    "alerts",
    "budget_alerts",
    "budget_status",
    "clear_in_flight",
    "clear_reservations",
    "guard_for",
    "matching_budgets",
    "period_window",
    "profile_budgets",
    "reconcile",
    "remove_budgets",
    "reservations_in_flight",
    "set_budget",
    "stored_budgets",
    "worst_case_at",
]

#: Keys of a profile's ``budget`` table.
PROFILE_KEYS = frozenset({"day", "month", "project", "tag", "key", "time_zone", "lease"})
#: Seconds added to a call's longest possible duration (the retry deadline, plus one
#: attempt's total timeout, plus one idle gap) to make its default lease.
LEASE_MARGIN = 60.0


# --- stored budgets ----------------------------------------------------------------------


def _budget(row: store.LimitRow) -> Budget:
    return Budget(cast(Period, row.period), Decimal(row.limit_usd), row.scope, row.time_zone)


def _budgets(rows: list[store.LimitRow]) -> tuple[Budget, ...]:
    return tuple(_budget(row) for row in rows)


def set_budget(
    ledger: Ledger,
    *,
    period: Period,
    limit: Decimal | str | int | float,
    scope: Scope = ALL_CALLS,
    time_zone: str = "UTC",
    alert_at: str | Iterable[Decimal | int | str] | None = None,
    alert_command: str | None = None,
    alert_url: str | None = None,
) -> Budget:
    """Store a budget for the calls in ``scope`` (default: every call), replacing the one
    of the same period and scope.

    It applies from the next call of every process using the ledger (within
    :data:`~canny.budget.limits.LIMITS_TTL` on PostgreSQL); spending already in
    the ledger for its current window counts against it.

    ``alert_at`` (percentages of the limit, ``"50,80,100"`` or numbers) with
    ``alert_command`` and/or ``alert_url`` sets its alerts (:mod:`canny.budget.alerts`):
    each threshold fires once per period. Without ``alert_at`` the budget keeps the alerts
    it had; ``alert_at=()`` removes them.
    """
    from canny.config import parse_money

    new = Budget(period, parse_money(limit, "budget limit"), scope, time_zone)
    thresholds = alerts.parse_thresholds(alert_at)
    if (alert_command or alert_url) and not thresholds:
        raise ConfigError("an alert command or URL needs thresholds", hint="add alert_at, e.g. --alert-at 50,80,100")
    rule = alerts.AlertRule(thresholds, alert_command or None, alert_url or None)
    if alert_at is not None:
        alerts.check_rule(rule)
    db = as_ledger(ledger)
    store.write_limit(db, store.LimitRow(period, scope, str(new.limit), time_zone), to_us(utc_now()))
    limits_changed()
    if alert_at is not None:
        alerts.write_rule(db, new, rule)
    return new


def budget_alerts(
    ledger: Ledger, budget: Budget, *, now: datetime | None = None
) -> tuple[alerts.AlertRule | None, list[alerts.FiredAlert]]:
    """A stored budget's alert rule (``None``: no alerts) and the thresholds that fired in
    its current period window."""
    db = as_ledger(ledger)
    window = budget.window(now or utc_now())
    return alerts.read_rule(db, budget), alerts.fired_alerts(db, budget, window.label)


def stored_budgets(ledger: Ledger) -> list[Budget]:
    """The budgets stored in the ledger."""
    return [_budget(row) for row in store.read_limits(as_ledger(ledger))]


def _picked(period: Period | None, matching: Scope) -> Callable[[store.LimitRow], bool]:
    """Whether a stored limit is of ``period`` (any when ``None``) and has a scope that
    ``matching``, read as a filter (:meth:`Scope.selects`), selects."""
    return lambda row: period in (None, row.period) and matching.selects(row.scope)


def matching_budgets(ledger: Ledger, *, period: Period | None = None, matching: Scope = ALL_CALLS) -> list[Budget]:
    """The stored budgets that :func:`remove_budgets` would remove with the same arguments."""
    picked = _picked(period, matching)
    return [_budget(row) for row in store.read_limits(as_ledger(ledger)) if picked(row)]


def remove_budgets(ledger: Ledger, *, period: Period | None = None, matching: Scope = ALL_CALLS) -> list[Budget]:
    """Remove the stored budgets of ``period`` (any when ``None``) whose scope ``matching``
    selects, with their counters and alert rules; return them.

    ``matching`` is a filter, read by :meth:`Scope.selects`: a budget goes when its scope
    has each field ``matching`` sets, whatever its other fields, so
    ``matching=Scope(project="acme")`` removes every budget of project ``acme`` (with or
    without a tag or key) and the default removes every budget.
    """
    rows = store.delete_limits(as_ledger(ledger), _picked(period, matching))
    limits_changed()
    return [_budget(row) for row in rows]


def reconcile(ledger: Ledger, *, now: datetime | None = None) -> int:
    """End the reservations whose lease ran out, charging what the ledger holds for their
    calls; return how many. Attempts in flight whose lease ran out are recorded as ``lost``
    first, so their billed input is charged. Every reservation and status check does this too."""
    db = as_ledger(ledger)
    now_us = to_us(now or utc_now())
    with store.begin(db) as tx:
        db.sweep_lost_in(tx, now_us)
        return store.expire(tx, now_us)


def clear_in_flight(ledger: Ledger) -> tuple[int, int]:
    """Record every attempt in flight as ``lost`` and end every reservation now, as if
    their leases had run out (``canny budget reset --reservations``), in one transaction;
    return ``(lost attempts, ended reservations)``. A call still running is charged in
    full when it ends, minus what was charged here, and its real row replaces the lost one."""
    db = as_ledger(ledger)
    now_us = to_us(utc_now())
    with store.begin(db) as tx:
        held = store.reservation_summary(tx)[0]  # every one ends, some with a lost attempt
        lost = db.sweep_lost_in(tx, now_us, everything=True)
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
    db = as_ledger(ledger)
    chosen = list(budgets) if budgets is not None else stored_budgets(ledger)
    moment = now or utc_now()
    now_us = to_us(moment)
    with store.begin(db) as tx:
        db.sweep_lost_in(tx, now_us)
        store.expire(tx, now_us)
        states = store.counters(tx, [b.counter_key(moment) for b in chosen], now_us)
    return [
        BudgetStatus(b, b.window(moment), dollars(s.spent), dollars(s.reserved))
        for b, s in zip(chosen, states, strict=True)
    ]


def reservations_in_flight(ledger: Ledger) -> tuple[int, int, datetime | None]:
    """``(held, expired tombstones, earliest lease end)`` of the reservations."""
    db = as_ledger(ledger)
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
    zone = table.get("time_zone")
    if zone is not None and not isinstance(zone, str):
        raise ConfigError("budget.time_zone must be a string")
    scope = Scope(table.get("project"), table.get("tag"), table.get("key"))
    lease = table.get("lease")
    from canny.config import MAX_SECONDS, parse_money

    if lease is not None and (
        isinstance(lease, bool) or not isinstance(lease, (int, float)) or not 0 < lease <= MAX_SECONDS
    ):
        raise ConfigError(f"budget.lease must be a positive number of seconds, at most {MAX_SECONDS:,}, not {lease!r}")

    found = tuple(
        Budget(period, parse_money(table[period], f"budget.{period}"), scope, zone or default_tz, "profile")
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
    if not holds_budgets(ledger):
        if profile.budgets:
            as_ledger(ledger)  # raises: profile budgets cannot be enforced without a database
        return None
    stored, stamp = cached_limits_at(as_ledger(ledger), _budgets)
    budgets = [*stored, *profile.budgets]
    if not budgets:
        return None
    longest = settings.retry.deadline + settings.timeouts.total + settings.timeouts.idle
    lease = profile.lease or longest + LEASE_MARGIN
    return BudgetGuard(ledger, budgets, lease=lease, clock=clock, stamp=stamp)
