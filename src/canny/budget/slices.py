"""Budgets without a write per call: slices of headroom (SQLite and PostgreSQL), and one
round trip per reservation on PostgreSQL.

:class:`~canny.budget.guard.BudgetGuard` hands a PostgreSQL ledger's reservations to
:func:`reserve`, and a SQLite ledger's to :func:`take` first when that ledger writes behind
the call (a client's or meter's: :attr:`~canny.ledger._sql.SQLLedger.writes_behind`). Two
ways to hold a call's worst case:

**Direct**: on PostgreSQL one call of ``canny_budget_reserve``
(:func:`canny.budget.store.pg_reserve`) locks the call's counter rows (in id order), checks
every limit and holds the worst case, or answers where the counters stand so the guard can
lower ``max_tokens`` (:func:`~canny.budget.clamp.affordable_max_tokens`) and try again with
the amount that fits. Settling is one call of ``canny_budget_settle``. Counter ids are
looked up once per window and kept (:class:`_Budgets`). On SQLite the guard holds it in one
write transaction of its own (``BudgetGuard._hold``).

**Slices**, once a counter set is *hot* (this process reserved against it :data:`HOT_CALLS`
times within a second, or, on PostgreSQL, a reservation waited :data:`HOT_WAIT_US` or more
for its counter rows' locks; it stays hot for :data:`HOT_SECONDS`): the process leases a
bounded share of the headroom, ``min(headroom // SHARE, CAP_CALLS × the call's worst
case)`` (the cap doubles, up to :data:`MAX_CAP_CALLS`, while the process refills more than
once a second), into a :class:`SliceBook` (a ``budget_slices`` row whose amount counts as
reserved on the counters), then reserves from it and settles into it in memory. What it
spent is written to the counters, and what it did not spend given back, in one write
(``canny_budget_slice`` on PostgreSQL, :func:`canny.budget.sqlite_slices.refill` on SQLite)
when the slice runs dry (together with the refill), every :data:`FLUSH_SECONDS` (renewing
its lease), when the limits it was cut under change, when the process stops using it (at
its next call after :data:`FLUSH_SECONDS` of not), and when the ledger is closed. Near the
limit a share is smaller than a call's worst case: no slice is granted, what the process
holds goes back, and calls take the direct path, so the last dollars are reserved exactly,
with ``max_tokens`` lowered as usual.

A settle reaches its slice on the ledger's writer thread, after the call's row is written
(:meth:`~canny.ledger._sql.SQLLedger.defer`): what a slice writes to the counters is
always spend whose rows are already in the ledger.

On SQLite, the check that the stored limits did not change (``change_stamp``, one small
read the client makes anyway) comes first: when they did, every slice of the ledger is
written back and the counter ids are looked up again, so a budget changed, removed or set
again by another process applies to the very next call, not to a slice cut before it.

Zero overspend: a slice is granted only from headroom (``spent + reserved ≤ limit`` on
every counter, decided under the counter rows' locks or SQLite's write lock), and the calls
reserved from it never hold more than it. A process that dies holding a slice loses nothing
for good: when the slice's lease ends, :func:`canny.budget.store.expire` charges what the
ledger holds that no counter counted (the dead process's finished and ``lost`` attempts),
at most the slice, and frees the rest. A forked child starts with no slices (its parent's
stay the parent's).
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol, TypeVar

from canny.budget import sqlite_slices, store
from canny.budget.alerts import Alert, deliver
from canny.budget.sqlite_slices import SliceWrite
from canny.errors import CannyWarning, LedgerError
from canny.units import pico_to_usd, to_us, usd_to_pico


class Decided(Protocol):
    """What the guard's decision gives: the amount to hold (``None``: refuse)."""

    @property
    def amount(self) -> int | None: ...


D = TypeVar("D", bound=Decided)

