"""The opt-in refusal fallback: after a ``refusal``, ask the named model once more.

``client.create(prompt, fallback_model="opus")`` (and ``stream``, sync and async, and
``canny ask --fallback-model``) sends the call as usual. If the answer ends with
``stop_reason: "refusal"``, the same request is sent once to the fallback model, as a new
call: its own ``call_id``, reserved against every budget like any call, with its own
ledger rows. Nothing about it is silent: a :class:`~canny.errors.CannyWarning` names the
refusal and the model asked next, both calls are in the ledger with their costs, and the
result returned covers both (``usage``, ``cost`` and ``attempts`` add up; ``model`` and
``text`` are the fallback's).

This module holds THE decision (:func:`fallback_spec`) and how two results become one
(:func:`merged`); the clients only drive the I/O. A per-call ``max_cost`` covers both
calls: the fallback may spend what the refused call left of it.
"""

from __future__ import annotations

import dataclasses
import warnings
from decimal import Decimal

from canny._call import CallSpec
from canny.errors import CannyWarning
from canny.ids import new_id
from canny.result import CallResult

__all__ = ["announce", "fallback_spec", "merged"]


def fallback_spec(spec: CallSpec, result: CallResult) -> CallSpec | None:
    """The call to send after ``result`` (of ``spec``), or ``None``: only a ``refused``
    result of a spec that names a ``fallback_model`` gets one, and only once (the
    fallback's own spec names none)."""
    model = spec.fallback_model
    if model is None or result.outcome != "refused":
        return None
    limit = spec.max_cost
    if limit is not None:
        limit = max(limit - (result.cost or Decimal(0)), Decimal(0))
    return dataclasses.replace(
        spec,
        model=model,
        params={**spec.params, "model": model},
        call_id=new_id(),
        max_cost=limit,
        fallback_model=None,
    )


def announce(refused: CallResult, fallback: CallSpec) -> None:
    """Say (as a :class:`~canny.errors.CannyWarning`) that a refusal is being retried."""
    from canny.pricing import format_usd

    category = f"category {refused.refusal_category}, " if refused.refusal_category else ""
    spent = format_usd(refused.cost) if refused.cost is not None else "$ unpriced"
    tokens = f"{refused.usage.input}/{refused.usage.output} tokens in/out"
    warnings.warn(
        f"{refused.model} declined to answer ({category}{tokens}, {spent}); asking {fallback.model} once,"
        " as fallback_model says (both calls are in the ledger and in the usage line)",
        CannyWarning,
        stacklevel=4,
    )


def merged(first: CallResult, second: CallResult) -> CallResult:
    """One result for a refused call and its fallback: the fallback's answer, with the
    usage, cost (unpriced if either is) and attempts of both."""
    cost = None if first.cost is None or second.cost is None else first.cost + second.cost
    return dataclasses.replace(
        second,
        usage=first.usage + second.usage,
        cost=cost,
        attempts=first.attempts + second.attempts,
    )
