"""The HTML report's text and geometry (canny.cli._report_html, _report_svg), without a
browser: money to the cent, round axis ticks, thinned time labels, slim single columns,
"unpriced" for unknown models, and the date range in the heading. The browser checks
(layout at desktop and phone widths) are in tests/test_report_browser.py."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.cli._report_html import chart_reports, date_range, display_usd, render_html
from canny.cli._report_svg import NARROW, WIDE, Column, column_chart, nice_ticks, tick_label, x_labels
from canny.ledger import AttemptRecord, GroupBy, open_ledger
from canny.reports import Report, ReportRow, build_report
from tests.test_reports import rec


@pytest.mark.parametrize(
    ("amount", "shown"),
    [
        ("946.6733", "$946.67"),
        ("1234.5", "$1,234.50"),
        ("1234567.891", "$1,234,567.89"),
        ("0.0151", "$0.02"),
        ("0.0042", "$0.0042"),
        ("0.000024", "$0.000024"),
        ("0.005", "$0.0050"),
        ("0", "$0.00"),
        ("-0.25", "-$0.25"),
        (None, "unpriced"),
    ],
)
def test_display_usd_is_cents_but_never_zero_for_a_cost(amount: str | None, shown: str) -> None:
    """Cards and charts show cents; a non-zero amount that would read $0.00 keeps two significant digits."""
    assert display_usd(None if amount is None else Decimal(amount)) == shown


@pytest.mark.parametrize(
    ("top", "ticks"),
    [
        ("946.6733", ["0", "200", "400", "600", "800", "1000"]),
        ("0.036", ["0", "0.01", "0.02", "0.03", "0.04"]),
        ("8.1", ["0", "2", "4", "6", "8", "10"]),
        ("1", ["0", "0.2", "0.4", "0.6", "0.8", "1"]),
        ("12.6", ["0", "5", "10", "15"]),
        ("0.0001", ["0", "0.00002", "0.00004", "0.00006", "0.00008", "0.0001"]),
    ],
)
def test_nice_ticks_are_round_and_cover_the_top(top: str, ticks: list[str]) -> None:
    """Axis values: 0 and equal round steps (1, 2, 2.5, 5 × 10^k) up to the first one ≥ the top."""
    assert nice_ticks(Decimal(top)) == [Decimal(t) for t in ticks]


def test_nice_ticks_always_give_four_to_six_values() -> None:
    """Over tops from $0.000013 to $98,000 the axis has 4-6 values and reaches the top."""
    for digits in range(10, 99, 7):
        for power in range(-6, 4):
            top = Decimal(digits).scaleb(power)
            ticks = nice_ticks(top)
            assert 4 <= len(ticks) <= 6, (top, ticks)
            assert ticks[-1] >= top > ticks[-2]


def test_tick_labels_carry_the_decimals_their_step_needs() -> None:
    """$200 steps have no decimals, $2.5 steps show cents, sub-cent steps show their digits."""
    assert tick_label(Decimal(1000), Decimal(200)) == "$1,000"
    assert tick_label(Decimal("7.5"), Decimal("2.5")) == "$7.50"
    assert tick_label(Decimal("0.6"), Decimal("0.2")) == "$0.60"
    assert tick_label(Decimal("0.0075"), Decimal("0.0025")) == "$0.0075"


def _year() -> list[date]:
    return [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]


def test_a_year_of_days_is_labelled_by_month_wide_and_by_quarter_narrow() -> None:
    """365 daily columns: 12 month labels (January shows the year) wide; every other month on a phone."""
    days = _year()
    wide = x_labels(days, "day", [i * 2.4 for i in range(365)], 12)
    months = ["Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    assert [t for _, t in wide] == ["2026", *months]
    assert [days[i] for i, _ in wide][1] == date(2026, 2, 1)
    narrow = x_labels(days, "day", [i * 0.8 for i in range(365)], 12)
    assert [t for _, t in narrow] == ["2026", "Mar", "May", "Jul", "Sep", "Nov"]
    assert [t for _, t in x_labels(days, "day", [i * 0.5 for i in range(365)], 12)] == ["2026", "Apr", "Jul", "Oct"]


def test_a_few_days_are_each_labelled_and_weeks_by_their_monday() -> None:
    """Three days get three labels; weekly columns are labelled by the Monday they start on."""
    days = [date(2026, 3, 9), date(2026, 3, 10), date(2026, 3, 11)]
    assert x_labels(days, "day", [100, 400, 700], 12) == [(0, "Mar 9"), (1, "Mar 10"), (2, "Mar 11")]
    weeks = [date(2026, 3, 2), date(2026, 3, 9)]
    assert x_labels(weeks, "week", [100, 500], 12) == [(0, "Mar 2"), (1, "Mar 9")]


def _rects(svg: str) -> list[dict[str, float]]:
    found = re.findall(r'<rect class="bar[^"]*" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"', svg)
    return [dict(zip(("x", "y", "w", "h"), map(float, f), strict=True)) for f in found]


def test_one_day_is_a_slim_centred_column_with_gridlines() -> None:
    """A single period is one column no wider than the frame allows, centred in the plot, under 6 gridlines."""
    svg = column_chart([Column(date(2026, 3, 10), Decimal("946.6733"), "tip")], "day", "cost", WIDE)
    (bar,) = _rects(svg)
    assert bar["w"] == WIDE.max_column
    labels = re.findall(r'class="yl"[^>]*>([^<]+)<', svg)
    assert labels == ["$0", "$200", "$400", "$600", "$800", "$1,000"]
    assert svg.count('class="grid"') == 5
    left = float(re.search(r'<line class="axis" x1="([\d.]+)"', svg).group(1))  # type: ignore[union-attr]
    right = WIDE.width - 14
    assert abs((bar["x"] + bar["w"] / 2) - (left + right) / 2) < 0.05
    assert abs(bar["h"] - (946.6733 / 1000) * (WIDE.height - 36)) < 0.01


def test_unpriced_periods_are_grey_marks_and_empty_ones_draw_nothing() -> None:
    """A period whose attempts are all unpriced is a 3-unit grey mark, never a $0 column."""
    columns = [
        Column(date(2026, 3, 9), Decimal(2), "a"),
        Column(date(2026, 3, 10), None, "b"),
        Column(date(2026, 3, 11), Decimal(0), ""),
    ]
    svg = column_chart(columns, "day", "cost", NARROW)
    assert [r["h"] for r in _rects(svg)] == [pytest.approx(NARROW.height - 36), 3.0]
    assert svg.count('class="bar unpriced"') == 1


def _record(day: datetime, model: str, cost: str | None, **kw: object) -> AttemptRecord:
    return rec(f"c{day.isoformat()}{model}", 1, day.strftime("%Y-%m-%dT%H:%M"), model, "ok", cost, **kw)


def _page(records: list[AttemptRecord], path: Path, by: GroupBy = "day", **kw: datetime) -> str:
    opened = open_ledger(path)
    try:
        for record in records:
            opened.record(record)
        report = build_report(opened, by, **kw)  # type: ignore[arg-type]
        views = chart_reports(report, lambda g: build_report(opened, g, **kw))  # type: ignore[arg-type]
    finally:
        opened.close()
    return render_html(report, views, now=datetime(2026, 12, 3, tzinfo=UTC))


def test_headline_cost_is_to_the_cent_with_the_exact_amount_as_tooltip(clean_env: Path) -> None:
    """The cost card shows $946.67 for $946.6733 (the exact figure in its title); the table keeps 4 decimals."""
    start = datetime(2026, 3, 10, 9, tzinfo=UTC)
    page = _page([_record(start, "sonnet", "946.6733")], clean_env / "l.db")
    assert 'cost<b><span title="$946.6733">$946.67</span></b>' in page
    assert '<td><span title="$946.6733">$946.6733</span></td>' in page
    assert "<h1>canny report · 2026-03-10</h1>" in page


def test_typo_models_read_unpriced_never_zero_dollars(clean_env: Path) -> None:
    """A model the price table does not know (its 404 cost $0) is "unpriced" in chart and table, never $0.0000."""
    start = datetime(2026, 3, 10, 9, tzinfo=UTC)
    records = [_record(start, "claude-sonnet-4-5", "0.5"), _record(start + timedelta(hours=1), "sonet", "0")]
    page = _page(records, clean_env / "l.db", by="model")
    assert "$0.0000" not in page
    assert "<td>sonet</td><td><span>unpriced</span></td>" in page
    assert '<td>total</td><td><span title="$0.5000">$0.5000</span></td>' in page
    assert "sonet: unpriced (model not in the price table), 1 attempts" in page
    assert '<td>claude-sonnet-4-5</td><td><span title="$0.5000">$0.5000</span></td>' in page


def test_heading_shows_the_asked_range_or_the_days_with_attempts() -> None:
    """--since/--until win (until is exclusive, so a midnight shows the day before); else first and last day."""
    days = Report("day", "UTC", None, None, (ReportRow("2026-01-03"), ReportRow("2026-12-30")), ReportRow("total"))
    assert date_range(days, days) == "2026-01-03 – 2026-12-30"
    since, until = datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    asked = Report("model", "UTC", since, until, (), ReportRow("total"))
    assert date_range(asked, days) == "2026-01-01 – 2026-12-31"
    late = Report("model", "UTC", datetime(2026, 11, 26, 14, 31, tzinfo=UTC), None, (), ReportRow("total"))
    assert date_range(late, days) == "2026-11-26 14:31 – 2026-12-30"


def test_the_cli_page_is_self_contained_with_every_chart(clean_env: Path) -> None:
    """`canny report --by model --html`: heading range, six cards, six charts in three frames each, no assets."""
    path = clean_env / "ledger.db"
    start = datetime(2026, 3, 9, 9, tzinfo=UTC)
    records = [
        _record(start, "claude-sonnet-4-5", "1.25", project="web", tags=("a",)),
        _record(start + timedelta(days=2), "claude-haiku-4-5", "0.003", tags=("a", "b")),
        rec("f", 1, "2026-03-12T10:00", "claude-haiku-4-5", "error", None),
    ]
    opened = open_ledger(path)
    for record in records:
        opened.record(record)
    opened.close()
    page_path = clean_env / "report.html"
    result = CliRunner().invoke(main, ["report", "--by", "model", "--html", str(page_path), "--tz", "UTC"])
    assert result.exit_code == 0, result.stderr
    page = page_path.read_text(encoding="utf-8")
    assert "<h1>canny report · 2026-03-09 – 2026-03-12</h1>" in page
    assert page.count('<div class="card">') == 6
    assert "$1.25</span></b>" in page  # 1.25 + 0.003 = 1.253 -> $1.25
    titles = re.findall(r"<h2>([^<]+)</h2>", page)
    assert titles == [
        "Cost per day", "Cost by model", "Cost by project", "Cost by tag",
        "Attempts not ok, by outcome", "Tokens per bucket", "By model",
    ]  # fmt: skip
    assert [page.count(f'<svg class="{frame}"') for frame in ("wide", "medium", "narrow")] == [6, 6, 6]
    assert 'class="fail"' in page  # the error attempt
    for banned in ("http://", "https://", "<script", "<link", "src=", "@import", "url("):
        assert banned not in page
