"""``canny report --html FILE``: one self-contained page (inline CSS and SVG; no scripts,
no fonts, no links) that summarises a report for people, at any width from a phone up.

The page: a heading with the date range, headline cards, charts (cost over time, by model,
by project, by tag; attempts that did not end ``ok`` by outcome; tokens per bucket), then
the report's table. Money in cards and charts is shown to the cent (``$946.67``); a
non-zero amount that would round to $0.00 keeps two significant digits (``$0.0042``) so it never
reads ``$0.00``. The table keeps the terminal's four decimals, and each rounded figure
carries the exact amount in its tooltip. An unpriced amount, and a model the price table
does not know (a typo such as ``sonet``, whose failed attempts cost $0), read ``unpriced``.

Everything here turns :class:`canny.reports.Report`\\ s into text; nothing reads the ledger
(:func:`chart_reports` asks its caller to build the extra groupings).
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_EVEN, Decimal

from canny.cli._report_svg import FRAMES, Bar, Column, bar_chart, column_chart
from canny.ledger import GroupBy
from canny.pricing import default_table, format_usd
from canny.reports import TIME_GROUPS, Report, ReportRow, resolve_tz
from canny.usage import TOKEN_BUCKETS

__all__ = ["chart_reports", "display_usd", "render_html"]

#: The groupings the page charts besides the report's own (a time grouping first).
CHARTED: tuple[GroupBy, ...] = ("day", "model", "project", "tag", "outcome")
#: Bars in one chart; the rest are summed into one "N more" line (all are in the table).
MOST_BARS = 12

_CENT = Decimal("0.01")

_CSS = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;
padding:0 1rem;color:#1d2433;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem;overflow-wrap:anywhere}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta,.note{color:#5b6475;margin:0 0 1rem}.note{margin:.25rem 0 0;font-size:.9rem}
.cards{display:grid;gap:.75rem;grid-template-columns:repeat(var(--n),minmax(0,1fr))}
.card{border:1px solid #dde2ea;border-radius:8px;padding:.55rem .8rem;min-width:0;font-size:.85rem;color:#5b6475}
.card b{display:block;font-size:1.3rem;color:#1d2433;font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
@media (max-width:900px){.cards{grid-template-columns:repeat(var(--half),minmax(0,1fr))}}
@media (max-width:560px){.cards{grid-template-columns:repeat(2,minmax(0,1fr))}
.card:last-child:nth-child(odd){grid-column:span 2}body{margin:1rem auto}}
figure{margin:0}figure svg{display:block;width:100%;height:auto}figure .medium,figure .narrow{display:none}
@media (max-width:819px){figure .wide{display:none}figure .medium{display:block}}
@media (max-width:519px){figure .medium{display:none}figure .narrow{display:block}}
svg text{fill:#1d2433;font-family:system-ui,sans-serif}
.bar{fill:#3b6fd8}.tokens{fill:#e08a2c}.fail{fill:#d64545}.warn{fill:#d9a21b}.unpriced{fill:#9aa3b2}
.axis{stroke:#9aa3b2;stroke-width:1}.grid{stroke:#e6e9ef;stroke-width:1}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #e6e9ef;border-radius:6px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .6rem;border-bottom:1px solid #e6e9ef;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;background:#fff}
tfoot td{font-weight:600;border-top:2px solid #1d2433}
@media (prefers-color-scheme:dark){body{background:#14171f;color:#e6e9ef}svg text{fill:#e6e9ef}
.card b{color:#e6e9ef}.card{border-color:#343b4a;color:#a9b1c1}.meta,.note{color:#a9b1c1}
th,td{border-color:#2a303c}th:first-child,td:first-child{background:#14171f}tfoot td{border-color:#e6e9ef}
.grid{stroke:#2a303c}.scroll{border-color:#2a303c}}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def display_usd(amount: Decimal | None) -> str:
    """``$946.67``, ``$1,234.50``, ``-$0.25``: to the cent (half to even, as
    :func:`~canny.pricing.format_usd`); a non-zero amount that would round to ``$0.00``
    keeps two significant digits (``$0.0042``, ``$0.000024``); ``None`` is ``unpriced``."""
    if amount is None:
        return "unpriced"
    size = abs(amount)
    shown = size.quantize(_CENT, rounding=ROUND_HALF_EVEN)
    if shown == 0 and size != 0:
        shown = size.quantize(Decimal(1).scaleb(size.adjusted() - 1), rounding=ROUND_HALF_EVEN)
    text = f"{shown:,f}"
    return ("-" if amount < 0 else "") + "$" + text


def _known_model(name: str | None) -> bool:
    """Whether the price table knows ``name`` (an unreadable table: assume it does)."""
    if name is None:
        return True
    try:
        return default_table().entry(name) is not None
    except Exception:  # a broken user price file is reported by `canny prices`, not here
        return True


def _cost(row: ReportRow, by: str) -> Decimal | None:
    """The row's cost as the page shows it: ``None`` (unpriced) for an unknown model."""
    return None if by == "model" and not _known_model(row.group) else row.cost_usd


