"""THE rule that lowers ``max_tokens`` to what the money allows.

Every cost check of canny asks :func:`affordable_max_tokens`: the per-call ``max_cost``
(:class:`~canny.budget.MaxCostGuard`), the stored and profile budgets
(:class:`~canny.budget.BudgetGuard`, in integer pico-dollars, against the tightest of
several budgets) and a session's cost cap (``canny.session``, which never lowers).

A call's worst case is a line in its ``max_tokens``: the input (estimated high) costs
``floor`` whatever the answer, and each output token adds the same amount, so the worst
case at ``n`` output tokens is ``floor + n * (worst - floor) / max_tokens``
(:func:`worst_case_at`). All arithmetic here is exact (:class:`~fractions.Fraction`): a
count this module calls affordable never costs more than the money allows.
"""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

__all__ = ["MIN_MAX_TOKENS", "Money", "affordable_max_tokens", "worst_case_at"]

#: The smallest ``max_tokens`` a budget may lower a call to before refusing it.
MIN_MAX_TOKENS = 16

#: An exact amount of money, in any unit (dollars as a Decimal, pico-dollars as an int).
Money = Decimal | Fraction | int


def affordable_max_tokens(
    max_tokens: int,
    *,
    worst: Money,
    headroom: Money,
    floor: Money | None = None,
    lowest: int = MIN_MAX_TOKENS,
) -> int | None:
    """The ``max_tokens`` to send so that the call's worst case fits ``headroom``, or
    ``None``: the call must be refused.

    ``worst`` is the worst case at ``max_tokens``, ``floor`` the worst case at no output
    (``None``: the call cannot be lowered, only allowed or refused). When ``worst`` fits,
    the answer is ``max_tokens``; otherwise it is the largest count below ``max_tokens``
    whose worst case fits, or ``None`` when that is below ``lowest`` (or nothing fits: the
    input alone is over, or output costs nothing, so lowering cannot help).
    """
    worst_, headroom_ = Fraction(worst), Fraction(headroom)
    if worst_ <= headroom_:
        return max_tokens
    if floor is None or max_tokens <= 0:
        return None
    floor_ = Fraction(floor)
    if worst_ <= floor_ or headroom_ < floor_:
        return None
    per_token = (worst_ - floor_) / max_tokens
    affordable = min(max_tokens - 1, math.floor((headroom_ - floor_) / per_token))
    return affordable if affordable >= lowest else None


def worst_case_at(tokens: int, *, max_tokens: int, worst: Money, floor: Money) -> Fraction:
    """The worst case at ``tokens`` of output, on the line through ``floor`` (no output)
    and ``worst`` (``max_tokens`` of output), exactly."""
    floor_ = Fraction(floor)
    if max_tokens <= 0:
        return floor_
    return floor_ + (Fraction(worst) - floor_) * tokens / max_tokens
