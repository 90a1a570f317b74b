"""Right-size: ``max_tokens`` against the output actually used, and the prefixes worth caching.

Per model and tag (an attempt counts under each of its tags; untagged ones under no tag),
over the *answers* (outcomes ``ok`` and ``max_tokens``; refusals and failures say nothing
about answer length):

- the ``max_tokens`` the requests asked for (smallest and largest), and how many answers
  were recorded before canny kept it (``max_tokens_unknown``: unknown, not zero);
- output tokens used (thinking included, as ``max_tokens`` counts it): p50, p95, p99 and
  max, by the nearest-rank rule (the smallest value at or above that share of answers:
  the ``ceil(p/100 × n)``-th smallest), so every figure is one real answer's length;
- how many answers were stopped at ``max_tokens``, and their share;
- a suggested ``max_tokens``: the longest answer that ended on its own (outcome ``ok``),
  rounded up to a multiple of :data:`ROUND_TO` tokens, and never above the largest
  ``max_tokens`` requested. It would have cut none of the answers that ended on their own.
  ``max_tokens`` itself costs nothing (output is billed as used): a smaller one lowers
  the worst case that budgets and ``max_cost`` reserve, and caps runaway answers.

Then the repeated prompt prefixes long enough to cache (:mod:`canny.advice.cachesim`),
found by their hashes in the ledger, never their text, each with the saving caching would
have given: what was paid minus the price with caching, over the attempts that would have
put their breakpoint on that prefix and were priced both ways.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from canny.advice._reprice import quiet, repricer
from canny.advice.cachesim import simulate
from canny.ledger import AttemptRecord, Ledger
from canny.prefixes import parse_prefixes
from canny.pricing import PriceTable, default_table
from canny.reports import plain_decimal

__all__ = [
    "PERCENTILES",
    "ROUND_TO",
    "PrefixRow",
    "RightSize",
    "SizeRow",
    "nearest_rank",
    "right_size",
    "right_size_report",
    "right_size_rows",
    "suggest_max_tokens",
]

#: A suggested ``max_tokens`` is rounded up to a multiple of this.
ROUND_TO = 64
PERCENTILES = (50, 95, 99)
_ANSWERS = frozenset({"ok", "max_tokens"})


@dataclass(frozen=True, slots=True)
class SizeRow:
    """``max_tokens`` against output used, for one model and tag (``None``: untagged)."""

    model: str
    tag: str | None
    answers: int
    max_tokens_min: int | None
    max_tokens_max: int | None
    max_tokens_unknown: int
    output_p50: int
    output_p95: int
    output_p99: int
    output_max: int
    stopped_at_max_tokens: int
    suggested_max_tokens: int | None

    @property
    def stopped_share(self) -> Decimal:
        """Answers stopped at ``max_tokens`` over all answers (exact)."""
        return Decimal(self.stopped_at_max_tokens) / Decimal(self.answers)


@dataclass(frozen=True, slots=True)
class PrefixRow:
    """A repeated prefix long enough to cache, and what caching it would have saved."""

    model: str
    label: str
    hash: str
    tokens: int
    #: Attempts that sent it, and those that would have put their breakpoint on it.
    uses: int
    breakpoints: int
    writes: int
    reads: int
    saving_usd: Decimal | None


@dataclass(frozen=True, slots=True)
class RightSize:
    """The right-size report: one :class:`SizeRow` per model and tag, the prefixes, and
    how many attempts had no stored prefixes (``prefixes_unknown``)."""

    rows: tuple[SizeRow, ...]
    prefixes: tuple[PrefixRow, ...]
    prefixes_unknown: int
    saving_usd: Decimal | None


def nearest_rank(ordered: list[int], percent: int) -> int:
    """The nearest-rank percentile of an ascending, non-empty list."""
    return ordered[max(math.ceil(percent * len(ordered) / 100), 1) - 1]


def suggest_max_tokens(natural: Iterable[int], requested_max: int | None) -> int | None:
    """The longest of the answers that ended on their own, rounded up to a multiple of
    :data:`ROUND_TO` (at least one step), capped at ``requested_max`` when known;
    ``None`` when no answer ended on its own."""
    longest = max(natural, default=None)
    if longest is None:
        return None
    rounded = max(math.ceil(longest / ROUND_TO), 1) * ROUND_TO
    return rounded if requested_max is None else min(rounded, max(requested_max, longest))


def _size_rows(records: list[AttemptRecord]) -> list[SizeRow]:
    groups: dict[tuple[str, str | None], list[AttemptRecord]] = {}
    for record in records:
        if record.outcome in _ANSWERS:
            for tag in tuple(dict.fromkeys(record.tags)) or (None,):
                groups.setdefault((record.model, tag), []).append(record)
    rows: list[SizeRow] = []
    for (model, tag), answers in groups.items():
        used = sorted(r.usage.output for r in answers)
        asked = [r.max_tokens for r in answers if r.max_tokens is not None]
        most = max(asked, default=None)
        natural = [r.usage.output for r in answers if r.outcome == "ok"]
        rows.append(
            SizeRow(
                model=model,
                tag=tag,
                answers=len(answers),
                max_tokens_min=min(asked, default=None),
                max_tokens_max=most,
                max_tokens_unknown=len(answers) - len(asked),
                output_p50=nearest_rank(used, 50),
                output_p95=nearest_rank(used, 95),
                output_p99=nearest_rank(used, 99),
                output_max=used[-1],
                stopped_at_max_tokens=sum(1 for r in answers if r.outcome == "max_tokens"),
                suggested_max_tokens=suggest_max_tokens(natural, most),
            )
        )
    rows.sort(key=lambda r: (r.model, r.tag is None, r.tag or ""))
    return rows


@dataclass(slots=True)
class _PrefixAcc:
    label: str
    tokens: int
    uses: int = 0
    breakpoints: int = 0
    writes: int = 0
    reads: int = 0
    saving: Decimal | None = None


def _prefix_rows(records: list[AttemptRecord], table: PriceTable) -> tuple[list[PrefixRow], int, Decimal | None]:
    cached = simulate(records)
    price_of = repricer(table)
    found: dict[tuple[str, str], _PrefixAcc] = {}
    unknown = 0
    for record, sim in zip(records, cached, strict=True):
        if sim is None:
            unknown += 1
            continue
        if sim.breakpoint is None:
            continue
        point = sim.breakpoint
        acc = found.setdefault((record.model, point.hash), _PrefixAcc(point.label, point.tokens))
        acc.breakpoints += 1
        acc.writes += sim.written is not None
        if sim.read is not None:
            reader = found.setdefault((record.model, sim.read.hash), _PrefixAcc(sim.read.label, sim.read.tokens))
            reader.reads += 1
        price = price_of(record, sim.usage)
        if price is not None and record.cost_usd is not None:
            saved = record.cost_usd - price
            acc.saving = saved if acc.saving is None else acc.saving + saved
    _count_uses(records, found)
    rows = [
        PrefixRow(model, a.label, digest, a.tokens, a.uses, a.breakpoints, a.writes, a.reads, a.saving)
        for (model, digest), a in found.items()
        if a.breakpoints
    ]
    rows.sort(key=lambda r: (-(r.saving_usd or Decimal(0)), r.model, r.hash))
    savings = [r.saving_usd for r in rows if r.saving_usd is not None]
    return rows, unknown, (sum(savings, Decimal(0)) if savings else None)


def _count_uses(records: list[AttemptRecord], found: dict[tuple[str, str], _PrefixAcc]) -> None:
    for record in records:
        if record.usage.prompt_tokens:
            for prefix in parse_prefixes(record.prefix_hashes) or ():
                acc = found.get((record.model, prefix.hash))
                if acc is not None:
                    acc.uses += 1


def right_size(records: Iterable[AttemptRecord], *, table: PriceTable | None = None) -> RightSize:
    """The right-size report of ``records`` (oldest first); see the module docstring."""
    rows = list(records)
    with quiet():  # each unpriced attempt is left out of the saving
        prefixes, unknown, saving = _prefix_rows(rows, table or default_table())
    return RightSize(tuple(_size_rows(rows)), tuple(prefixes), unknown, saving)


def right_size_report(
    ledger: Ledger,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    table: PriceTable | None = None,
) -> RightSize:
    """:func:`right_size` over the attempts of ``ledger`` started in ``[since, until)``."""
    return right_size(ledger.records(since=since, until=until), table=table)


def right_size_rows(report: RightSize) -> dict[str, object]:
    """The report as plain data for JSON (amounts and shares as decimal strings)."""
    return {
        "max_tokens": [
            {
                "model": r.model,
                "tag": r.tag,
                "answers": r.answers,
                "max_tokens_min": r.max_tokens_min,
                "max_tokens_max": r.max_tokens_max,
                "max_tokens_unknown": r.max_tokens_unknown,
                "output_tokens_p50": r.output_p50,
                "output_tokens_p95": r.output_p95,
                "output_tokens_p99": r.output_p99,
                "output_tokens_max": r.output_max,
                "stopped_at_max_tokens": r.stopped_at_max_tokens,
                "stopped_share": plain_decimal(round(r.stopped_share, 4)),
                "suggested_max_tokens": r.suggested_max_tokens,
            }
            for r in report.rows
        ],
        "prefixes": [
            {
                "model": p.model,
                "prefix": p.label,
                "hash": p.hash,
                "tokens": p.tokens,
                "uses": p.uses,
                "breakpoints": p.breakpoints,
                "writes": p.writes,
                "reads": p.reads,
                "saving_usd": None if p.saving_usd is None else plain_decimal(p.saving_usd),
            }
            for p in report.prefixes
        ],
        "prefixes_unknown": report.prefixes_unknown,
        "saving_usd": None if report.saving_usd is None else plain_decimal(report.saving_usd),
    }