def _signed(amount: Decimal | None) -> str:
    return "-" if amount is None else ("+" if amount > 0 else "") + format_usd(amount)


def _money_html(amount: Decimal | None, shown: str) -> str:
    exact = "" if amount is None else f' title="{_e(format_usd(amount))}"'
    return f"<span{exact}>{_e(shown)}</span>"


# --- what to chart ----------------------------------------------------------------------


def chart_reports(report: Report, build: Callable[[GroupBy], Report]) -> dict[GroupBy, Report]:
    """The reports the page draws: ``report`` itself for its own grouping, and
    ``build(by)`` for each other grouping in :data:`CHARTED` (none for an empty report)."""
    if report.is_empty:
        return {}
    return {by: report if by == report.by else build(by) for by in CHARTED}


def _period_start(key: str, unit: str) -> date:
    if unit == "week":
        year, week = key.split("-W")
        return date.fromisocalendar(int(year), int(week), 1)
    if unit == "month":
        return date.fromisoformat(key + "-01")
    return date.fromisoformat(key)


def _next_period(day: date, unit: str) -> date:
    if unit == "day":
        return day + timedelta(days=1)
    if unit == "week":
        return day + timedelta(weeks=1)
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _columns(series: Report) -> list[Column]:
    """One column per period from the first to the last with attempts; periods with no
    attempts are empty columns, so the time axis is linear."""
    unit = series.by
    rows = {_period_start(r.group, unit): r for r in series.rows if r.group}
    if not rows:
        return []
    day, last, out = min(rows), max(rows), []
    while day <= last:
        row = rows.get(day)
        if row is None:
            out.append(Column(day, Decimal(0), ""))
        else:
            value = row.cost_usd if row.cost_usd is not None or not row.unpriced else None
            extra = f", {row.unpriced:,} unpriced" if row.unpriced else ""
            tip = f"{row.group}: {display_usd(value)} ({row.attempts:,} attempts{extra})"
            out.append(Column(day, value if value is not None else None, tip))
        day = _next_period(day, unit)
    return out


def _cost_bars(rows: Sequence[ReportRow], by: str, none_label: str) -> list[Bar]:
    bars = []
    for row in rows:
        label = none_label if row.group is None else row.group
        cost = _cost(row, by)
        note = " (model not in the price table)" if by == "model" and row.group and cost is None else ""
        tip = f"{label}: {format_usd(cost)}{note}, {row.attempts:,} attempts"
        bars.append(Bar(label, float(cost or 0), display_usd(cost), tip, "bar" if cost is not None else "unpriced"))
    rest = sum((_cost(r, by) or Decimal(0) for r in rows[MOST_BARS - 1 :]), Decimal(0))
    return _capped(bars, display_usd(rest))


def _capped(bars: list[Bar], rest_shown: str) -> list[Bar]:
    """At most :data:`MOST_BARS` bars; the rest become one grey "N more" bar showing
    ``rest_shown`` (every group is in the table)."""
    if len(bars) <= MOST_BARS:
        return bars
    label = f"{len(bars) - MOST_BARS + 1} more"
    tip = f"{label}: {rest_shown} (see the table)"
    return [*bars[: MOST_BARS - 1], Bar(label, 0.0, rest_shown, tip, "unpriced")]


