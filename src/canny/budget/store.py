"""Budget state in the ledger's own database: limits, per-period counters, reservations.

SQL only: the callers (:mod:`canny.budget`) decide; these functions read and write. Three
tables, created by the ledger's migration ``budget.0001_tables``
(:mod:`canny.ledger.migrations`):

``budget_limits``
    One row per stored budget: ``period`` (``day``/``month``), its scope (``project``,
    ``tag``, ``key_fingerprint``; ``''`` means "any"), ``limit_usd`` and ``time_zone``.
``budget_counters``
    One row per budget scope and period window (``label`` is ``2026-11-24`` or
    ``2026-11`` in ``time_zone``): ``spent_pico`` (actual cost charged, in 10^-12 USD) and
    ``reserved_pico`` (worst cases held by calls in flight). A counter is *seeded* from
    the ledger when first used in its window (the sum of ``attempts.cost_pico`` in the
    window and scope), then kept exact by the reservation protocol, so a check costs a
    primary-key read instead of a scan of the period's attempts.
``budget_reservations``
    One row per call in flight: the counters it holds (JSON list of ids), the amount,
    its lease (``expires_at_us``) and ``state``: ``held``, or ``expired`` once its lease
    ran out (a tombstone, so a late settle charges only what expiry did not). An attempt
    of the call recorded as ``lost`` ends its reservation the same way (:func:`charge_lost`).

``budget_slices``
    One row per share of headroom a process leased (:mod:`canny.budget.slices`, PostgreSQL
    only): its ``amount_pico`` counts as reserved on its counters until the process gives it
    back, or its lease (``expires_at_us``) ends and :func:`expire` ends it.

Every write runs in one transaction of the ledger (:meth:`transaction`). On SQLite it takes
the write lock up front (``BEGIN IMMEDIATE``). On PostgreSQL the hot path takes no global
lock: a reservation (:func:`pg_reserve`), a settlement (:func:`settle`, :func:`release`) and
a slice's refill (:func:`pg_slice`) are each one call of a server-side function (migration
``budget.0003_slices``) that locks only the counter rows involved, in id order. The rare
maintenance (ending leases, limits, status) still takes the advisory lock
:data:`~canny.ledger.migrations.BUDGET_LOCK` (:func:`begin`), so two maintainers never race;
it locks the reservation rows it ends first and the counters last, in id order, the same
order the functions use, so it cannot deadlock with them. Amounts are integers
(pico-dollars): no float ever touches money here.
"""

from __future__ import annotations

# SQL here is built from constants and ``?`` placeholders only; values are never spliced in.
# ruff: noqa: S608
import json
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

from canny.budget.alerts import BUDGET_ROW, Alert, crossed
from canny.budget.scope import Scope
from canny.ledger.budget_tables import counter_ids, update_counters
from canny.ledger.migrations import BUDGET_LOCK, Transaction
from canny.units import to_us

if TYPE_CHECKING:
    from canny.budget.limits import Window

__all__ = [
    "BUDGET_LOCK",
    "BudgetLedger",
    "CounterKey",
    "CounterState",
    "LimitRow",
    "begin",
    "counters",
    "delete_limits",
    "expire",
    "hold",
    "pg_reserve",
    "pg_slice",
    "read_limits",
    "release",
    "renew",
    "reservation_summary",
    "resolve",
    "settle",
    "write_limit",
]

#: Expired reservations and counters of windows that ended are kept this long (µs).
KEEP_US = 7 * 86400 * 10**6


@runtime_checkable
class BudgetLedger(Protocol):
    """A ledger whose database can hold budgets (the SQLite and PostgreSQL ledgers)."""

    location: str

    def transaction(self, *, write: bool = True) -> AbstractContextManager[Transaction]:
        """One transaction; ``write=True`` takes the write lock up front."""
        ...

    def sweep_lost_in(self, tx: Transaction, now_us: int, *, everything: bool = False) -> int:
        """Record the attempts in flight whose lease ended before ``now_us`` (every one with
        ``everything``) as ``lost``, in ``tx``, ending their reservations (:func:`charge_lost`)."""
        ...


@contextmanager
def begin(ledger: BudgetLedger) -> Iterator[Transaction]:
    """A budget write transaction: serialised with every other one on this database."""
    with ledger.transaction() as tx:
        if tx.dialect == "postgres":
            tx.execute("SELECT pg_advisory_xact_lock(?)", (BUDGET_LOCK,))
        yield tx


