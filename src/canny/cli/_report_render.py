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
from canny.reports import REPORT_FIELDS, REPRICE_FIELDS, SAVINGS_FIELDS, THEN_FIELDS, Report, ReportRow, report_rows
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
    head = [report.by, *([report.then] if report.then else []), "calls", "attempts"]
    head += [*(b.label for b in TOKEN_BUCKETS), "cost", "unpriced", "failures", "cache hit"]
    head += ["saved"] if report.savings else []
    return head + (["repriced", "difference"] if report.repriced else [])


def _cells(report: Report, row: ReportRow) -> list[str]:
    out = [_label(row)]
    if report.then:
        out.append("" if row is report.total else NONE_LABEL if row.subgroup is None else row.subgroup)
    out += [f"{row.calls:,}", f"{row.attempts:,}"]
    out += [f"{getattr(row.tokens, b.name):,}" for b in TOKEN_BUCKETS]
    out += [_money(row.cost_usd), f"{row.unpriced:,}", f"{row.failures:,}"]
    out.append(_rate(row.cache_hit_rate))
    if report.savings:
        out.append(_money(row.saved_usd))
    if report.repriced:
        out += [_money(row.repriced_usd), _signed(row.reprice_difference)]
    return out


#: Columns a narrow terminal drops, first to last (the groups, calls and cost always stay).
_DROP_ORDER = ("write 1h", "write 5m", "cache read", "unpriced", "input", "output", "cache hit", "attempts")


def render_table(report: Report, *, width: int | None = None) -> str:
    """An aligned text table: one line per group, a rule, then the total. Given a
    ``width``, it drops the least telling columns (:data:`_DROP_ORDER`) and then shortens
    the group labels (ending them with ``…``) until it fits."""
    head = _headers(report)
    table = [head, *(_cells(report, row) for row in report.rows), _cells(report, report.total)]
    keys = 2 if report.then else 1

    def widths() -> list[int]:
        return [max(len(cells[i]) for cells in table) for i in range(len(table[0]))]

    def needed() -> int:
        return sum(widths()) + 2 * (len(table[0]) - 1)

    if width is not None:
        for name in _DROP_ORDER:
            if needed() <= width:
                break
            if name in head[keys:]:
                i = head.index(name, keys)
                table = [cells[:i] + cells[i + 1 :] for cells in table]
                head = table[0]
        for i in range(keys):  # then the labels, down to 8 characters each
            excess = needed() - width
            if excess > 0:
                room = max(widths()[i] - excess, 8, len(head[i]))
                for cells in table[1:]:
                    if len(cells[i]) > room:
                        cells[i] = cells[i][: room - 1] + "…"
    sizes = widths()

    def line(values: Sequence[str]) -> str:
        first = [v.ljust(w) for v, w in zip(values[:keys], sizes[:keys], strict=True)]
        rest = (v.rjust(w) for v, w in zip(values[keys:], sizes[keys:], strict=True))
        return "  ".join([*first, *rest]).rstrip()

    rule = "  ".join("-" * w for w in sizes)
    body, total = table[1:-1], table[-1]
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
    labels = [_label(r) + ("" if report.then is None else f" · {r.subgroup or NONE_LABEL}") for r in rows]
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
    if report.then:
        names[names.index("group") + 1 : names.index("group") + 1] = list(THEN_FIELDS)
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for item in report_rows(report):
        writer.writerow({k: "" if v is None else v for k, v in item.items()})
    return buffer.getvalue()