__all__ = [
    "CAP_CALLS",
    "DENIED_SECONDS",
    "FLUSH_SECONDS",
    "HOT_CALLS",
    "HOT_SECONDS",
    "HOT_WAIT_US",
    "MAX_CAP_CALLS",
    "SHARE",
    "SliceBook",
    "SliceReservation",
    "held_slices",
    "maintain",
    "reserve",
    "return_slices",
    "take",
]

#: A counter set is hot once this process reserved against it this many times in a second ...
HOT_CALLS = 16
#: ... or once a reservation waited this long (µs) for its rows: about one commit's disk flush.
HOT_WAIT_US = 2000
#: ... and it stays hot this long (seconds) after the last sign.
HOT_SECONDS = 10.0
#: A slice takes at most ``1/SHARE`` of the headroom left on its tightest counter ...
SHARE = 16
#: ... and at most this many worst cases of the call that asked for it (the first time) ...
CAP_CALLS = 256
#: ... doubled at each refill that comes within :data:`FLUSH_SECONDS` of the one before
#: (a busy process), up to this many; back to :data:`CAP_CALLS` after a slower one.
MAX_CAP_CALLS = 4096
#: After a share was refused (too little headroom), calls go direct this long (seconds).
DENIED_SECONDS = 1.0
#: Settlements are written to the counters (and the slice's lease renewed) at least this often.
FLUSH_SECONDS = 1.0
#: Tries of the direct path before giving up on a counter set that keeps moving.
_TRIES = 8


def maintain(db: store.BudgetLedger, now_us: int) -> None:
    """End what ran out by ``now_us`` (lost attempts, reservations, slices) under the budget
    lock: the rare path, taken when a reservation reports that a lease is due. A failure
    (a deadlock with a settle of one of the same rows, a lost connection) leaves the work
    to the next one: holds that should have ended only make budgets look fuller."""
    try:
        with store.begin(db) as tx:
            db.sweep_lost_in(tx, now_us)
            store.expire(tx, now_us)
    except LedgerError as exc:
        warnings.warn(f"budget leases not ended this time ({exc})", CannyWarning, stacklevel=2)


@dataclass(eq=False)
class SliceReservation:
    """A call's worst case (``pico``) held in memory from a :class:`SliceBook` of the given
    ``generation``; ends once. It has no reservation row (``id`` is ``None``): the slice's
    lease covers the call."""

    book: SliceBook
    generation: int
    pico: int
    max_tokens: int
    done: bool = False
    id: None = None

    @property
    def amount(self) -> Decimal:
        """The worst case held, in dollars."""
        return pico_to_usd(self.pico)

    def settle(self, cost: Decimal | None) -> None:
        """Charge the call's actual cost (``None``, unpriced: the worst case) to the slice."""
        if not self.done:
            self.done = True
            self.book.end(self, self.pico if cost is None else usd_to_pico(cost))

    def release(self) -> None:
        """Nothing was sent: the worst case goes back to the slice."""
        if not self.done:
            self.done = True
            self.book.end(self, None)

    def renew(self, seconds: float | None = None) -> bool:
        """Renew the slice's lease; ``False`` when it already ended."""
        return not self.done and self.book.renew(self.generation)