# --- limits ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitRow:
    """A stored limit: a budget's period and scope, its limit (dollars, as text) and zone."""

    period: str
    scope: Scope
    limit_usd: str
    time_zone: str

    @property
    def budget_key(self) -> tuple[str, str, str, str]:
        """``(period, project, tag, key_fingerprint)``: the budget's key in the tables."""
        return (self.period, *self.scope.stored)


_LIMITS = "SELECT period, project, tag, key_fingerprint, limit_usd, time_zone FROM budget_limits"


def _limit_rows(rows: list[tuple[Any, ...]]) -> list[LimitRow]:
    return [LimitRow(str(p), Scope.from_stored(pr, t, k), str(lim), str(z)) for p, pr, t, k, lim, z in rows]


def read_limits(ledger: BudgetLedger) -> list[LimitRow]:
    """Every stored limit: one small read."""
    with ledger.transaction(write=False) as tx:
        rows = tx.execute(f"{_LIMITS} ORDER BY period, project, tag, key_fingerprint")
    return _limit_rows(rows)


def write_limit(ledger: BudgetLedger, row: LimitRow, now_us: int) -> None:
    """Insert or replace the limit of ``row``'s period and scope."""
    with begin(ledger) as tx:
        tx.execute(
            "INSERT INTO budget_limits (period, project, tag, key_fingerprint, limit_usd, time_zone, updated_at_us) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (period, project, tag, key_fingerprint) DO UPDATE SET "
            "limit_usd = excluded.limit_usd, time_zone = excluded.time_zone, updated_at_us = excluded.updated_at_us",
            (*row.budget_key, row.limit_usd, row.time_zone, now_us),
        )


def delete_limits(ledger: BudgetLedger, chosen: Callable[[LimitRow], bool]) -> list[LimitRow]:
    """Delete the limits ``chosen`` picks, with their counters and alert rules, in one
    transaction; return them.

    Counters go too: a scope without a budget is not counted, so a counter kept until the
    budget is set again would miss what was spent meanwhile. It is seeded afresh instead.
    The alerts that fired stay, as history.
    """
    with begin(ledger) as tx:
        rows = [row for row in _limit_rows(tx.execute(_LIMITS)) if chosen(row)]
        for row in rows:
            for table in ("budget_counters", "budget_alert_rules", "budget_limits"):
                tx.execute(f"DELETE FROM {table} WHERE {BUDGET_ROW}", row.budget_key)
    return rows