def _failure_bars(outcomes: Report) -> list[Bar]:
    bars = []
    for row in sorted(outcomes.rows, key=lambda r: (-r.attempts, r.group or "")):
        if row.group == "ok":
            continue
        kind = "a failure" if row.failures else "answered, not a failure"
        tip = f"{row.group}: {row.attempts:,} attempts ({kind})"
        css = "fail" if row.failures else "warn"
        bars.append(Bar(row.group or "(none)", float(row.attempts), f"{row.attempts:,}", tip, css))
    return _capped(bars, f"{sum(int(b.value) for b in bars[MOST_BARS - 1 :]):,}")


def _figure(draw: Callable[..., str], *args: object) -> str:
    return "<figure>" + "".join(draw(*args, frame) for frame in FRAMES) + "</figure>"


def _section(title: str, body: str, note: str = "") -> str:
    return f"<section><h2>{_e(title)}</h2>{body}" + (f'<p class="note">{_e(note)}</p>' if note else "") + "</section>"


def _charts(report: Report, views: Mapping[GroupBy, Report]) -> list[str]:
    out = []
    series = views.get(report.by) if report.by in TIME_GROUPS else views.get("day")
    if series is not None and (columns := _columns(series)):
        note = f"Priced cost per {series.by} in {series.tz}."
        if any(c.value is None for c in columns):
            note += " Grey marks: periods whose attempts are all unpriced."
        chart = _figure(column_chart, columns, series.by, f"cost per {series.by}")
        out.append(_section(f"Cost per {series.by}", chart, note))
    groups: tuple[tuple[GroupBy, str, str, str], ...] = (
        ("model", "Cost by model", "(none)", ""),
        ("project", "Cost by project", "(no project)", ""),
        ("tag", "Cost by tag", "(untagged)", "Tags overlap: an attempt with two tags counts under both."),
    )
    for by, title, none_label, note in groups:
        view = views.get(by)
        if view is not None and view.rows:
            out.append(_section(title, _figure(bar_chart, _cost_bars(view.rows, by, none_label), title.lower()), note))
    outcomes = views.get("outcome")
    if outcomes is not None:
        bars = _failure_bars(outcomes)
        if bars:
            note = "Red: failures (the failures card). Amber: answered, but cut short or refused."
            out.append(_section("Attempts not ok, by outcome", _figure(bar_chart, bars, "attempts not ok"), note))
        else:
            out.append(_section("Attempts not ok, by outcome", '<p class="note">Every attempt ended ok.</p>'))
    tokens = [(b.label, getattr(report.total.tokens, b.name)) for b in TOKEN_BUCKETS]
    bars = [Bar(name, float(n), f"{n:,}", f"{name}: {n:,} tokens", "tokens") for name, n in tokens]
    out.append(_section("Tokens per bucket", _figure(bar_chart, bars, "tokens per bucket")))
    return out


# --- heading, cards, table --------------------------------------------------------------


def _zone(name: str) -> tzinfo:
    try:
        return resolve_tz(name)
    except ValueError:
        return UTC


def _moment(when: datetime, zone: tzinfo, end: bool) -> str:
    """A range end as a date when it falls on local midnight (``end``: the day before,
    since ``until`` is exclusive), else as a date and time."""
    local = when.astimezone(zone)
    if local.time() == datetime.min.time():
        return (local.date() - timedelta(days=1 if end else 0)).isoformat()
    return local.strftime("%Y-%m-%d %H:%M")


def date_range(report: Report, days: Report | None) -> str:
    """``2026-01-01 – 2026-12-31`` (one date for one day): the asked ``--since``/``--until``
    where given, else the first or last day with attempts."""
    zone = _zone(report.tz)
    keys = sorted(r.group for r in days.rows if r.group) if days is not None and days.by == "day" else []
    first = _moment(report.since, zone, False) if report.since else (keys[0] if keys else "")
    last = _moment(report.until, zone, True) if report.until else (keys[-1] if keys else "")
    if not first and not last:
        return ""
    if first == last:
        return first
    return f"{first or '…'} – {last or '…'}"