class SliceBook:
    """One process's slice of one counter set, shared by its threads.

    In memory: ``free`` (not reserved by a call), ``outstanding`` (held by calls in
    flight), ``released`` and ``charged`` (worst cases and costs of the calls that ended,
    not yet written). The slice row's amount is ``free + outstanding + released``.
    ``generation`` changes when the slice row ends under the process (its lease ran out):
    calls still holding the old one then only add their cost.
    """

    def __init__(self, db: store.BudgetLedger, ids: tuple[int, ...], owner: str) -> None:
        self.db = db
        self.ids = ids
        self.owner = owner
        self.limits: Sequence[int] = ()
        self.lease = 60.0
        self.sid: int | None = None
        self.generation = 0
        self.free = self.outstanding = self.released = self.charged = 0
        self.flushed_at = time.monotonic()
        self.denied_until = 0.0
        #: Worst cases the next refill may take (:data:`CAP_CALLS` .. :data:`MAX_CAP_CALLS`).
        self.calls = CAP_CALLS
        self.refilled_at = -math.inf
        #: When a call last took from the slice (an idle book is written back: :meth:`idle`).
        self.used_at = time.monotonic()
        self._refill: _Refill = sqlite_slices.refill if getattr(db, "dialect", None) == "sqlite" else _pg_refill
        self._lock = threading.Lock()

    def take(self, amount: int, max_tokens: int, limits: Sequence[int], lease: float) -> SliceReservation | None:
        """Hold ``amount`` from the slice, refilling it first if needed; ``None`` when no
        slice can be had (near the limit: the caller takes the direct path)."""
        with self._lock:
            now = self.used_at = time.monotonic()
            changed = self.sid is not None and bool(self.limits) and list(limits) != list(self.limits)
            self.limits, self.lease = limits, lease
            if changed:  # cut under other limits: given back and cut again, in one write
                self._write(need=amount)
                self.denied_until = 0.0 if self.free >= amount else time.monotonic() + DENIED_SECONDS
            elif self.sid is not None and now - self.flushed_at >= FLUSH_SECONDS:
                self._write(need=0)  # also finds out whether the row still stands (a reset, a lease)
            if self.free < amount and now >= self.denied_until:
                self._write(need=amount)
                if self.free < amount:  # near the limit: let calls go direct for a while
                    self.denied_until = time.monotonic() + DENIED_SECONDS
            if self.free < amount:
                return None
            self.free -= amount
            self.outstanding += amount
            return SliceReservation(self, self.generation, amount, max_tokens)

    def end(self, held: SliceReservation, charge: int | None) -> None:
        """A call from the slice ended: ``charge`` it (``None``: nothing was sent)."""
        with self._lock:
            current = held.generation == self.generation
            if current:
                self.outstanding -= held.pico
            if charge is None:
                self.free += held.pico if current else 0
            else:
                self.released += held.pico if current else 0
                self.charged += charge
            if time.monotonic() - self.flushed_at >= FLUSH_SECONDS:
                self._write_quietly()

    def renew(self, generation: int) -> bool:
        with self._lock:
            self._write_quietly()
            return generation == self.generation and self.sid is not None

    def close(self) -> None:
        """Write what was spent and give back everything no call holds."""
        with self._lock:
            if self.sid is not None or self.charged:
                self._write(need=0, everything=True)

    def idle(self, now: float) -> bool:
        """Whether no call took from the slice for :data:`FLUSH_SECONDS` and something of it
        is still to write or give back."""
        return now - self.used_at >= FLUSH_SECONDS and (self.sid is not None or self.charged > 0)

    def _write_quietly(self) -> None:
        try:
            self._write(need=0)
        except LedgerError as exc:  # kept in memory: the next write carries it
            warnings.warn(f"budget slice not written ({exc}); it will be retried", CannyWarning, stacklevel=4)

    def _write(self, *, need: int, everything: bool = False) -> None:
        """Write the pending charges, give back what ended (and the free part when
        refilling or closing), renew the lease; add a new share when ``need`` > 0."""
        now = datetime.now().astimezone()
        give_back = self.released + (self.free if need or everything else 0)
        if need:  # a busy process refills less often: its slices grow (still at most 1/SHARE)
            moment = time.monotonic()
            busy = moment - self.refilled_at < FLUSH_SECONDS
            self.calls = min(self.calls * 2, MAX_CAP_CALLS) if busy else CAP_CALLS
            self.refilled_at = moment
        ask = SliceWrite(
            self.sid, self.ids, self.limits or [0] * len(self.ids), charge=self.charged, give_back=give_back,
            need=need, share=SHARE, cap=self.calls * need, owner=self.owner, now_us=to_us(now),
            expires_us=to_us(now + timedelta(seconds=self.lease)),
        )  # fmt: skip
        answer, fired = self._refill(self.db, ask)
        self.charged = self.released = 0
        if need or everything:
            self.free = 0
        if self.sid is not None and answer.sid != self.sid:
            # The row is gone: given back in full, or ended under us (its lease ran out, or
            # `canny budget reset --reservations`). Nothing in memory is backed any more:
            # calls still in flight from it will only add their cost.
            self.generation += 1
            self.outstanding = self.free = 0
        self.sid = answer.sid
        self.free += answer.granted
        self.flushed_at = time.monotonic()
        if fired:  # spend reached the counters: delivered outside this slice's lock (a command may take seconds)
            threading.Thread(target=deliver, args=(fired,), name="canny-budget-alerts").start()


