"""A slice's write on SQLite: what ``canny_budget_slice`` does on PostgreSQL, in one
``BEGIN IMMEDIATE`` transaction.

:class:`canny.budget.slices.SliceBook` keeps a process's share of a counter set's headroom
in memory and writes it back now and then: what its calls spent, what they did not use,
and a refill when it runs dry. On PostgreSQL that write is one call of a server-side
function; here it is :func:`refill`, one short write transaction under the database's
write lock, so it is serialised with every reservation, settle and other slice of every
process sharing the file. That lock is what makes a grant safe: the headroom it is cut
from (``limit − spent − reserved`` on every counter) cannot move while it is decided, and
the granted amount counts as reserved from the commit on.

The same transaction ends the leases that ran out (attempts in flight become ``lost``,
reservations and slices of dead processes are charged what the ledger holds for them, see
:func:`canny.budget.store.expire`), as the direct reservation does, and decides the budget
alerts the charge crossed (:func:`canny.budget.alerts.crossed`), delivered by the caller
after commit.
"""

from __future__ import annotations

# SQL here is built from constants and ``?`` placeholders only; values are never spliced in.
# ruff: noqa: S608
import json
from collections.abc import Sequence
from dataclasses import dataclass

from canny.budget import store
from canny.budget.alerts import Alert, crossed
from canny.ledger.budget_tables import update_counters
from canny.ledger.migrations import Transaction

__all__ = ["SliceWrite", "refill"]


@dataclass(frozen=True, slots=True)
class SliceWrite:
    """What one write of a slice asks (on either database): charge ``charge`` to counters
    ``ids``; if slice ``sid`` is still held, give ``give_back`` of it back and renew its
    lease to ``expires_us``; then, if ``need`` > 0, add ``min(headroom // share, cap)`` to
    the slice (a new one, owned by ``owner``, if none is held) when that is at least
    ``need``, the headroom being the least of ``limit − spent − reserved`` over the
    counters (``limits``: the tightest limit of each, same order as ``ids``)."""

    sid: int | None
    ids: Sequence[int]
    limits: Sequence[int]
    charge: int
    give_back: int
    need: int
    share: int
    cap: int
    owner: str
    now_us: int
    expires_us: int


def refill(db: store.BudgetLedger, ask: SliceWrite) -> tuple[store.SliceRefill, list[Alert]]:
    """``ask`` in one write transaction, after ending the leases that ran out. A slice left
    empty is deleted. Returns the answer (``sid`` ``None``: no slice held now) and the
    alerts the charge fired, to deliver after commit."""
    sid, ids, charge, give_back, now_us = ask.sid, ask.ids, ask.charge, ask.give_back, ask.now_us
    granted = 0
    with store.begin(db) as tx:
        db.sweep_lost_in(tx, now_us)
        store.expire(tx, now_us)  # this very slice, if its lease ran out: then it is gone
        held = sid is not None and bool(
            tx.execute("SELECT 1 FROM budget_slices WHERE id = ? AND state = 'held'", (sid,))
        )
        update_counters(tx, ids, reserved=-give_back if held else 0, spent=charge)
        current = sid if held else None
        if held:
            tx.execute(
                "UPDATE budget_slices SET amount_pico = amount_pico - ?, spent_pico = spent_pico + ?, "
                "expires_at_us = ? WHERE id = ?",
                (give_back, charge, ask.expires_us, sid),
            )
        if ask.need > 0:
            granted = _grant(tx, ids, ask.limits, need=ask.need, share=ask.share, cap=ask.cap)
            if granted and current is None:
                current = int(
                    tx.execute(
                        "INSERT INTO budget_slices (owner, counters, amount_pico, leased_at_us, expires_at_us) "
                        "VALUES (?, ?, ?, ?, ?) RETURNING id",
                        (ask.owner, json.dumps(list(ids)), granted, now_us, ask.expires_us),
                    )[0][0]
                )
            elif granted:
                tx.execute("UPDATE budget_slices SET amount_pico = amount_pico + ? WHERE id = ?", (granted, current))
        if current is not None and not granted:
            gone = tx.execute("DELETE FROM budget_slices WHERE id = ? AND amount_pico = 0 RETURNING id", (current,))
            if gone:
                current = None
        fired = crossed(tx, ids, now_us) if charge else []
    return store.SliceRefill(current, granted, due=False), fired


def _grant(tx: Transaction, ids: Sequence[int], limits: Sequence[int], *, need: int, share: int, cap: int) -> int:
    """Reserve a new share on counters ``ids`` and return it (0 when it would be less than ``need``)."""
    marks = ", ".join("?" * len(ids))
    found = tx.execute(f"SELECT id, spent_pico, reserved_pico FROM budget_counters WHERE id IN ({marks})", list(ids))
    rows = {int(cid): int(spent) + int(reserved) for cid, spent, reserved in found}
    if len(rows) < len(ids):  # a counter went (its budget was removed): no grant
        return 0
    room = min(limit - rows[cid] for cid, limit in zip(ids, limits, strict=True))
    share_of_room = min(max(room, 0) // share, cap)
    if share_of_room < need:
        return 0
    update_counters(tx, ids, reserved=share_of_room)
    return share_of_room
