"""The budget guard's per-call path: the worst case with no output asked only when a call
does not fit, counter keys kept for their window only, and slices that grow for a busy
process (still a bounded share of the headroom)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from canny import budget
from canny.budget import slices, store
from canny.ledger.sqlite import SQLiteLedger

NOW = datetime(2026, 11, 24, 23, 59, tzinfo=UTC)


@dataclass
class _Call:
    """A call whose worst case is $0.30 at 1,000 output tokens and $0.10 with none."""

    max_tokens: int = 1000
    model: str = "claude-sonnet-5-5"
    project: str | None = None
    tags: tuple[str, ...] = ()
    key_fingerprint: str | None = None
    call_id: str = "call-1"
    asked: list[int | None] = field(default_factory=list)

    def worst_case(self, max_tokens: int | None = None) -> Decimal:
        self.asked.append(max_tokens)
        tokens = self.max_tokens if max_tokens is None else max_tokens
        return Decimal("0.10") + Decimal("0.0002") * tokens


def test_a_call_that_fits_asks_its_worst_case_once(ledger: SQLiteLedger) -> None:
    """A call within its budget prices its worst case once; the no-output case is never asked."""
    budget.set_budget(ledger, period="day", limit="5")
    call = _Call()
    held = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), clock=lambda: NOW).reserve(call)
    assert (held.max_tokens, call.asked) == (1000, [None])
    held.settle(Decimal("0.25"))
    (status,) = budget.budget_status(ledger, now=NOW)
    assert (status.spent, status.reserved) == (Decimal("0.25"), Decimal(0))


def test_a_call_that_does_not_fit_is_lowered_from_its_no_output_worst_case(ledger: SQLiteLedger) -> None:
    """With $0.20 left, a $0.30 call is lowered to 500 tokens: 0.10 + 500 × 0.0002 = $0.20."""
    budget.set_budget(ledger, period="day", limit="0.20")
    call = _Call()
    with pytest.warns(Warning, match="max_tokens lowered from 1000 to 500"):
        held = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), clock=lambda: NOW).reserve(call)
    assert held.max_tokens == 500
    assert sorted(call.asked, key=str) == [0, None]
    (status,) = budget.budget_status(ledger, now=NOW)
    assert status.reserved == Decimal("0.2")


def test_one_guard_moves_to_the_next_days_counter_at_midnight(ledger: SQLiteLedger) -> None:
    """A guard kept across midnight charges the new day: yesterday's $0.90 of $1 does not refuse today's call."""
    budget.set_budget(ledger, period="day", limit="1")
    clock = [NOW]
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), clock=lambda: clock[0])
    guard.reserve(_Call(call_id="late")).settle(Decimal("0.90"))
    clock[0] = NOW + timedelta(minutes=2)  # 00:01 the next day
    held = guard.reserve(_Call(call_id="early"))
    assert held.max_tokens == 1000
    held.settle(Decimal("0.30"))
    before, after = budget.budget_status(ledger, now=NOW)[0], budget.budget_status(ledger, now=clock[0])[0]
    assert (before.window.label, before.spent) == ("2026-11-24", Decimal("0.9"))
    assert (after.window.label, after.spent) == ("2026-11-25", Decimal("0.3"))


def test_a_busy_process_gets_bigger_slices_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refills less than FLUSH_SECONDS apart double the cap (256, 512, ... 4,096 worst cases); a slow one resets it."""
    clock = [1000.0]
    monkeypatch.setattr(slices, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    caps: list[int] = []

    def refill(*_: Any, need: int, cap: int, **__: Any) -> store.SliceRefill:
        if need:
            caps.append(cap // need)
        return store.SliceRefill(sid=7, granted=cap, due=False)

    monkeypatch.setattr(store, "pg_slice", refill)
    book = slices.SliceBook(SimpleNamespace(location="fake"), (1,), "host:1")
    worst = 3 * 10**9  # $0.003 in pico-dollars
    for _ in range(256 + 512 + 1024 + 2048 + 4096 + 4096 + 1):
        clock[0] += 0.0001
        assert book.take(worst, 200, [10**15], 60.0) is not None
    clock[0] += slices.FLUSH_SECONDS * 2  # a quiet spell: the next refill is a first one again
    book.free = 0
    assert book.take(worst, 200, [10**15], 60.0) is not None
    assert caps == [256, 512, 1024, 2048, 4096, 4096, 4096, 256]
