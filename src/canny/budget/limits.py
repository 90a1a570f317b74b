"""What a budget is: a limit per day or month in a time zone, for the calls in its scope,
and where it stands in its current window (:class:`BudgetStatus`)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from canny.budget import store
from canny.budget.scope import ALL_CALLS, Scope
from canny.errors import ConfigError
from canny.units import pico_to_usd

if TYPE_CHECKING:
    from canny.ledger import Ledger

__all__ = ["PERIODS", "Budget", "BudgetStatus", "Clock", "Period", "Window", "as_ledger", "cached_limits",
           "cached_limits_at", "dollars", "holds_budgets", "limits_changed", "limits_stamp",
           "period_window"]  # fmt: skip

Period = Literal["day", "month"]
PERIODS: tuple[Period, ...] = ("day", "month")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"unknown time zone {name!r}", hint="use an IANA name such as Europe/Paris or UTC") from None


def dollars(pico: int) -> Decimal:
    """Pico-dollars as a tidy Decimal (``0.006948``, not ``0.006948000000``)."""
    amount = pico_to_usd(pico).normalize()
    exponent = amount.as_tuple().exponent
    return amount.quantize(Decimal(1)) if isinstance(exponent, int) and exponent > 0 else amount


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
    """A spending limit per ``period`` in ``time_zone``, for the calls in its ``scope``
    (a :class:`~canny.budget.scope.Scope`; default: every call).

    ``source`` is ``"ledger"`` (stored, shared by every process using the ledger) or
    ``"profile"`` (from this process's configuration)::

        Budget("month", Decimal(100), Scope(project="acme"), time_zone="Europe/Paris")
    """

    period: Period
    limit: Decimal
    scope: Scope = ALL_CALLS
    time_zone: str = "UTC"
    source: Literal["ledger", "profile"] = "ledger"

    def __post_init__(self) -> None:
        if self.period not in PERIODS:
            raise ConfigError(f"budget period must be 'day' or 'month', not {self.period!r}")
        if not self.limit.is_finite() or self.limit < 0:
            raise ConfigError(f"budget limit must be a non-negative dollar amount, not {self.limit}")
        if not isinstance(self.scope, Scope):
            raise TypeError(f"a budget's scope is a canny.budget.Scope, e.g. Scope(project='acme'), not {self.scope!r}")
        _zone(self.time_zone)

    @property
    def name(self) -> str:
        """``day`` or ``month[project=acme]``: the ``budget`` of a BudgetExceeded and its ledger row."""
        return self.period + self.scope.suffix

    def window(self, now: datetime) -> Window:
        """The period ``now`` falls in."""
        return period_window(self.period, self.time_zone, now)

    def counter_key(self, now: datetime) -> store.CounterKey:
        """The counter of this budget's scope in the period ``now`` falls in."""
        return store.CounterKey(self.window(now), self.scope)


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


#: Whether a ledger class can hold budgets: a protocol check costs microseconds, and the
#: client asks before every call.
_HOLDS_BUDGETS: dict[type, bool] = {}


def holds_budgets(ledger: object) -> bool:
    """Whether ``ledger``'s database can hold budgets (checked once per ledger class)."""
    kind = type(ledger)
    found = _HOLDS_BUDGETS.get(kind)
    if found is None:
        found = _HOLDS_BUDGETS[kind] = isinstance(ledger, store.BudgetLedger)
    return found


def as_ledger(ledger: Ledger | store.BudgetLedger) -> store.BudgetLedger:
    """``ledger`` if its database can hold budgets, else a :class:`~canny.errors.ConfigError`."""
    if not holds_budgets(ledger):
        raise ConfigError(
            f"budgets need a SQLite or PostgreSQL ledger; {type(ledger).__name__} cannot hold them",
            hint="open the ledger with canny.ledger.open_ledger(...)",
        )
    return cast("store.BudgetLedger", ledger)


# --- the limits, read once until they change ----------------------------------------------

_T = TypeVar("_T")

#: Seconds the limits of a ledger without a cheap change check (PostgreSQL) are trusted:
#: a budget set or removed by another process applies within this long.
LIMITS_TTL = 1.0

#: Bumped by every budget write of this process (:func:`limits_changed`): a ledger's own
#: change check does not see what its own connection committed.
_generation = [0]
_cache_lock = threading.Lock()
#: Per ledger object: (the change stamp the limits were read at, what was built from them).
_limits_cache: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], object]] = weakref.WeakKeyDictionary()


def limits_changed() -> None:
    """This process set or removed a budget: every ledger's cached limits are stale."""
    with _cache_lock:
        _generation[0] += 1
        _limits_cache.clear()


def limits_stamp(ledger: store.BudgetLedger) -> tuple[Any, ...]:
    """A value that differs whenever the stored limits may have changed since it was taken:
    this process's own writes (:func:`limits_changed`) and, for SQLite, the limits'
    change counter (``SQLiteLedger.change_stamp``, kept by triggers); other databases fall
    back to a clock slot of :data:`LIMITS_TTL` seconds."""
    change_stamp = getattr(ledger, "change_stamp", None)
    if change_stamp is not None:
        return (_generation[0], change_stamp())
    return (_generation[0], "ttl", int(monotonic() // LIMITS_TTL))


def cached_limits(ledger: store.BudgetLedger, build: Callable[[list[store.LimitRow]], _T]) -> _T:
    """``build(stored limits)``, read and built again only when the limits may have changed
    (see :func:`limits_stamp`). The client asks before every call; when nothing changed this costs
    one small read on SQLite instead of a read transaction."""
    return cached_limits_at(ledger, build)[0]


def cached_limits_at(
    ledger: store.BudgetLedger, build: Callable[[list[store.LimitRow]], _T]
) -> tuple[_T, tuple[Any, ...]]:
    """:func:`cached_limits`, and the :func:`limits_stamp` it checked them at."""
    stamp = limits_stamp(ledger)  # taken before the read: a change in between makes the next check miss
    found = _limits_cache.get(ledger)
    if found is not None and found[0] == stamp:
        return cast(_T, found[1]), stamp
    # The limits changed (or were never read): a new budget's counter is seeded from the
    # ledger's rows, so the rows this process still has queued go in first.
    flush = getattr(ledger, "flush", None)
    if flush is not None:
        flush()
    built = build(store.read_limits(ledger))
    try:
        with _cache_lock:
            if stamp[0] == _generation[0]:
                _limits_cache[ledger] = (stamp, built)
    except TypeError:  # a ledger that cannot be weakly referenced: not cached
        pass
    return built, stamp