_Refill = Callable[[store.BudgetLedger, SliceWrite], tuple[store.SliceRefill, list[Alert]]]


def _pg_refill(db: store.BudgetLedger, ask: SliceWrite) -> tuple[store.SliceRefill, list[Alert]]:
    """A slice's write on PostgreSQL: one round trip (``canny_budget_slice``); the rare lease
    ending when it reports one due; the alerts in a short transaction of their own when
    spend was charged. (SQLite: :func:`canny.budget.sqlite_slices.refill`.)"""
    answer = store.pg_slice(
        db, ask.sid, ask.ids, ask.limits, charge=ask.charge, give_back=ask.give_back, need=ask.need,
        share=ask.share, cap=ask.cap, owner=ask.owner, now_us=ask.now_us, expires_us=ask.expires_us,
    )  # fmt: skip
    if answer.due:
        maintain(db, ask.now_us)
    return answer, store.pg_alerts(db, ask.ids, ask.now_us) if ask.charge else []


class _Heat:
    """Recent reservations against one counter set: is it hot?"""

    __slots__ = ("seen", "until")

    def __init__(self) -> None:
        self.seen: deque[float] = deque(maxlen=HOT_CALLS)
        self.until = 0.0


@dataclass(eq=False, slots=True)
class _Route:
    """What a call against one list of counter keys and limits needs, worked out once:
    the counter ids (same order as the keys), the set of them in id order, the tightest
    limit of each, and the set's heat and slice."""

    ids: list[int]
    unique: tuple[int, ...]
    least: list[int]
    heat: _Heat
    book: SliceBook


#: Routes kept per ledger before the oldest are dropped (a new window makes new ones).
_ROUTES = 256