def _cards(report: Report) -> str:
    t = report.total
    rate = "-" if t.cache_hit_rate is None else f"{t.cache_hit_rate * 100:.1f}%"
    failed = f"{t.failures:,}" + (f" ({t.failures / t.attempts:.0%})" if t.attempts else "")
    cards = [
        ("cost", _money_html(t.cost_usd, display_usd(t.cost_usd))),
        ("calls", _e(f"{t.calls:,}")),
        ("attempts", _e(f"{t.attempts:,}")),
        ("failures", _e(failed)),
        ("unpriced attempts", _e(f"{t.unpriced:,}")),
        ("cache hit rate", _e(rate)),
    ]
    if report.savings:
        cards.append(("saved by caching", _money_html(t.saved_usd, display_usd(t.saved_usd))))
    n = len(cards)
    body = "".join(f'<div class="card">{_e(k)}<b>{v}</b></div>' for k, v in cards)
    return f'<div class="cards" style="--n:{n};--half:{(n + 1) // 2}">{body}</div>'


def _attempts(n: int) -> str:
    return f"{n:,} attempt has" if n == 1 else f"{n:,} attempts have"


def _count(name: str) -> Callable[[ReportRow], str]:
    return lambda row: f"{getattr(row.tokens, name):,}"


def _table(report: Report) -> str:
    """The report's rows, cost first after the group (it must be on screen at any width);
    the table scrolls inside its own box, the page never does."""

    def by(row: ReportRow) -> str:  # the total is no model's row
        return "" if row is report.total else report.by

    columns: list[tuple[str, Callable[[ReportRow], str]]] = [
        ("cost", lambda r: _money_html(cost := _cost(r, by(r)), format_usd(cost))),
        ("calls", lambda r: f"{r.calls:,}"),
        ("attempts", lambda r: f"{r.attempts:,}"),
        ("failures", lambda r: f"{r.failures:,}"),
        ("unpriced", lambda r: f"{r.unpriced:,}"),
        ("cache hit", lambda r: "-" if r.cache_hit_rate is None else f"{r.cache_hit_rate * 100:.1f}%"),
    ]
    columns += [(b.label, _count(b.name)) for b in TOKEN_BUCKETS]
    if report.savings:
        columns.append(("saved", lambda r: _money_html(r.saved_usd, format_usd(r.saved_usd))))
    if report.repriced:
        columns.append(("repriced", lambda r: _money_html(r.repriced_usd, format_usd(r.repriced_usd))))
        columns.append(("difference", lambda r: _signed(r.reprice_difference)))

    def tr(row: ReportRow, label: str) -> str:
        return f"<tr><td>{_e(label)}</td>" + "".join(f"<td>{cell(row)}</td>" for _, cell in columns) + "</tr>"

    head = f"<tr><th>{_e(report.by)}</th>" + "".join(f"<th>{_e(name)}</th>" for name, _ in columns) + "</tr>"
    body = "".join(tr(r, "(none)" if r.group is None else r.group) for r in report.rows)
    total = tr(report.total, "total")
    return f'<div class="scroll"><table><thead>{head}</thead><tbody>{body}</tbody><tfoot>{total}</tfoot></table></div>'


def render_html(report: Report, views: Mapping[GroupBy, Report] | None = None, *, now: datetime | None = None) -> str:
    """The whole page for ``report``; ``views`` (from :func:`chart_reports`) feed the charts."""
    views = views or {}
    span = date_range(report, views.get("day"))
    title = "canny report" + (f" · {span}" if span else "")
    generated = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = [f"by {report.by}", f"time zone {report.tz}", f"generated {generated}"]
    if report.repriced:
        meta.append("repriced at today's prices")
    parts = [
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">{_e(" · ".join(meta))}</p>',
    ]
    if report.is_empty:
        parts.append('<p class="note">No attempts recorded in this range.</p>')
    else:
        parts += [_cards(report), *_charts(report, views), _section(f"By {report.by}", _table(report))]
        if report.total.unpriced:
            parts.append(
                f'<p class="note">{_attempts(report.total.unpriced)} no price (unknown model or rate); '
                "their cost is not included above, not counted as $0.</p>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)
