"""THE rule that lowers max_tokens to what the money allows
(canny.budget.clamp.affordable_max_tokens), checked against exact Fraction arithmetic, and
its three users: the per-call max_cost, stored budgets and the session cost cap."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canny import budget, errors
from canny._call import CallSpec
from canny.budget import MIN_MAX_TOKENS, affordable_max_tokens, worst_case_at
from canny.errors import CannyWarning
from canny.ledger import open_ledger

MODEL = "claude-sonnet-5-5"

# Amounts as callers pass them: Decimal dollars down to a pico-dollar and past it (the
# session's running cost), or integer pico-dollars (the stored budgets).
_decimals = st.decimals(min_value=0, max_value=1000, places=15, allow_nan=False, allow_infinity=False)
_picos = st.integers(min_value=0, max_value=10**15)
_money = st.one_of(_decimals, _picos)


def _cost(floor: Fraction, per_token: Fraction, tokens: int) -> Fraction:
    return floor + per_token * tokens


@given(
    max_tokens=st.integers(min_value=1, max_value=200_000),
    floor=_money,
    extra=_money,
    headroom=st.one_of(_money, _decimals.map(lambda d: -d)),
    lowest=st.integers(min_value=1, max_value=64),
)
def test_affordable_max_tokens_never_exceeds_the_money_and_is_the_largest_that_fits(
    max_tokens: int, floor: Decimal | int, extra: Decimal | int, headroom: Decimal | int, lowest: int
) -> None:
    """affordable_max_tokens: the count returned costs at most the headroom (exactly), is the
    largest such count up to max_tokens, and None means no count from `lowest` up fits."""
    if isinstance(floor, int) != isinstance(extra, int):
        extra = int(extra) if isinstance(floor, int) else Decimal(extra)
    worst = floor + extra
    got = affordable_max_tokens(max_tokens, worst=worst, headroom=headroom, floor=floor, lowest=lowest)
    f, room = Fraction(floor), Fraction(headroom)
    per_token = (Fraction(worst) - f) / max_tokens
    if got is None:  # the whole call does not fit, nor does any count from `lowest` up
        assert Fraction(worst) > room
        assert lowest >= max_tokens or _cost(f, per_token, lowest) > room
    else:
        assert _cost(f, per_token, got) <= room  # never more than the money allows
        assert got == max_tokens or _cost(f, per_token, got + 1) > room  # and the most it allows
        assert got == max_tokens or got >= lowest
        assert worst_case_at(got, max_tokens=max_tokens, worst=worst, floor=floor) == _cost(f, per_token, got)


@given(
    max_tokens=st.integers(min_value=1, max_value=200_000),
    worst=_decimals,
    headroom=_decimals,
)
def test_without_a_floor_a_call_is_allowed_whole_or_refused(max_tokens: int, worst: Decimal, headroom: Decimal) -> None:
    """affordable_max_tokens without a floor (the session cap): max_tokens when the worst case
    fits the headroom exactly, else None; never a lower count."""
    got = affordable_max_tokens(max_tokens, worst=worst, headroom=headroom)
    assert got == (max_tokens if Fraction(worst) <= Fraction(headroom) else None)


def test_the_rule_in_numbers() -> None:
    """affordable_max_tokens: fits as is, lowered to the last whole token that fits, refused
    below MIN_MAX_TOKENS, refused when the input alone is over or output costs nothing."""
    assert affordable_max_tokens(1000, worst=100, headroom=100, floor=0) == 1000
    assert affordable_max_tokens(1000, worst=100, headroom=Decimal("50.05"), floor=0) == 500
    assert affordable_max_tokens(1000, worst=2000, headroom=1016, floor=1000) == MIN_MAX_TOKENS
    assert affordable_max_tokens(1000, worst=2000, headroom=Decimal("1015.9"), floor=1000) is None
    assert affordable_max_tokens(1000, worst=1100, headroom=999, floor=1000) is None
    assert affordable_max_tokens(1000, worst=1000, headroom=999, floor=1000) is None
    assert affordable_max_tokens(10, worst=10, headroom=10, floor=0) == 10  # fits: below the minimum is fine
    assert affordable_max_tokens(0, worst=5, headroom=1, floor=0) is None


def _spec(max_tokens: int = 1000) -> CallSpec:
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hello there"}]}
    return CallSpec(model=MODEL, params=body, stream=True)


def test_max_cost_guard_lowers_by_the_rule() -> None:
    """MaxCostGuard (per-call max_cost) sends what affordable_max_tokens allows, with a warning."""
    spec = _spec()
    worst, floor = spec.worst_case(), spec.worst_case(0)
    assert worst is not None and floor is not None
    limit = floor + (worst - floor) * Decimal("0.37")
    expected = affordable_max_tokens(spec.max_tokens, worst=worst, headroom=limit, floor=floor)
    assert expected is not None and MIN_MAX_TOKENS <= expected < spec.max_tokens
    with pytest.warns(CannyWarning, match=f"max_tokens lowered from 1000 to {expected}"):
        held = budget.MaxCostGuard(limit).reserve(spec)
    assert held.max_tokens == expected
    sent = spec.worst_case(expected)
    assert sent is not None and sent <= limit


def test_max_cost_guard_refuses_below_the_minimum() -> None:
    """MaxCostGuard refuses (BudgetExceeded, budget "call") when not even MIN_MAX_TOKENS fit."""
    spec = _spec()
    floor = spec.worst_case(0)
    assert floor is not None
    with pytest.raises(errors.BudgetExceeded, match="over its max_cost") as caught:
        budget.MaxCostGuard(floor).reserve(spec)
    assert caught.value.budget == "call"


def test_budget_guard_holds_at_most_the_room(tmp_path: Path) -> None:
    """BudgetGuard's lowered hold (pico-dollars, rounded up) is the rule's count priced on the
    same line, and never more than what the budget has left."""
    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        spec = _spec()
        worst, floor = spec.worst_case(), spec.worst_case(0)
        assert worst is not None and floor is not None
        limit = (floor + (worst - floor) * Decimal("0.5")).quantize(Decimal("0.000001"))
        budget.set_budget(ledger, period="day", limit=limit)
        now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
        guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), clock=lambda: now)
        full, low = math.ceil(worst.scaleb(12)), math.ceil(floor.scaleb(12))
        expected = affordable_max_tokens(1000, worst=full, headroom=math.floor(limit.scaleb(12)), floor=low)
        with pytest.warns(CannyWarning, match="to fit the day budget"):
            held = guard.reserve(spec)
        assert isinstance(held, budget.LedgerReservation)
        assert held.max_tokens == expected
        pico = math.ceil(worst_case_at(held.max_tokens, max_tokens=1000, worst=full, floor=low))
        assert held.amount == Decimal(pico).scaleb(-12)
        assert held.amount <= limit
    finally:
        ledger.close()