class _Budgets:
    """What one process keeps per ledger: counter ids by window, recent reservations per
    counter set (is it hot?) and the slices."""

    def __init__(self, db: store.BudgetLedger) -> None:
        self.db = db
        self.lock = threading.Lock()
        self.counter_ids: dict[tuple[str, ...], int] = {}
        self.routes: dict[tuple[object, ...], _Route] = {}
        self.heats: dict[tuple[int, ...], _Heat] = {}
        self.books: dict[tuple[int, ...], SliceBook] = {}
        #: The stored limits' change stamp the routes were worked out under (SQLite).
        self.stamp: object = None
        self.swept_at = time.monotonic()

    def check(self, stamp: object) -> None:
        """Before a call, the stored limits' change stamp: when it moved (a budget set,
        changed or removed by any process), every slice is written back and given back, and
        counter ids are looked up again, so the change applies to this very call."""
        if stamp == self.stamp:
            return
        with self.lock:
            if stamp == self.stamp:
                return
            moved, self.stamp = self.stamp is not None, stamp
            if moved:
                self.counter_ids.clear()
                self.routes.clear()
            books = list(self.books.values()) if moved else []
        for book in books:
            book.close()

    def sweep(self) -> None:
        """At most once per :data:`FLUSH_SECONDS`: write back and give back the slices no call
        took from in that long (a process whose calls stopped, or moved to other budgets)."""
        now = time.monotonic()
        if now - self.swept_at < FLUSH_SECONDS:
            return
        with self.lock:
            self.swept_at = now
            idle = [book for book in self.books.values() if book.idle(now)]
        for book in idle:
            try:
                book.close()
            except LedgerError as exc:  # kept in memory: the next sweep, close or exit carries it
                warnings.warn(f"budget slice not written ({exc}); it will be retried", CannyWarning, stacklevel=3)

    def route(self, keys: Sequence[store.CounterKey], limits: Sequence[int], owner: str, now_us: int) -> _Route:
        """The route of ``keys`` with ``limits``: a dictionary look-up once it is known."""
        found = self.routes.get(handle := (*keys, *limits))
        if found is not None:
            return found
        ids = self.ids(keys, now_us)
        unique = tuple(sorted(set(ids)))
        least = [min(lim for j, lim in zip(ids, limits, strict=True) if j == i) for i in unique]
        with self.lock:
            heat = self.heats.setdefault(unique, _Heat())
            book = self.books.get(unique)
            if book is None:
                book = self.books[unique] = SliceBook(self.db, unique, owner)
            if len(self.routes) >= _ROUTES:
                self.routes.clear()
            found = self.routes[handle] = _Route(ids, unique, least, heat, book)
        return found

    def ids(self, keys: Sequence[store.CounterKey], now_us: int) -> list[int]:
        with self.lock:
            known = [self.counter_ids.get(k.unique) for k in keys]
        if all(i is not None for i in known):
            return [i for i in known if i is not None]
        found = store.resolve(self.db, keys, now_us)
        with self.lock:
            self.counter_ids.update((k.unique, i) for k, i in zip(keys, found, strict=True))
        return found

    def forget(self) -> None:
        with self.lock:
            self.counter_ids.clear()
            self.routes.clear()

    def hot(self, route: _Route) -> bool:
        """Count one reservation along ``route``: is its counter set hot (or this process's
        slice of it still held)?"""
        now = time.monotonic()
        heat = route.heat
        with self.lock:
            seen = heat.seen
            seen.append(now)
            if len(seen) == HOT_CALLS and now - seen[0] < 1.0:
                heat.until = now + HOT_SECONDS
            return now < heat.until or route.book.sid is not None

    def waited(self, route: _Route, micros: int) -> None:
        """A reservation along ``route`` waited ``micros`` for the rows' locks."""
        if micros >= HOT_WAIT_US:
            with self.lock:
                route.heat.until = time.monotonic() + HOT_SECONDS

    def close(self) -> None:
        with self.lock:
            books = list(self.books.values())
        for book in books:
            book.close()


_states: weakref.WeakKeyDictionary[store.BudgetLedger, _Budgets] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def _state(db: store.BudgetLedger) -> _Budgets:
    found = _states.get(db)
    if found is not None:
        return found
    with _states_lock:
        found = _states.get(db)
        if found is None:
            found = _states[db] = _Budgets(db)
            on_close = getattr(db, "on_close", None)
            if on_close is not None:
                on_close(lambda: _forget(db))
    return found


def _forget(db: store.BudgetLedger) -> None:
    with _states_lock:
        found = _states.pop(db, None)
    if found is not None:
        found.close()


def _after_fork_in_child() -> None:
    """A forked child holds none of its parent's slices: it starts with none."""
    _states.clear()
    _states_lock.release()


if hasattr(os, "register_at_fork"):  # the lock is taken across fork, so the child's is free
    os.register_at_fork(
        before=_states_lock.acquire, after_in_parent=_states_lock.release, after_in_child=_after_fork_in_child
    )


