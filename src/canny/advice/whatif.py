"""What-if: the same ledger rows priced another way, beside what was paid.

Three scenarios (``canny report --what-if MODEL|batch|cache``):

- **another model**: each attempt's recorded tokens priced on that model, at the prices in
  force on the attempt's day, keeping its batch, ``inference_geo`` and ``speed`` where
  the model offers them. The assumption is that the model would have read and written
  the same numbers of tokens, which it would not exactly: tokenizers differ, and output
  length (often most of the bill) depends on the model. It is a price comparison, not a
  prediction.
- **batch**: each attempt priced as a Message Batches request (same tokens; the batch
  modifier of the price table, 0.5). It ignores what a batch costs in time: results come
  within 24 hours, not streamed, and fast mode is not available in batches (fast attempts
  are priced at batch rates of the standard mode).
- **cache**: each attempt's usage with the repeated prompt prefixes cached
  (:mod:`canny.advice.cachesim`), priced on its own model.

Every price comes from :func:`canny.pricing.cost` (and so from the one rule,
:func:`canny.pricing.applicable_rates`). An attempt with no price is *unpriced*, never $0:
``cost_usd`` sums the attempts priced when they ran, ``what_if_cost_usd`` those priced in
the scenario, and ``saving_usd`` (paid minus what-if) only those priced both ways.
Attempts the scenario knows nothing about (``cache``: no stored prefix hashes) count in
``what_if_unknown`` and are not priced.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any

from canny.advice._reprice import quiet, repricer
from canny.advice.cachesim import TTL, simulate
from canny.errors import ConfigError
from canny.ledger import AttemptRecord, GroupBy, Ledger
from canny.pricing import PriceTable, default_table
from canny.reports import TIME_GROUPS, group_keys, plain_decimal

__all__ = ["WHAT_IF_FIELDS", "WhatIf", "WhatIfRow", "what_if", "what_if_report", "what_if_rows"]


@dataclass(frozen=True, slots=True)
class WhatIfRow:
    """One group (or the total, group ``"total"``) of a what-if report."""

    group: str | None
    attempts: int = 0
    #: What was paid: the attempts priced when they ran, and how many were not.
    cost_usd: Decimal | None = None
    unpriced: int = 0
    #: The same attempts in the scenario: priced ones summed, the others counted.
    what_if_cost_usd: Decimal | None = None
    what_if_unpriced: int = 0
    #: Of ``what_if_unpriced``, the attempts the scenario has no data for (old rows).
    what_if_unknown: int = 0
    #: Paid minus what-if, over the attempts priced both ways (``compared``).
    saving_usd: Decimal | None = None
    compared: int = 0


@dataclass(frozen=True, slots=True)
class WhatIf:
    """A what-if report: the scenario, what it assumes, its groups and total."""

    scenario: str
    by: GroupBy
    assumptions: tuple[str, ...]
    rows: tuple[WhatIfRow, ...]
    total: WhatIfRow


class _Acc:
    """The sums of one group (or of the total), named as :class:`WhatIfRow` fields."""

    def __init__(self) -> None:
        self.sums: dict[str, Any] = {f.name: f.default for f in fields(WhatIfRow) if f.name != "group"}
        self.groups: dict[str | None, _Acc] = {}

    def add(self, paid: Decimal | None, priced: Decimal | None, known: bool) -> None:
        sums = self.sums
        sums["attempts"] += 1
        if paid is None:
            sums["unpriced"] += 1
        else:
            sums["cost_usd"] = _plus(sums["cost_usd"], paid)
        if priced is None:
            sums["what_if_unpriced"] += 1
            sums["what_if_unknown"] += 0 if known else 1
        else:
            sums["what_if_cost_usd"] = _plus(sums["what_if_cost_usd"], priced)
        if paid is not None and priced is not None:
            sums["compared"] += 1
            sums["saving_usd"] = _plus(sums["saving_usd"], paid - priced)

    def row(self, group: str | None) -> WhatIfRow:
        return WhatIfRow(group, **self.sums)


def _plus(total: Decimal | None, amount: Decimal) -> Decimal:
    return amount if total is None else total + amount


def _scenario(name: str, table: PriceTable) -> str:
    """``batch``, ``cache`` or the canonical id of a model in the price table."""
    key = name.strip().lower()
    if key in ("batch", "cache"):
        return key
    if table.entry(name) is None:
        raise ConfigError(f"--what-if: {name!r} is not a model in the price table, nor 'batch' or 'cache'")
    return table.resolve(name)


def _assumptions(scenario: str, table: PriceTable, unknown: int) -> tuple[str, ...]:
    if scenario == "batch":
        return (
            f"Every attempt sent through the Message Batches API: the same tokens at {plain_decimal(table.batch)}x "
            "the standard prices of its day.",
            "Not counted: the wait (a batch answers within 24 hours, nothing is streamed); fast mode does not "
            "exist in batches, so fast attempts are priced at standard batch rates.",
        )
    if scenario == "cache":
        minutes = int(TTL.total_seconds() // 60)
        lines = [
            f"Prompt caching ({minutes}-minute TTL) on the prefixes (tools, system, each message) that two or more "
            "attempts of the same model and API key sent, at least the model's minimum cacheable length.",
            "One breakpoint per request, on its deepest repeated prefix: the first use writes it (5-minute write "
            f"rate), later uses within {minutes} minutes of the last use read it; the rest stays uncached input.",
            "Prefix sizes are canny's low local estimate (UTF-8 bytes / 4), capped at the attempt's prompt.",
        ]
        if unknown:
            lines.append(f"{unknown} attempt(s) recorded before canny kept prefix hashes: unknown, not priced.")
        return tuple(lines)
    return (
        f"The same token counts on {scenario} as on the models that ran: another model tokenizes and answers "
        "differently (output length especially), so this compares prices, not outcomes.",
        "Prices in force on each attempt's day; batch, US-only inference and fast mode kept where the model "
        "offers them.",
    )


def what_if(
    records: Iterable[AttemptRecord],
    scenario: str,
    *,
    by: GroupBy = "model",
    tz: tzinfo = UTC,
    table: PriceTable | None = None,
) -> WhatIf:
    """The what-if report of ``records`` (oldest first) under ``scenario``: a model id or
    alias, ``"batch"`` or ``"cache"`` (see the module docstring). An unknown model raises
    :class:`~canny.errors.ConfigError`."""
    tbl = table or default_table()
    chosen = _scenario(scenario, tbl)
    rows = list(records)
    cached = simulate(rows) if chosen == "cache" else None
    price_of = repricer(tbl)
    total = _Acc()
    with quiet():  # each unpriced attempt is counted in the report
        for i, record in enumerate(rows):
            usage, model, batch, known = record.usage, None, None, True
            if cached is not None:
                sim = cached[i]
                known = sim is not None
                usage = sim.usage if sim is not None else usage
            elif chosen == "batch":
                batch = True
            else:
                model = chosen
            price = price_of(record, usage, model=model, batch=batch) if known else None
            total.add(record.cost_usd, price, known)
            for key in group_keys(record, by, tz):
                total.groups.setdefault(key, _Acc()).add(record.cost_usd, price, known)
    groups = [acc.row(key) for key, acc in total.groups.items()]
    if by in TIME_GROUPS:
        groups.sort(key=lambda r: r.group or "")
    else:
        groups.sort(key=lambda r: (r.group is None, -(r.cost_usd or Decimal(0)), r.group or ""))
    return WhatIf(
        chosen, by, _assumptions(chosen, tbl, total.sums["what_if_unknown"]), tuple(groups), total.row("total")
    )


def what_if_report(
    ledger: Ledger,
    scenario: str,
    *,
    by: GroupBy = "model",
    since: datetime | None = None,
    until: datetime | None = None,
    tz: tzinfo = UTC,
    table: PriceTable | None = None,
) -> WhatIf:
    """:func:`what_if` over the attempts of ``ledger`` started in ``[since, until)``."""
    return what_if(ledger.records(since=since, until=until), scenario, by=by, tz=tz, table=table)


WHAT_IF_FIELDS: tuple[str, ...] = (
    "kind", "by", "group", "what_if", "attempts", "cost_usd", "unpriced", "what_if_cost_usd",
    "what_if_unpriced", "what_if_unknown", "saving_usd", "compared",
)  # fmt: skip


def _money(value: Decimal | None) -> str | None:
    return None if value is None else plain_decimal(value)


def what_if_rows(report: WhatIf) -> list[dict[str, object]]:
    """The report as plain dicts (groups, then the total; amounts as decimal strings or
    ``None``), for JSON. Empty when there are no attempts."""
    if not report.total.attempts:
        return []
    out: list[dict[str, object]] = []
    for kind, row in [*(("group", r) for r in report.rows), ("total", report.total)]:
        out.append(
            {
                "kind": kind,
                "by": report.by,
                "group": row.group,
                "what_if": report.scenario,
                "attempts": row.attempts,
                "cost_usd": _money(row.cost_usd),
                "unpriced": row.unpriced,
                "what_if_cost_usd": _money(row.what_if_cost_usd),
                "what_if_unpriced": row.what_if_unpriced,
                "what_if_unknown": row.what_if_unknown,
                "saving_usd": _money(row.saving_usd),
                "compared": row.compared,
            }
        )
    return out
