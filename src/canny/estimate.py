"""What a call will cost, before it is sent: ``client.estimate(...)`` and ``canny estimate``.

::

    estimate = client.estimate("Summarise this contract ...", max_tokens=2000)
    estimate.input_tokens        # counted by the API's count_tokens endpoint (free)
    estimate.input_cost          # those tokens at the model's input rate
    estimate.max_cost            # input + max_tokens of output: the most the call can cost
    estimate.expected_cost       # input + the median output of past answers (None: no history)

The input count is the server's, from ``POST /v1/messages/count_tokens`` (offline: the
embedded emulator's), never the local character heuristic budgets use. The three costs
use one rule, :func:`canny.pricing.worst_case_cost` (input at the input rate, or at the
cache-write rate when the request marks a prefix for the cache; output at the output rate),
with 0, ``max_tokens`` and the history's median output tokens (at most ``max_tokens``).

The history is the ledger's ``ok`` rows of the same model carrying every tag the call would
carry: the median (p50) and p95 of their output tokens, by the nearest-rank rule. No such
rows: both percentiles and ``expected_cost`` are ``None``. Only a ledger that answers SQL
(SQLite, PostgreSQL) is asked with three small queries; another ledger is read row by row.
"""

# ruff: noqa: S608 - only "?" placeholders and fixed text are interpolated into the SQL

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from canny import errors

if TYPE_CHECKING:
    from canny._call import CallSpec
    from canny.ledger import Ledger

__all__ = ["COUNTED_KEYS", "Estimate", "count_body", "estimated", "output_history", "percentile"]

#: The request keys ``count_tokens`` takes: what the prompt is made of, not how it is answered.
COUNTED_KEYS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers")


@dataclass(frozen=True, slots=True)
class Estimate:
    """A call's cost before it is sent (money in dollars, ``None`` when unpriced or unknown)."""

    model: str
    input_tokens: int
    max_tokens: int
    input_cost: Decimal | None
    max_cost: Decimal | None
    expected_cost: Decimal | None
    expected_output_tokens_p50: int | None
    expected_output_tokens_p95: int | None
    #: How many ledger rows the expected figures come from.
    history_rows: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``canny estimate --json`` object: money as exact decimal strings."""

        from canny.reports import plain_decimal

        def money(value: Decimal | None) -> str | None:
            return None if value is None else plain_decimal(value)

        return {
            "model": self.model,
            "input_tokens": self.input_tokens,
            "max_tokens": self.max_tokens,
            "input_cost_usd": money(self.input_cost),
            "max_cost_usd": money(self.max_cost),
            "expected_cost_usd": money(self.expected_cost),
            "expected_output_tokens_p50": self.expected_output_tokens_p50,
            "expected_output_tokens_p95": self.expected_output_tokens_p95,
            "history_rows": self.history_rows,
        }


def count_body(params: Mapping[str, Any]) -> dict[str, Any]:
    """The ``count_tokens`` request for a Messages request's ``params``."""
    return {k: params[k] for k in COUNTED_KEYS if k in params}


def percentile(values: Sequence[int], p: int) -> int:
    """The nearest-rank ``p``-th percentile of sorted ``values`` (not empty)."""
    return values[max(math.ceil(p * len(values) / 100) - 1, 0)]


def output_history(ledger: Ledger | None, model: str, tags: Sequence[str]) -> tuple[int, int | None, int | None]:
    """``(rows, p50, p95)`` of the output tokens of the ledger's ``ok`` rows of ``model``
    that carry every one of ``tags``; ``(0, None, None)`` without such rows or a ledger."""
    if ledger is None:
        return 0, None, None
    wanted = sorted(set(tags))
    transaction = getattr(ledger, "transaction", None)
    if transaction is None:
        values = sorted(
            r.usage.output
            for r in ledger.records()
            if r.model == model and r.outcome == "ok" and set(wanted) <= set(r.tags)
        )
        if not values:
            return 0, None, None
        return len(values), percentile(values, 50), percentile(values, 95)
    where = "model = ? AND outcome = 'ok'"
    args: list[Any] = [model]
    if wanted:
        marks = ", ".join("?" * len(wanted))
        where += (
            f" AND (SELECT count(*) FROM attempt_tags t WHERE t.attempt_id = attempts.id AND t.tag IN ({marks})) = ?"
        )
        args += [*wanted, len(wanted)]
    with transaction(write=False) as tx:
        n = int(tx.execute(f"SELECT count(*) FROM attempts WHERE {where}", args)[0][0])
        if n == 0:
            return 0, None, None
        ranks = [max(math.ceil(p * n / 100) - 1, 0) for p in (50, 95)]
        found = [
            int(
                tx.execute(
                    f"SELECT output_tokens FROM attempts WHERE {where} ORDER BY output_tokens LIMIT 1 OFFSET ?",
                    [*args, k],
                )[0][0]
            )
            for k in ranks
        ]
    return n, found[0], found[1]


def estimated(spec: CallSpec, counted: bytes, ledger: Ledger | None) -> Estimate:
    """The :class:`Estimate` of ``spec`` from the ``count_tokens`` answer ``counted`` and
    the ledger's history (``None``: no history)."""
    try:
        answer = json.loads(counted)
        input_tokens = answer["input_tokens"]
    except (ValueError, KeyError, TypeError):
        raise errors.ServerError("count_tokens sent an answer without input_tokens") from None
    if not isinstance(input_tokens, int) or isinstance(input_tokens, bool) or input_tokens < 0:
        raise errors.ServerError(f"count_tokens sent input_tokens={input_tokens!r}, not a token count")
    rows, p50, p95 = output_history(ledger, spec.model, spec.tags)

    def worst(output: int) -> Decimal | None:
        from canny.pricing import worst_case_cost

        return worst_case_cost(
            spec.model,
            input_tokens=input_tokens,
            max_tokens=output,
            inference_geo=spec.params.get("inference_geo"),
            speed=spec.params.get("speed"),
            cache_ttl=spec.cache_ttl,
            table=spec.table,
        )

    return Estimate(
        model=spec.model,
        input_tokens=input_tokens,
        max_tokens=spec.max_tokens,
        input_cost=worst(0),
        max_cost=worst(spec.max_tokens),
        expected_cost=None if p50 is None else worst(min(p50, spec.max_tokens)),
        expected_output_tokens_p50=p50,
        expected_output_tokens_p95=p95,
        history_rows=rows,
    )