@atexit.register
def return_slices() -> None:
    """Give back every slice this process holds (also run at exit, after the rows and
    settles the ledgers' writers still hold; a failure leaves the slice to its lease)."""
    with _states_lock:
        states = list(_states.values())
    for state in states:
        flush = getattr(state.db, "flush", None)
        try:
            if flush is not None:
                flush()  # settles queued on the writer reach their slices first
            state.close()
        except LedgerError:
            continue


def reserve(
    db: store.BudgetLedger,
    *,
    owner: str,
    lease: float,
    call_id: str,
    max_tokens: int,
    limits: list[int],
    keys: list[store.CounterKey],
    now_us: int,
    full: int,
    decide: Callable[[list[store.CounterState]], D],
) -> SliceReservation | tuple[int | None, list[int], D]:
    """Hold a call's worst case (``full`` pico-dollars, at ``max_tokens``) against the
    budgets of counters ``keys`` (their limits in pico-dollars: ``limits``, same order) on
    PostgreSQL: a :class:`SliceReservation` from a hot counter set's slice, else
    ``(reservation id or None when refused, counter ids, decision)``; ``decide`` is the
    guard's rule from the counters to what to hold."""
    state = _state(db)
    state.sweep()
    expires_us = now_us + math.ceil(lease * 1_000_000)
    for _ in range(_TRIES):
        route = state.route(keys, limits, owner, now_us)
        ids, unique = route.ids, route.unique
        if full > 0 and state.hot(route):
            taken = route.book.take(full, max_tokens, route.least, lease)
            if taken is not None:
                return taken
        amount: int | None = full
        decision: D | None = None
        for _ in range(_TRIES):
            hold = store.pg_reserve(
                db, ids, limits, amount, call_id=call_id, owner=owner, now_us=now_us, expires_us=expires_us
            )
            state.waited(route, hold.waited_us)
            if hold.due:
                maintain(db, now_us)
            if hold.states is None:
                state.forget()  # a counter went (its budget was removed): look them up again
                break
            if hold.rid is not None:
                if decision is None:
                    decision = decide(hold.states)
                return hold.rid, list(unique), decision
            decision = decide(hold.states)
            if decision.amount is None and not hold.due:
                return None, list(unique), decision
            if decision.amount is None:  # leases ended just now: try the full amount again
                amount, decision = full, None
            else:
                amount = decision.amount
        else:
            if decision is not None:
                return None, list(unique), decision
    raise LedgerError(f"ledger {db.location}: the budget counters kept changing; try again")


def take(
    db: store.BudgetLedger,
    *,
    owner: str,
    lease: float,
    max_tokens: int,
    limits: list[int],
    keys: list[store.CounterKey],
    now_us: int,
    full: int,
    stamp: tuple[object, ...],
) -> SliceReservation | None:
    """SQLite: hold a call's worst case (``full`` pico-dollars, at ``max_tokens``) from this
    process's slice of counters ``keys`` (their limits in pico-dollars: ``limits``, same
    order), in memory, when that counter set is hot; ``None`` when it is not or no slice can
    be had (the guard then holds the call in a write transaction of its own). ``stamp``, the
    stored limits' :func:`~canny.budget.limits.limits_stamp` of this call, is checked first
    (:meth:`_Budgets.check`)."""
    state = _state(db)
    state.check(stamp)
    state.sweep()
    route = state.route(keys, limits, owner, now_us)
    if full > 0 and state.hot(route):
        return route.book.take(full, max_tokens, route.least, lease)
    return None


def held_slices(ledger: store.BudgetLedger) -> tuple[int, int, int | None]:
    """``(slices held, their amount in pico-dollars, earliest lease end in UTC µs)``: what
    running processes hold as slices, counted in their counters' ``reserved``."""
    with ledger.transaction(write=False) as tx:
        count, amount, first = tx.execute(
            "SELECT count(*), coalesce(sum(amount_pico), 0), min(expires_at_us) FROM budget_slices WHERE state = 'held'"
        )[0]
    return int(count), int(amount), None if first is None else int(first)
