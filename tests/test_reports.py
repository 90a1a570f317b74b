"""canny.reports: hand-computed totals for every --by, time zones, output shapes, repricing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from canny import reports
from canny.ledger import AttemptRecord, open_ledger
from canny.reports import Report, ReportRow, build_report, parse_when, plain_decimal, report_rows, resolve_tz
from canny.usage import Usage


def rec(call: str, attempt: int, when: str, model: str, outcome: str, cost: str | None, **kw: Any) -> AttemptRecord:
    start = datetime.fromisoformat(when).replace(tzinfo=UTC)
    return AttemptRecord(
        call_id=call,
        attempt=attempt,
        started_at=start,
        ended_at=start + timedelta(seconds=1),
        model=model,
        outcome=outcome,  # type: ignore[arg-type]
        cost_usd=None if cost is None else Decimal(cost),
        **kw,
    )


#: Six attempts of five calls; expected figures below are worked out by hand.
FIXTURE = [
    rec("A", 1, "2026-03-09T23:30", "sonnet", "error", "0.001", usage=Usage(input=100), tags=("x",), project="p1"),
    rec("A", 2, "2026-03-10T00:10", "sonnet", "ok", "0.01", usage=Usage(input=100, cache_write_5m=200,
        cache_read=700, output=50), tags=("x",), project="p1"),
    rec("B", 1, "2026-03-10T12:00", "haiku", "ok", None, usage=Usage(input=10, cache_write_1h=90, output=5),
        tags=("x", "y")),
    rec("C", 1, "2026-03-16T09:00", "opus", "refused", "0.02", usage=Usage(input=1000, output=10), project="p2"),
    rec("D", 1, "2026-04-01T00:30", "sonnet", "budget_refused", "0", tags=("y",), project="p1"),
    rec("E", 1, "2026-04-01T01:00", "sonnet", "max_tokens", "0.005", usage=Usage(input=50, cache_read=50,
        output=100), project="p2"),
]  # fmt: skip


@pytest.fixture(params=["sql", "python"])
def ledger(request: pytest.FixtureRequest, tmp_path: Path, memory_ledger: Any) -> Iterator[Any]:
    """The fixture rows in a SQLite ledger (sums in SQL) or a plain ledger (sums in Python)."""
    if request.param == "python":
        for record in FIXTURE:
            memory_ledger.record(record)
        yield memory_ledger
        return
    opened = open_ledger(tmp_path / "ledger.db")
    for record in FIXTURE:
        opened.record(record)
    yield opened
    opened.close()


def brief(report: Report) -> list[tuple[Any, ...]]:
    """(group, calls, attempts, cost, unpriced, failures) per row."""
    return [(r.group, r.calls, r.attempts, r.cost_usd, r.unpriced, r.failures) for r in report.rows]


D = Decimal


def test_total_line_counts_calls_once_and_keeps_unpriced_apart(ledger: Any) -> None:
    """Totals: 5 calls, 6 attempts, every bucket, $0.036 priced, 1 unpriced, 2 failures."""
    total = build_report(ledger, "day").total
    assert (total.calls, total.attempts) == (5, 6)
    assert (total.tokens.input, total.tokens.cache_write_5m, total.tokens.cache_write_1h) == (1260, 200, 90)
    assert (total.tokens.cache_read, total.tokens.output) == (750, 165)
    assert (total.cost_usd, total.unpriced, total.failures) == (D("0.036"), 1, 2)
    assert total.cache_hit_rate == pytest.approx(750 / 2300)


def test_by_day_in_utc(ledger: Any) -> None:
    """UTC days: the retry after midnight makes call A count on both days."""
    report = build_report(ledger, "day")
    assert brief(report) == [
        ("2026-03-09", 1, 1, D("0.001"), 0, 1),
        ("2026-03-10", 2, 2, D("0.01"), 1, 0),
        ("2026-03-16", 1, 1, D("0.02"), 0, 0),
        ("2026-04-01", 2, 2, D("0.005"), 0, 1),
    ]
    tokens = [
        (r.tokens.input, r.tokens.cache_write_5m, r.tokens.cache_write_1h, r.tokens.cache_read) for r in report.rows
    ]
    assert tokens[1] == (110, 200, 90, 700)


def test_by_day_in_new_york_moves_late_utc_attempts_back_a_day(ledger: Any) -> None:
    """In America/New_York (UTC-4 in March after DST) call A's two attempts share 03-09."""
    report = build_report(ledger, "day", tz=ZoneInfo("America/New_York"))
    assert brief(report) == [
        ("2026-03-09", 1, 2, D("0.011"), 0, 1),
        ("2026-03-10", 1, 1, None, 1, 0),
        ("2026-03-16", 1, 1, D("0.02"), 0, 0),
        ("2026-03-31", 2, 2, D("0.005"), 0, 1),
    ]
    assert report.tz == "America/New_York"


