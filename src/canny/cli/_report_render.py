"""How ``canny report`` looks: an aligned table, a terminal bar chart, CSV/JSON text (the
HTML page is :mod:`canny.cli._report_html`).

Everything here turns a :class:`canny.reports.Report` into text; nothing reads the ledger.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from decimal import Decimal

from canny.pricing import format_usd
from canny.reports import REPORT_FIELDS, REPRICE_FIELDS, SAVINGS_FIELDS, Report, ReportRow, report_rows
from canny.usage import TOKEN_BUCKETS

__all__ = ["render_bars", "render_csv", "render_json", "render_table"]

NONE_LABEL = "(none)"
_EIGHTHS = " ▏▎▍▌▋▊▉█"


def _label(row: ReportRow) -> str:
    return NONE_LABEL if row.group is None else row.group


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _money(value: Decimal | None) -> str:
    return "-" if value is None else format_usd(value)


def _signed(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return ("+" if value > 0 else "") + format_usd(value)


def _headers(report: Report) -> list[str]:
    head = [report.by, "calls", "attempts", *(b.label for b in TOKEN_BUCKETS), "cost"]
    head += ["unpriced", "failures", "cache hit"]
    head += ["saved"] if report.savings else []
    return head + (["repriced", "difference"] if report.repriced else [])


def _cells(report: Report, row: ReportRow) -> list[str]:
    out = [_label(row), f"{row.calls:,}", f"{row.attempts:,}"]
    out += [f"{getattr(row, b.column):,}" for b in TOKEN_BUCKETS]
    out += [_money(row.cost_usd), f"{row.unpriced:,}", f"{row.failures:,}"]
    out.append(_rate(row.cache_hit_rate))
    if report.savings:
        out.append(_money(row.saved_usd))
    if report.repriced:
        out += [_money(row.repriced_usd), _signed(row.reprice_difference)]
    return out


def render_table(report: Report) -> str:
    """An aligned text table: one line per group, a rule, then the total."""
    head = _headers(report)
    body = [_cells(report, row) for row in report.rows]
    total = _cells(report, report.total)
    widths = [max(len(line[i]) for line in [head, *body, total]) for i in range(len(head))]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = (v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), rule, *(line(b) for b in body), rule, line(total)])


def _bar(fraction: float, width: int, blocks: bool) -> str:
    if not blocks:
        return "#" * round(fraction * width)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "")


def render_bars(report: Report, *, width: int = 80, color: bool = False, blocks: bool = True) -> str:
    """A horizontal bar per group, scaled to the costliest, fitted to ``width`` columns.

    ``blocks=False`` draws with ``#`` (for terminals that cannot show Unicode); ``color``
    paints the bars (callers pass False under ``NO_COLOR`` or when not on a terminal)."""
    rows = list(report.rows)
    if not rows or not any(r.cost_usd for r in rows):
        return ""
    top = max(r.cost_usd or Decimal(0) for r in rows)
    labels = [_label(r) for r in rows]
    values = [_money(r.cost_usd) if r.cost_usd is not None else "unpriced" for r in rows]
    label_w = min(max(len(s) for s in labels), max(12, width // 3))
    value_w = max(len(v) for v in values)
    bar_w = max(width - label_w - value_w - 4, 10)
    title = f"cost by {report.by}" + (f" ({report.tz})" if report.by in ("day", "week", "month") else "")
    lines = [title]
    for label, value, row in zip(labels, values, rows, strict=True):
        fraction = float((row.cost_usd or Decimal(0)) / top) if top else 0.0
        bar = _bar(fraction, bar_w, blocks)
        padding = " " * (bar_w - len(bar))
        if color and bar:
            bar = f"\x1b[36m{bar}\x1b[0m"
        lines.append(f"{label[:label_w].ljust(label_w)}  {bar}{padding}  {value.rjust(value_w)}")
    return "\n".join(line.rstrip() for line in lines)


def render_json(report: Report) -> str:
    return json.dumps(report_rows(report), indent=2, ensure_ascii=False)


def render_csv(report: Report) -> str:
    buffer = io.StringIO()
    names = [*REPORT_FIELDS, *(SAVINGS_FIELDS if report.savings else ()), *(REPRICE_FIELDS if report.repriced else ())]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for item in report_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in item.items()})
    return buffer.getvalue()