# --- counters ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterKey:
    """A budget scope in a period window: the row of ``budget_counters`` that counts it.

    Two keys are equal when they name the same row (``unique``); the window's bounds in
    UTC microseconds (``start_us``, ``end_us``) are worked out once.
    """

    window: Window = field(compare=False)
    scope: Scope = field(compare=False)
    start_us: int = field(init=False, repr=False, compare=False)
    end_us: int = field(init=False, repr=False, compare=False)
    #: ``(period, time_zone, label, project, tag, key_fingerprint)``: the row's unique columns.
    unique: tuple[str, str, str, str, str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        w = self.window
        object.__setattr__(self, "start_us", to_us(w.start))
        object.__setattr__(self, "end_us", to_us(w.end))
        object.__setattr__(self, "unique", (w.period, w.time_zone, w.label, *self.scope.stored))


@dataclass(frozen=True, slots=True)
class CounterState:
    """A counter as read inside a transaction."""

    id: int
    spent: int
    reserved: int


_COUNTER = (
    "SELECT id, spent_pico, reserved_pico FROM budget_counters "
    "WHERE period = ? AND time_zone = ? AND label = ? AND project = ? AND tag = ? AND key_fingerprint = ?"
)


def _seed(tx: Transaction, start_us: int, end_us: int, scope: Scope) -> int:
    """What the ledger already holds for ``scope`` in ``[start_us, end_us)`` (pico-dollars),
    summed from the ledger's rollups (:func:`canny.ledger.rollups.window_cost`):
    milliseconds, however many attempts the window holds."""
    from canny.ledger.rollups import window_cost

    project, tag, key = scope.stored
    return window_cost(tx, start_us, end_us, project=project, tag=tag, key=key)


def counters(tx: Transaction, keys: Sequence[CounterKey], now_us: int) -> list[CounterState]:
    """The counters of ``keys`` (same order), creating and seeding those that are new."""
    states: list[CounterState] = []
    for key in keys:
        rows = tx.execute(_COUNTER, key.unique)
        if not rows:
            _prune(tx, now_us)
            spent = _seed(tx, key.start_us, key.end_us, key.scope)
            tx.execute(
                "INSERT INTO budget_counters (period, time_zone, label, project, tag, key_fingerprint, "
                "period_end_us, spent_pico, reserved_pico) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0) "
                "ON CONFLICT (period, time_zone, label, project, tag, key_fingerprint) DO NOTHING",
                (*key.unique, key.end_us, spent),
            )
            rows = tx.execute(_COUNTER, key.unique)
        counter_id, spent, reserved = rows[0]
        states.append(CounterState(int(counter_id), int(spent), int(reserved)))
    return states


def _prune(tx: Transaction, now_us: int) -> None:
    """Drop tombstones and idle counters of windows that ended more than a week ago."""
    tx.execute("DELETE FROM budget_reservations WHERE state = 'expired' AND expires_at_us < ?", (now_us - KEEP_US,))
    tx.execute("DELETE FROM budget_counters WHERE period_end_us < ? AND reserved_pico = 0", (now_us - KEEP_US,))


# --- reservations ------------------------------------------------------------------------


def expire(tx: Transaction, now_us: int | None) -> int:
    """End the leases that ran out by ``now_us`` (every lease when ``None``), reservations
    and slices alike; run inside :func:`begin`.

    Each reservation's call is charged what the ledger holds for it (its attempts' costs:
    the attempts that finished before the process died); its reservation stops counting.
    Each slice is charged what the ledger holds that no counter has counted yet
    (:func:`_slice_charge`), at most its amount; the rest of it is given back. Returns how
    many reservations ended. The rows are locked first, the counters last (in id order).
    """
    lock = " ORDER BY id FOR UPDATE" if tx.dialect == "postgres" else ""
    due, params = (" AND expires_at_us < ?", (now_us,)) if now_us is not None else ("", ())
    rows = tx.execute(
        f"SELECT id, call_id, counters, amount_pico FROM budget_reservations WHERE state = 'held'{due}{lock}", params
    )
    slices = tx.execute(f"SELECT id, counters, amount_pico FROM budget_slices WHERE state = 'held'{due}{lock}", params)
    deltas: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # counter id -> [reserved, spent]
    for rid, call_id, ids_text, amount in rows:
        charged = int(
            tx.execute("SELECT coalesce(sum(cost_pico), 0) FROM attempts WHERE call_id = ?", (call_id,))[0][0]
        )
        for cid in counter_ids(ids_text):
            deltas[cid][0] -= int(amount)
            deltas[cid][1] += charged
        tx.execute("UPDATE budget_reservations SET state = 'expired', charged_pico = ? WHERE id = ?", (charged, rid))
    for sid, ids_text, amount in slices:
        for cid in counter_ids(ids_text):
            deltas[cid][0] -= int(amount)
            deltas[cid][1] += _slice_charge(tx, cid, int(amount), deltas[cid][1])
        tx.execute("UPDATE budget_slices SET state = 'expired' WHERE id = ?", (sid,))
    for cid in sorted(deltas):
        update_counters(tx, [cid], reserved=deltas[cid][0], spent=deltas[cid][1])
    tx.execute("DELETE FROM budget_slices WHERE state = 'expired'")
    return len(rows)


def _slice_charge(tx: Transaction, cid: int, amount: int, pending: int) -> int:
    """What a slice whose lease ended is charged on counter ``cid``: what the ledger holds
    in the counter's scope and window beyond what the counter has counted (plus ``pending``,
    charged in this transaction), at most the slice's ``amount``. That covers every call the
    dead process made from its slice (their rows, ``lost`` ones included, are in the
    ledger); it may also cover calls of other processes recorded but not yet settled, so
    it errs high (never an overspend), by at most the slice."""
    rows = tx.execute(
        "SELECT period, time_zone, label, project, tag, key_fingerprint, period_end_us, spent_pico "
        "FROM budget_counters WHERE id = ?",
        (cid,),
    )
    if not rows:
        return 0
    period, zone, label, project, tag, key, end_us, spent = rows[0]
    first = date.fromisoformat(label if period == "day" else f"{label}-01")
    start = datetime.combine(first, time(), tzinfo=ZoneInfo(str(zone)))
    unseen = _seed(tx, to_us(start), int(end_us), Scope.from_stored(project, tag, key)) - int(spent) - pending
    return min(amount, max(unseen, 0))


def hold(
    tx: Transaction,
    *,
    call_id: str,
    counter_ids: Sequence[int],
    amount: int,
    now_us: int,
    expires_us: int,
    owner: str,
) -> int:
    """Record a reservation of ``amount`` against ``counter_ids``; return its id."""
    rows = tx.execute(
        "INSERT INTO budget_reservations (call_id, counters, amount_pico, owner, created_at_us, expires_at_us) "
        "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
        (call_id, json.dumps(list(counter_ids)), amount, owner, now_us, expires_us),
    )
    update_counters(tx, counter_ids, reserved=amount)
    return int(rows[0][0])


def settle(
    ledger: BudgetLedger,
    rid: int,
    counter_ids: Sequence[int],
    amount: int,
    charge: int | None,
    now_us: int | None = None,
) -> list[Alert]:
    """Replace reservation ``rid`` (of ``amount`` on ``counter_ids``) by ``charge`` (the
    amount itself when ``None``: the actual cost is unknown).

    A held reservation is swapped for the charge. An expired one was already charged the
    ledger rows found at expiry, so only the rest is added. A reservation that is gone
    (its tombstone pruned a week after its lease ended) is charged in full. On PostgreSQL:
    one round trip (``canny_budget_settle``), no global lock. Returns the budget alerts this
    settle fired (:mod:`canny.budget.alerts`), to deliver after commit.
    """
    actual = amount if charge is None else charge
    if _is_postgres(ledger):
        if not _has_alert_rules(ledger):
            _pg_settle(ledger, rid, counter_ids, actual)  # one round trip
            return []
        with ledger.transaction() as tx:  # the settle holds the counter rows: crossed reads its own spend
            tx.execute(_PG_SETTLE, (rid, list(counter_ids), actual))
            return crossed(tx, counter_ids, now_us)
    with begin(ledger) as tx:
        rows = tx.execute("DELETE FROM budget_reservations WHERE id = ? RETURNING state, charged_pico", (rid,))
        if not rows:
            update_counters(tx, counter_ids, spent=actual)
        elif rows[0][0] == "held":
            update_counters(tx, counter_ids, reserved=-amount, spent=actual)
        else:
            update_counters(tx, counter_ids, spent=max(actual - int(rows[0][1]), 0))
        # Budget alerts: decided in this transaction, delivered by the caller after commit.
        return crossed(tx, counter_ids, now_us)


def release(ledger: BudgetLedger, rid: int) -> None:
    """Drop reservation ``rid`` with no charge (nothing was sent)."""
    if _is_postgres(ledger):
        _pg_settle(ledger, rid, [], 0)  # a charge of nothing: the held amount is freed
        return
    with begin(ledger) as tx:
        rows = tx.execute("DELETE FROM budget_reservations WHERE id = ? RETURNING state, amount_pico, counters", (rid,))
        if rows and rows[0][0] == "held":
            update_counters(tx, counter_ids(rows[0][2]), reserved=-int(rows[0][1]))


def renew(ledger: BudgetLedger, rid: int, expires_us: int) -> bool:
    """Move a held reservation's lease end to ``expires_us``; ``False`` if it is not held."""
    sql = "UPDATE budget_reservations SET expires_at_us = ? WHERE id = ? AND state = 'held' RETURNING id"
    if _is_postgres(ledger):
        return bool(_one(ledger, sql, (expires_us, rid)))
    with begin(ledger) as tx:
        return bool(tx.execute(sql, (expires_us, rid)))


# --- PostgreSQL: one round trip each -------------------------------------------------------


def _is_postgres(ledger: BudgetLedger) -> bool:
    return getattr(ledger, "dialect", None) == "postgres"


def _one(ledger: BudgetLedger, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    """One statement in one round trip (autocommit, ``PostgresLedger.statement``), else in
    a transaction of its own."""
    run = getattr(ledger, "statement", None)
    if run is not None:
        return list(run(sql, params))
    with ledger.transaction() as tx:
        return tx.execute(sql, params)


#: PostgreSQL ledgers (by id) -> (monotonic time of the check, whether any budget has alert rules).
_ALERT_RULES: dict[int, tuple[float, bool]] = {}
#: How long "no budget has alerts" is believed. A threshold reached meanwhile still fires
#: once, at the first settle after: alerts fire on thresholds reached, not on the moment.
ALERT_RULES_TTL = 1.0


def pg_alerts(ledger: BudgetLedger, counter_ids: Sequence[int], now_us: int | None = None) -> list[Alert]:
    """PostgreSQL, after a slice wrote its spend back to ``counter_ids``: the alerts it
    fired, decided in a short transaction of its own (an insert that only one process
    wins), or none without a round trip when no budget has alert rules."""
    if not counter_ids or not _has_alert_rules(ledger):
        return []
    with ledger.transaction() as tx:
        return crossed(tx, counter_ids, now_us)


def _has_alert_rules(ledger: BudgetLedger) -> bool:
    """Whether any budget has alert rules (believed for :data:`ALERT_RULES_TTL`)."""
    import time as clock

    checked = _ALERT_RULES.get(id(ledger))
    if checked is None or clock.monotonic() - checked[0] > ALERT_RULES_TTL:
        with ledger.transaction() as tx:
            found = bool(tx.execute("SELECT 1 FROM budget_alert_rules LIMIT 1"))
        checked = _ALERT_RULES[id(ledger)] = (clock.monotonic(), found)
    return checked[1]


_PG_SETTLE = "SELECT canny_budget_settle(?::bigint, ?::bigint[], ?::bigint)"


def _pg_settle(ledger: BudgetLedger, rid: int, ids: Sequence[int], charge: int) -> None:
    _one(ledger, _PG_SETTLE, (rid, list(ids), charge))


def resolve(ledger: BudgetLedger, keys: Sequence[CounterKey], now_us: int) -> list[int]:
    """The counter ids of ``keys`` (same order), creating and seeding those that are new
    (:func:`counters`), without the global lock: concurrent creators agree on one row."""
    with ledger.transaction() as tx:
        return [state.id for state in counters(tx, keys, now_us)]


@dataclass(frozen=True, slots=True)
class PgHold:
    """What ``canny_budget_reserve`` answered: the reservation id (``None``: not held), the
    counters as they were before it (``None``: a counter is gone, resolve again) and whether
    some lease ran out (``due``: run :func:`expire`)."""

    rid: int | None
    states: list[CounterState] | None
    due: bool
    #: How long the call waited for the counter rows' locks (µs): other processes' writes.
    waited_us: int = 0


def pg_reserve(
    ledger: BudgetLedger,
    ids: Sequence[int],
    limits: Sequence[int],
    amount: int | None,
    *,
    call_id: str,
    owner: str,
    now_us: int,
    expires_us: int,
) -> PgHold:
    """Hold ``amount`` on counters ``ids`` if it fits every limit (``limits``, same order;
    ``None``: only read them), in one round trip."""
    rid, spent, reserved, due, waited = _one(
        ledger,
        "SELECT * FROM canny_budget_reserve(?::bigint[], ?::bigint[], ?::bigint, ?, ?, ?::bigint, ?::bigint)",
        (list(ids), list(limits), amount, call_id, owner, now_us, expires_us),
    )[0]
    states = None
    if spent is not None:
        states = [CounterState(int(i), int(s), int(r)) for i, s, r in zip(ids, spent, reserved, strict=True)]
    return PgHold(None if rid is None else int(rid), states, bool(due), int(waited or 0))


@dataclass(frozen=True, slots=True)
class SliceRefill:
    """What ``canny_budget_slice`` answered: the slice's id now (``None``: none held),
    the amount added to it and whether some lease ran out."""

    sid: int | None
    granted: int
    due: bool


def pg_slice(
    ledger: BudgetLedger,
    sid: int | None,
    ids: Sequence[int],
    limits: Sequence[int],
    *,
    charge: int,
    give_back: int,
    need: int,
    share: int,
    cap: int,
    owner: str,
    now_us: int,
    expires_us: int,
) -> SliceRefill:
    """In one round trip: charge ``charge`` to counters ``ids``; if slice ``sid`` is still
    held, give ``give_back`` of it back and renew its lease; then, if ``need`` > 0, add
    ``min(headroom // share, cap)`` to the slice (a new one if none is held) when that is at
    least ``need``."""
    new, granted, due = _one(
        ledger,
        "SELECT * FROM canny_budget_slice(?::bigint, ?::bigint[], ?::bigint[], ?::bigint, ?::bigint, ?::bigint, "
        "?::bigint, ?::bigint, ?, ?::bigint, ?::bigint)",
        (sid, list(ids), list(limits), charge, give_back, need, share, cap, owner, now_us, expires_us),
    )[0]
    return SliceRefill(None if new is None else int(new), int(granted), bool(due))


def reservation_summary(tx: Transaction) -> tuple[int, int, int | None]:
    """``(held, expired tombstones, earliest lease end of the held ones)``."""
    held = tx.execute("SELECT count(*), min(expires_at_us) FROM budget_reservations WHERE state = 'held'")[0]
    gone = tx.execute("SELECT count(*) FROM budget_reservations WHERE state = 'expired'")[0][0]
    return int(held[0]), int(gone), None if held[1] is None else int(held[1])