def test_by_week_uses_iso_weeks_from_monday(ledger: Any) -> None:
    """2026-03-09 is a Monday (W11); 03-16 starts W12; 04-01 is in W14."""
    assert brief(build_report(ledger, "week")) == [
        ("2026-W11", 2, 3, D("0.011"), 1, 1),
        ("2026-W12", 1, 1, D("0.02"), 0, 0),
        ("2026-W14", 2, 2, D("0.005"), 0, 1),
    ]


def test_by_month_depends_on_the_zone(ledger: Any) -> None:
    """April's first hour UTC is still March in New York."""
    assert brief(build_report(ledger, "month")) == [
        ("2026-03", 3, 4, D("0.031"), 1, 1),
        ("2026-04", 2, 2, D("0.005"), 0, 1),
    ]
    assert brief(build_report(ledger, "month", tz=ZoneInfo("America/New_York"))) == [
        ("2026-03", 5, 6, D("0.036"), 1, 2),
    ]


def test_by_model_sorts_by_cost_and_shows_unpriced_as_none(ledger: Any) -> None:
    """A model with no priced attempt has cost None (not $0) and its unpriced count."""
    assert brief(build_report(ledger, "model")) == [
        ("opus", 1, 1, D("0.02"), 0, 0),
        ("sonnet", 3, 4, D("0.016"), 0, 2),
        ("haiku", 1, 1, None, 1, 0),
    ]


def test_by_tag_groups_overlap_but_the_total_does_not(ledger: Any) -> None:
    """An attempt counts under each tag; untagged attempts form the (none) group."""
    report = build_report(ledger, "tag")
    assert brief(report) == [
        ("x", 2, 3, D("0.011"), 1, 1),
        ("y", 2, 2, D("0"), 1, 1),
        (None, 2, 2, D("0.025"), 0, 0),
    ]
    assert (report.total.attempts, report.total.calls) == (6, 5)


def test_by_project(ledger: Any) -> None:
    """Projects p1/p2, and attempts with no project last."""
    assert brief(build_report(ledger, "project")) == [
        ("p2", 2, 2, D("0.025"), 0, 0),
        ("p1", 2, 3, D("0.011"), 0, 2),
        (None, 1, 1, None, 1, 0),
    ]


def test_by_outcome_counts_failures_only_for_non_answers(ledger: Any) -> None:
    """refused and max_tokens are answers; error and budget_refused are failures."""
    rows = {r.group: (r.calls, r.attempts, r.failures) for r in build_report(ledger, "outcome").rows}
    assert rows == {
        "ok": (2, 2, 0),
        "error": (1, 1, 1),
        "refused": (1, 1, 0),
        "budget_refused": (1, 1, 1),
        "max_tokens": (1, 1, 0),
    }


def test_since_and_until_bound_the_report(ledger: Any) -> None:
    """Only attempts started in [since, until) count, totals included."""
    report = build_report(
        ledger, "day", since=datetime(2026, 3, 10, tzinfo=UTC), until=datetime(2026, 3, 17, tzinfo=UTC)
    )
    assert [r.group for r in report.rows] == ["2026-03-10", "2026-03-16"]
    assert (report.total.calls, report.total.attempts, report.total.cost_usd) == (3, 3, D("0.03"))


def test_reprice_shows_stored_repriced_and_difference(ledger: Any) -> None:
    """--reprice: per group today's sum, and the change over attempts priced both ways."""

    def pricer(r: AttemptRecord) -> Decimal | None:
        return None if r.model == "opus" else Decimal(r.usage.input) * Decimal("0.0001")

    report = build_report(ledger, "model", reprice=True, pricer=pricer)
    rows = {r.group: r for r in report.rows}
    sonnet = rows["sonnet"]
    assert (sonnet.cost_usd, sonnet.repriced_usd, sonnet.reprice_difference) == (D("0.016"), D("0.025"), D("0.009"))
    # unpriced before, priced now: a repriced sum, but no "difference" against an unknown
    haiku = rows["haiku"]
    assert (haiku.cost_usd, haiku.repriced_usd, haiku.reprice_difference) == (None, D("0.001"), None)
    # priced before, unknown now: not a drop to $0
    opus = rows["opus"]
    assert (opus.repriced_usd, opus.reprice_unpriced, opus.reprice_difference) == (None, 1, None)
    total = report.total
    assert (total.repriced_usd, total.reprice_unpriced, total.reprice_difference) == (D("0.026"), 1, D("0.009"))


