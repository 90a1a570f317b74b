"""The budget tables' bookkeeping that the ledger itself needs.

The ledger owns every table in its database, the budget tables included (their migration
is ``budget.0001_tables`` in :mod:`canny.ledger.migrations`). Most of what is done with
them is the business of :mod:`canny.budget`; what lives here is the part the ledger must
do on its own: when it records an attempt in flight as ``lost`` (its process died), the
call's budget reservation ends and the billed input counts as spent
(:func:`charge_lost`), whether or not :mod:`canny.budget` was ever imported.
"""

# ruff: noqa: S608 - only "?" placeholders are interpolated into SQL text
from __future__ import annotations

import json
from collections.abc import Sequence

from canny.ledger.migrations import Transaction

__all__ = ["charge_lost", "counter_ids", "update_counters"]


def counter_ids(text: str) -> list[int]:
    """The counter ids a reservation row holds (a JSON list)."""
    return [int(i) for i in json.loads(text)]


def update_counters(tx: Transaction, ids: Sequence[int], *, reserved: int = 0, spent: int = 0) -> None:
    """Add ``reserved`` and ``spent`` (picodollars) to the counters ``ids``."""
    if not ids or (reserved == 0 and spent == 0):
        return
    marks = ", ".join("?" * len(ids))
    if tx.dialect == "postgres":
        # Lock in id order, as the budget functions do (migration budget.0003_slices), so
        # two transactions touching the same counters cannot deadlock.
        tx.execute(f"SELECT 1 FROM budget_counters WHERE id IN ({marks}) ORDER BY id FOR UPDATE", tuple(ids))
    tx.execute(
        f"UPDATE budget_counters SET reserved_pico = reserved_pico + ?, spent_pico = spent_pico + ? "
        f"WHERE id IN ({marks})",
        (reserved, spent, *ids),
    )


def charge_lost(tx: Transaction, rid: int, call_id: str) -> None:
    """An attempt of ``call_id`` was lost (its process died): end reservation ``rid`` now,
    charging what the ledger holds for the call, its ``lost`` rows included, so the billed
    input counts as spent and nothing stays reserved. If the lease already ended the
    reservation, only what was not charged then is added. The call id must match, so an id
    from another database cannot end the wrong reservation."""
    lock = " FOR UPDATE" if tx.dialect == "postgres" else ""  # a settle may run at the same time
    rows = tx.execute(
        "SELECT state, counters, amount_pico, charged_pico FROM budget_reservations "
        f"WHERE id = ? AND call_id = ?{lock}",
        (rid, call_id),
    )
    if not rows:
        return
    state, ids_text, amount, already = rows[0]
    charged = int(tx.execute("SELECT coalesce(sum(cost_pico), 0) FROM attempts WHERE call_id = ?", (call_id,))[0][0])
    if state == "held":
        update_counters(tx, counter_ids(ids_text), reserved=-int(amount), spent=charged)
    else:
        update_counters(tx, counter_ids(ids_text), spent=max(charged - int(already), 0))
    tx.execute(
        "UPDATE budget_reservations SET state = 'expired', charged_pico = ? WHERE id = ?",
        (max(charged, int(already)), rid),
    )
