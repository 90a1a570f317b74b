"""How ``canny report`` looks: an aligned table, a terminal bar chart, CSV/JSON text, and
one self-contained HTML page (inline CSS and SVG; no scripts, no external assets).

Everything here turns a :class:`canny.reports.Report` into text; nothing reads the ledger.
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

from canny.pricing import format_usd
from canny.reports import REPORT_FIELDS, REPRICE_FIELDS, SAVINGS_FIELDS, THEN_FIELDS, Report, ReportRow, report_rows
from canny.usage import TOKEN_BUCKETS

__all__ = ["render_bars", "render_csv", "render_html", "render_json", "render_table"]

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
    out += [f"{getattr(row, b.column):,}" for b in TOKEN_BUCKETS]
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


# --- HTML ---------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1d2433;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta{color:#5b6475;margin:0 0 1rem}.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid #dde2ea;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.25rem}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e6e9ef;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}tfoot td{font-weight:600;border-top:2px solid #1d2433}
svg{max-width:100%;height:auto}svg text{font:11px system-ui,sans-serif;fill:#1d2433}
.bar{fill:#3b6fd8}.bar2{fill:#e08a2c}.axis{stroke:#9aa3b2;stroke-width:1}
@media (prefers-color-scheme:dark){body{background:#14171f;color:#e6e9ef}svg text{fill:#e6e9ef}
.card{border-color:#343b4a}th,td{border-color:#2a303c}tfoot td{border-color:#e6e9ef}}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _column_chart(points: Sequence[tuple[str, Decimal | None]], title: str) -> str:
    """Vertical bars (cost per period) as inline SVG, with a tooltip per bar."""
    if not points:
        return "<p>No data.</p>"
    width, height, left, bottom, top = 900, 260, 70, 40, 14
    top_value = max((v or Decimal(0)) for _, v in points) or Decimal(1)
    step = (width - left - 10) / len(points)
    every = max(1, round(len(points) / 12))
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    parts.append(f'<line class="axis" x1="{left}" y1="{height - bottom}" x2="{width - 10}" y2="{height - bottom}"/>')
    parts.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">{_e(format_usd(top_value))}</text>')
    parts.append(f'<text x="{left - 6}" y="{height - bottom}" text-anchor="end">$0</text>')
    for i, (label, value) in enumerate(points):
        h = float((value or Decimal(0)) / top_value) * (height - bottom - top)
        x = left + i * step
        tip = f"{label}: {format_usd(value) if value is not None else 'unpriced'}"
        parts.append(
            f'<rect class="bar" x="{x + step * 0.1:.1f}" y="{height - bottom - h:.1f}" '
            f'width="{max(step * 0.8, 1):.1f}" height="{h:.1f}"><title>{_e(tip)}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{x + step / 2:.1f}" y="{height - bottom + 16}" text-anchor="middle">{_e(label)}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def _bar_chart(items: Sequence[tuple[str, float, str]], title: str, css: str = "bar") -> str:
    """Horizontal bars: (label, value, shown text) per item, scaled to the largest."""
    if not items or not any(v for _, v, _ in items):
        return "<p>No data.</p>"
    row_h, left, width = 26, 190, 900
    height = row_h * len(items) + 10
    top_value = max(v for _, v, _ in items) or 1.0
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">']
    for i, (label, value, shown) in enumerate(items):
        y = 5 + i * row_h
        w = value / top_value * (width - left - 130)
        parts.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end">{_e(label[:28])}</text>')
        parts.append(
            f'<rect class="{css}" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}">'
            f"<title>{_e(label)}: {_e(shown)}</title></rect>"
        )
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 16}">{_e(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_table(report: Report) -> str:
    def tr(row: ReportRow) -> str:
        return "<tr>" + "".join(f"<td>{_e(v)}</td>" for v in _cells(report, row)) + "</tr>"

    head = "<tr>" + "".join(f"<th>{_e(n)}</th>" for n in _headers(report)) + "</tr>"
    body = "".join(tr(r) for r in report.rows)
    return f"<table><thead>{head}</thead><tbody>{body}</tbody><tfoot>{tr(report.total)}</tfoot></table>"


def render_html(report: Report, *, over_time: Report | None = None, by_model: Report | None = None) -> str:
    """One self-contained page: summary cards, three SVG charts and the table.

    ``over_time`` (a day/week/month report) feeds the cost-per-period chart and
    ``by_model`` the cost-by-model chart; each defaults to ``report`` when it already is one.
    """
    series = over_time or (report if report.by in ("day", "week", "month") else None)
    models = by_model or (report if report.by == "model" else None)
    t = report.total
    rng = " · ".join(
        part
        for part in (
            f"since {report.since.isoformat()}" if report.since else "",
            f"until {report.until.isoformat()}" if report.until else "",
        )
        if part
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cards = [
        ("cost", _money(t.cost_usd)),
        ("calls", f"{t.calls:,}"),
        ("attempts", f"{t.attempts:,}"),
        ("unpriced attempts", f"{t.unpriced:,}"),
        ("failures", f"{t.failures:,}"),
        ("cache hit rate", _rate(t.cache_hit_rate)),
    ]
    if report.savings:
        cards.append(("saved by caching", _money(t.saved_usd)))
    buckets = [(b.column.removesuffix("_tokens").replace("_", " "), getattr(t, b.column)) for b in TOKEN_BUCKETS]
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>canny report by {_e(report.by)}</title><style>{_CSS}</style></head><body>",
        f"<h1>canny report by {_e(report.by)}</h1>",
        f'<p class="meta">time zone {_e(report.tz)}{" · " + _e(rng) if rng else ""} · generated {_e(generated)}'
        + (" · repriced at today's prices" if report.repriced else "")
        + "</p>",
        '<div class="cards">' + "".join(f'<div class="card">{_e(k)}<b>{_e(v)}</b></div>' for k, v in cards) + "</div>",
    ]
    if series is not None:
        period = series.by
        points = [(_label(r), r.cost_usd) for r in series.rows]
        parts += [f"<h2>Cost per {_e(period)}</h2>", _column_chart(points, f"cost per {period}")]
    parts += [
        "<h2>Tokens per bucket</h2>",
        _bar_chart([(name, float(n), f"{n:,}") for name, n in buckets], "tokens per bucket", "bar2"),
    ]
    if models is not None:
        items = [(_label(r), float(r.cost_usd or 0), _money(r.cost_usd)) for r in models.rows]
        parts += ["<h2>Cost by model</h2>", _bar_chart(items, "cost by model")]
    parts += [f"<h2>By {_e(report.by)}</h2>", _html_table(report)]
    if t.unpriced:
        parts.append(
            f'<p class="meta">{t.unpriced:,} attempts have no price (unknown model or rate); '
            "their cost is not included above, not counted as $0.</p>"
        )
    parts.append("</body></html>\n")
    return "\n".join(parts)