def test_table_pricer_uses_the_price_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default pricer builds a Usage from the row and asks canny.pricing.cost (memoised)."""
    import canny.pricing

    calls: list[tuple[Any, ...]] = []

    def fake_cost(model: str, usage: Any, **kw: Any) -> Decimal:
        calls.append((model, usage.input, usage.cache_write_1h, kw["batch"], kw["at"]))
        return Decimal("1.5")

    monkeypatch.setattr(canny.pricing, "cost", fake_cost)
    price = reports.table_pricer()
    assert price(FIXTURE[2]) == Decimal("1.5")
    assert price(FIXTURE[2]) == Decimal("1.5")
    assert calls == [("haiku", 10, 90, False, None)]


MTOK = 1_000_000


@pytest.mark.parametrize(
    ("when", "model", "extra", "expected"),
    [
        # Sonnet 5.5 from 2026-10-07: input 2, read 0.10, 5m write 2.50, 1h write 4 ($/MTok)
        ("2026-10-08", "claude-sonnet-5-5", {}, "1.40"),  # 1 x (2 - 0.10) - 1 x (2.50 - 2)
        ("2026-10-01", "sonnet", {}, "1.30"),  # before the cut, reads were 0.20; an alias
        ("2026-10-08", "claude-sonnet-5-5", {"batch": True, "inference_geo": "us"}, "0.77"),  # x 0.5 x 1.1
        ("2026-09-01", "claude-sonnet-5-5", {}, "0"),  # before its first price: nothing counted
        ("2026-10-08", "mystery-model", {}, "0"),
        # Haiku 5.5, 0.1 MTok read: 0.1 x (0.10 - 0.01) at 100,000 prompt tokens; one more token
        # and the whole request is billed at the long-prompt rates: 0.1 x (0.50 - 0.05)
        ("2026-11-01", "claude-haiku-5-5", {"usage": Usage(cache_read=100_000)}, "0.009"),
        ("2026-11-01", "claude-haiku-5-5", {"usage": Usage(input=1, cache_read=100_000)}, "0.045"),
    ],
)  # fmt: skip
def test_cache_saving_per_attempt_is_hand_checked(when: str, model: str, extra: dict[str, Any], expected: str) -> None:
    """One attempt reading 1 MTok and writing 1 MTok (5m): the saving at the rates of that day and mode."""
    fields: dict[str, Any] = {"usage": Usage(cache_read=MTOK, cache_write_5m=MTOK)} | extra
    record = rec("S", 1, f"{when}T12:00", model, "ok", "1", **fields)
    rates = reports.cache_saving_rates()
    assert rates.to_usd(rates.saving_units(record)) == D(expected)


def test_cache_saving_counts_only_billed_priced_attempts() -> None:
    """No stored cost (unpriced) or a zero cost (an unbilled refusal): no saving counted."""
    rates = reports.cache_saving_rates()
    kw: dict[str, Any] = {"usage": Usage(cache_read=MTOK)}
    assert rates.saving_units(rec("S", 1, "2026-10-08T12:00", "claude-sonnet-5-5", "ok", None, **kw)) == 0
    assert rates.saving_units(rec("S", 1, "2026-10-08T12:00", "claude-sonnet-5-5", "refused", "0", **kw)) == 0
    assert rates.saving_units(rec("S", 1, "2026-10-08T12:00", "claude-sonnet-5-5", "ok", "1", **kw)) > 0


def test_savings_are_opt_in_and_can_be_negative(tmp_path: Path) -> None:
    """build_report(savings=True) fills saved_usd; writes never read back give a negative saving."""
    opened = open_ledger(tmp_path / "l.db")
    try:
        opened.record(
            rec("W", 1, "2026-11-02T09:00", "claude-sonnet-5-5", "ok", "0.01", usage=Usage(cache_write_1h=MTOK))
        )
        assert build_report(opened, "day").total.saved_usd is None
        report = build_report(opened, "day", savings=True)
    finally:
        opened.close()
    assert report.savings
    assert report.total.saved_usd == D("-2")  # 1 MTok x (4 - 2): the 1h write premium, not repaid
    assert report_rows(report)[-1]["saved_usd"] == "-2"


def test_report_rows_are_json_ready_with_decimal_strings(ledger: Any) -> None:
    """JSON/CSV rows: groups then the total, amounts as exact strings, None as None."""
    items = report_rows(build_report(ledger, "model"))
    assert [i["kind"] for i in items] == ["group", "group", "group", "total"]
    assert items[0]["cost_usd"] == "0.02"
    assert items[2]["cost_usd"] is None
    assert items[2]["unpriced"] == 1
    assert items[-1]["cost_usd"] == "0.036"
    assert items[-1]["group"] == "total"
    assert items[-1]["cache_hit_rate"] == round(750 / 2300, 6)


def test_empty_report_has_zero_total_and_no_cost(tmp_path: Path) -> None:
    """No attempts: no rows, an empty total whose cost is None."""
    opened = open_ledger(tmp_path / "l.db")
    try:
        report = build_report(opened, "week")
    finally:
        opened.close()
    assert report.is_empty
    assert report.rows == ()
    assert report.total == ReportRow("total")


def test_cache_hit_rate_is_none_without_input() -> None:
    """No prompt tokens at all: the hit rate is undefined, not 0."""
    assert ReportRow("x").cache_hit_rate is None
    assert ReportRow("x", tokens=Usage(input=1, cache_read=3)).cache_hit_rate == 0.75


NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("2026-11-01", False, datetime(2026, 11, 1, tzinfo=PARIS)),
        ("2026-11-30", True, datetime(2026, 12, 1, tzinfo=PARIS)),
        ("today", False, datetime(2026, 11, 24, tzinfo=PARIS)),
        ("today", True, datetime(2026, 11, 25, tzinfo=PARIS)),
        ("yesterday", False, datetime(2026, 11, 23, tzinfo=PARIS)),
        ("7d", False, NOW - timedelta(days=7)),
        ("12h", False, NOW - timedelta(hours=12)),
        ("2w", False, NOW - timedelta(weeks=2)),
        ("now", True, NOW),
        ("2026-11-02T08:00", False, datetime(2026, 11, 2, 8, tzinfo=PARIS)),
        ("2026-11-02T08:00:00Z", False, datetime(2026, 11, 2, 8, tzinfo=UTC)),
        ("2026-11-02T08:00+05:30", False, datetime(2026, 11, 2, 2, 30, tzinfo=UTC)),
    ],
)
def test_parse_when_reads_dates_datetimes_and_relative_spans(text: str, end: bool, expected: datetime) -> None:
    """Dates are local midnights (the next one for --until), ISO times keep their offset."""
    assert parse_when(text, tz=PARIS, now=NOW, end=end) == expected


@pytest.mark.parametrize("text", ["garbage", "2026-13-01", "7y", ""])
def test_parse_when_rejects_what_it_cannot_read(text: str) -> None:
    """Unreadable dates raise ValueError with the accepted forms."""
    with pytest.raises(ValueError, match="date"):
        parse_when(text, tz=UTC, now=NOW)


def test_resolve_tz_accepts_names_and_utc_and_rejects_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    """IANA names and UTC resolve; an unknown zone is a ValueError; local honours TZ."""
    assert resolve_tz("UTC") is UTC
    assert resolve_tz("Europe/Paris") == PARIS
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_tz("Mars/Olympus")
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert reports.zone_name(resolve_tz("local")) == "Asia/Tokyo"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("0.0101", "0.0101"),
        ("1E-12", "0.000000000001"),
        ("1.500", "1.5"),
        ("1E+2", "100"),
        ("0.000", "0"),
        ("-0.5", "-0.5"),
    ],
)
def test_plain_decimal_never_uses_exponents(value: str, text: str) -> None:
    """Amounts print as plain digits without trailing zeros."""
    assert plain_decimal(Decimal(value)) == text


def test_export_row_has_every_field_and_hides_text_unless_asked() -> None:
    """Export rows: ISO UTC times, cost as a string or None, tags as a list, no text by default."""
    record = rec("Z", 2, "2026-01-02T03:04:05", "m", "interrupted", "0.25", tags=("a",),
                 prompt_text="secret prompt", usage=Usage(input=7))  # fmt: skip
    row = reports.export_row(record)
    assert row["call_id"] == "Z"
    assert row["attempt"] == 2
    assert row["started_at"] == "2026-01-02T03:04:05+00:00"
    assert (row["cost_usd"], row["tags"], row["input_tokens"]) == ("0.25", ["a"], 7)
    assert "prompt_text" not in row
    assert reports.export_row(record, include_text=True)["prompt_text"] == "secret prompt"
    assert reports.export_row(rec("U", 1, "2026-01-01T00:00", "m", "ok", None))["cost_usd"] is None
