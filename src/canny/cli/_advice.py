"""``canny report --what-if MODEL|batch|cache`` and ``canny report --right-size``: advice
from the ledger (:mod:`canny.advice`), as aligned text or JSON. Nothing here computes."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from canny.errors import ConfigError

if TYPE_CHECKING:
    from canny.advice import RightSize, WhatIf
    from canny.ledger import GroupBy, Ledger

__all__ = ["advice_options", "check_alone", "render_right_size", "render_what_if", "show_advice"]

_NONE = "(none)"


def _usd(value: Decimal | None) -> str:
    from canny.pricing import format_usd

    return "-" if value is None else format_usd(value)


def _aligned(rows: Sequence[Sequence[str]], *, left: int = 1, rule_before_last: bool = False) -> list[str]:
    """Columns padded to their widest cell: the first ``left`` left-aligned, the others
    right-aligned; a rule under the header (and above the last row)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    text = []
    for row in rows:
        cells = (c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        text.append("  ".join(cells).rstrip())
    rule = "  ".join("-" * w for w in widths)
    text.insert(1, rule)
    if rule_before_last:
        text.insert(len(text) - 1, rule)
    return text


def render_what_if(report: WhatIf) -> str:
    """The what-if table with its assumptions above it and what was left out below."""
    lines = [f"What if: {report.scenario} (grouped by {report.by})"]
    for assumption in report.assumptions:
        lines += textwrap.wrap(assumption, width=100, initial_indent="  ", subsequent_indent="    ")
    head = [report.by, "attempts", "paid", "what-if", "saving", "compared"]
    body = [
        [
            _NONE if row.group is None else row.group,
            f"{row.attempts:,}",
            _usd(row.cost_usd),
            _usd(row.what_if_cost_usd),
            _usd(row.saving_usd),
            f"{row.compared:,}",
        ]
        for row in (*report.rows, report.total)
    ]
    lines += ["", *_aligned([head, *body], rule_before_last=True)]
    total = report.total
    notes = ["saving = paid minus what-if, over the attempts priced both ways (compared)"]
    if total.unpriced:
        notes.append(f"{total.unpriced:,} attempt(s) had no price when they ran (not $0)")
    known_unpriced = total.what_if_unpriced - total.what_if_unknown
    if known_unpriced:
        notes.append(f"{known_unpriced:,} attempt(s) have no price in this scenario (not $0)")
    if total.what_if_unknown:
        notes.append(f"{total.what_if_unknown:,} attempt(s) are unknown: recorded before canny kept what it needs")
    lines += ["", *(f"note: {n}" for n in notes)]
    return "\n".join(lines)


def render_right_size(report: RightSize) -> str:
    """The ``max_tokens`` table and the prefixes table, with how each figure is made."""
    lines = ["max_tokens against output tokens used (answers: outcomes ok and max_tokens)", ""]
    head = ["model", "tag", "answers", "max_tokens", "p50", "p95", "p99", "max", "stopped", "suggested"]
    body = []
    for r in report.rows:
        if r.max_tokens_max is None:
            asked = "unknown"
        elif r.max_tokens_min == r.max_tokens_max:
            asked = f"{r.max_tokens_max:,}"
        else:
            asked = f"{r.max_tokens_min:,}-{r.max_tokens_max:,}"
        if r.max_tokens_unknown and r.max_tokens_max is not None:
            asked += f" (+{r.max_tokens_unknown} unknown)"
        stopped = f"{r.stopped_at_max_tokens} ({r.stopped_share * 100:.1f}%)"
        suggested = "-" if r.suggested_max_tokens is None else f"{r.suggested_max_tokens:,}"
        counts = (r.output_p50, r.output_p95, r.output_p99, r.output_max)
        body.append([r.model, r.tag or _NONE, f"{r.answers:,}", asked, *(f"{c:,}" for c in counts), stopped, suggested])
    lines += _aligned([head, *body]) if body else ["(no answers in this range)"]
    lines += [
        "",
        "p50/p95/p99: nearest rank (a real answer's length). suggested: the longest answer that ended on its",
        "own, rounded up to a multiple of 64 and never above the max_tokens asked; it cuts none of them.",
        "max_tokens is not billed (output is, as used): a smaller one lowers the worst case budgets reserve.",
        "",
        "Repeated prompt prefixes long enough to cache (by hash; the text is never stored for this)",
        "",
    ]
    if report.prefixes:
        head = ["model", "prefix up to", "hash", "~tokens", "uses", "writes", "reads", "saving"]
        rows = [
            [
                p.model,
                p.label,
                p.hash,
                f"{p.tokens:,}",
                f"{p.uses:,}",
                f"{p.writes:,}",
                f"{p.reads:,}",
                _usd(p.saving_usd),
            ]
            for p in report.prefixes
        ]
        lines += _aligned([head, *rows], left=3)
        lines += [
            "",
            f"saving with these prefixes cached: {_usd(report.saving_usd)} (see `canny report --what-if cache`)",
        ]
    else:
        lines.append("(none)")
    if report.prefixes_unknown:
        lines.append(f"note: {report.prefixes_unknown:,} attempt(s) recorded before canny kept prefix hashes: unknown")
    return "\n".join(lines)


def show_advice(
    ledger: Ledger | None,
    *,
    what_if: str | None,
    by: GroupBy,
    since: datetime | None,
    until: datetime | None,
    tz: tzinfo,
    as_json: bool,
) -> None:
    """Print the what-if report (``what_if`` set) or the right-size report; ``ledger`` is
    ``None`` when the ledger file does not exist yet (an empty report)."""
    from canny import advice

    records = ledger.records(since=since, until=until) if ledger is not None else iter(())
    if what_if is not None:
        found = advice.what_if(records, what_if, by=by, tz=tz)
        if as_json:
            click.echo(json.dumps(advice.what_if_rows(found), indent=2, ensure_ascii=False))
        elif not found.total.attempts:
            click.echo("No attempts recorded in that range.")
        else:
            click.echo(render_what_if(found))
        return
    sized = advice.right_size(records)
    if as_json:
        click.echo(json.dumps(advice.right_size_rows(sized), indent=2, ensure_ascii=False))
    else:
        click.echo(render_right_size(sized))


def advice_options(command: Any) -> Any:
    """``--what-if`` and ``--right-size`` (:mod:`canny.cli._advice`)."""
    command = click.option(
        "--right-size",
        is_flag=True,
        help="max_tokens against output used, and prefixes worth caching, per model and tag.",
    )(command)
    what_if_help = "Price the same attempts under another model, as batches, or with repeated prefixes cached."
    return click.option("--what-if", "what_if", metavar="MODEL|batch|cache", help=what_if_help)(command)


def check_alone(what_if: str | None, right_size: bool, **others: bool) -> None:
    """--what-if and --right-size go alone (with --by, a range, --tz, --json, --ledger)."""
    flag = "--what-if" if what_if is not None else "--right-size"
    if what_if is not None and right_size:
        raise ConfigError("choose one of --what-if and --right-size")
    for name, given in others.items():
        if given:
            raise ConfigError(f"{flag} does not go with --{name.replace('as_', '')}")
