"""`canny report` and `canny ledger export|path`, through the click entry point."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from canny.cli import main
from canny.cli._report_render import render_bars
from canny.ledger import AttemptRecord, open_ledger
from canny.reports import Report, ReportRow
from tests.test_reports import FIXTURE


def run(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def ledger_path(clean_env: Path) -> Path:
    """The default ledger ($CANNY_HOME/ledger.db) holding the hand-computed fixture rows."""
    path = clean_env / "ledger.db"
    opened = open_ledger(path)
    try:
        for record in FIXTURE:
            opened.record(record)
    finally:
        opened.close()
    return path


def test_text_report_prints_table_totals_and_a_bar_chart(ledger_path: Path) -> None:
    """Default output: aligned table with a total line, then a Unicode bar chart, no ANSI."""
    result = run("report", "--by", "model", "--tz", "UTC")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["model", "calls", "attempts"]
    total = next(line for line in lines if line.startswith("total"))
    assert total.split()[1:3] == ["5", "6"]
    assert "$0.0360" in total
    assert "cost by model" in out
    assert "█" in out
    haiku = next(line for line in lines if line.startswith("haiku "))
    assert " - " in haiku  # an all-unpriced group shows no dollar figure, not $0
    assert "\x1b[" not in out  # NO_COLOR is set by the test environment


def test_json_report_is_a_list_with_decimal_strings(ledger_path: Path) -> None:
    """--json: group objects then the total; amounts are exact strings, unpriced is null."""
    result = run("report", "--by", "day", "--tz", "UTC", "--json")
    assert result.exit_code == 0
    items = json.loads(result.stdout)
    assert [i["group"] for i in items] == ["2026-03-09", "2026-03-10", "2026-03-16", "2026-04-01", "total"]
    assert items[1]["cost_usd"] == "0.01"
    assert items[1]["unpriced"] == 1
    assert items[-1] | {"cache_hit_rate": None} == {
        "kind": "total", "by": "day", "group": "total", "calls": 5, "attempts": 6, "input_tokens": 1260,
        "cache_write_5m_tokens": 200, "cache_write_1h_tokens": 90, "cache_read_tokens": 750,
        "output_tokens": 165, "cost_usd": "0.036", "unpriced": 1, "failures": 2, "cache_hit_rate": None,
    }  # fmt: skip


def test_csv_report_has_a_header_and_one_row_per_group(ledger_path: Path) -> None:
    """--csv: a header row, each group, and the total; empty cell for no cost."""
    result = run("report", "--by", "project", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["group"] for r in rows] == ["p2", "p1", "", "total"]
    assert rows[2]["cost_usd"] == ""
    assert rows[2]["unpriced"] == "1"
    assert rows[-1]["kind"] == "total"
    assert rows[-1]["cost_usd"] == "0.036"


def test_html_report_is_one_self_contained_page(ledger_path: Path, tmp_path: Path) -> None:
    """--html FILE: inline SVG charts and the table; no scripts, no links to anywhere."""
    page_path = tmp_path / "report.html"
    result = run("report", "--by", "tag", "--html", str(page_path))
    assert result.exit_code == 0
    assert "wrote" in result.stderr
    page = page_path.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 18  # 6 charts (see tests/test_report_html.py), each in 3 frames
    for title in ("Cost per day", "Tokens per bucket", "Cost by model", "Cost by project", "Cost by tag"):
        assert f"<h2>{title}</h2>" in page
    assert "http://" not in page
    assert "https://" not in page
    assert "<script" not in page
    assert "<link" not in page
    assert "src=" not in page
    assert "<td>(none)</td>" in page
    assert "$0.0360" in page


def test_reprice_compares_stored_and_todays_prices(ledger_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--reprice: JSON gains repriced, difference and reprice_unpriced per group."""
    from canny import reports

    def fake_pricer() -> Any:
        return lambda r: Decimal(r.usage.input) * Decimal("0.0001")

    monkeypatch.setattr(reports, "table_pricer", fake_pricer)
    result = run("report", "--by", "model", "--reprice", "--json")
    assert result.exit_code == 0, result.stderr
    rows = {i["group"]: i for i in json.loads(result.stdout)}
    assert rows["sonnet"]["cost_usd"] == "0.016"
    assert rows["sonnet"]["repriced_usd"] == "0.025"
    assert rows["sonnet"]["reprice_difference_usd"] == "0.009"
    assert (rows["total"]["repriced_usd"], rows["total"]["reprice_difference_usd"]) == ("0.126", "0.089")
    assert (rows["haiku"]["repriced_usd"], rows["haiku"]["reprice_difference_usd"]) == ("0.001", None)
    text = run("report", "--by", "model", "--reprice").stdout
    assert "repriced" in text
    assert "difference" in text
    assert "+$0.0090" in text


def test_since_until_filter_and_dates_include_the_until_day(ledger_path: Path) -> None:
    """--until with a date includes that whole day."""
    result = run("report", "--by", "day", "--tz", "UTC", "--since", "2026-03-10", "--until", "2026-03-16", "--json")
    groups = [i["group"] for i in json.loads(result.stdout)]
    assert groups == ["2026-03-10", "2026-03-16", "total"]


def test_empty_ledger_is_a_friendly_line_and_creates_no_file(clean_env: Path) -> None:
    """No ledger yet: one sentence, exit 0, and no file is created by reading."""
    result = run("report")
    assert result.exit_code == 0
    assert "no attempts recorded" in result.stderr and result.stdout == ""
    assert not (clean_env / "ledger.db").exists()
    assert json.loads(run("report", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["report", "--since", "last tuesday"], "cannot read"),
        (["report", "--tz", "Mars/Olympus"], "unknown time zone"),
        (["report", "--json", "--csv"], "one of --json and --csv"),
        (["report", "--by", "colour"], "--by"),
        (["report", "--since", "2026-03-10", "--until", "2026-03-01"], "must be before"),
        (["ledger", "export", "--format", "xml"], "--format"),
    ],
)
def test_bad_usage_is_one_line_and_exit_2(ledger_path: Path, args: list[str], needle: str) -> None:
    """Usage mistakes: exit 2, a single stderr line naming the problem, no traceback."""
    result = run(*args)
    assert result.exit_code == 2
    assert needle in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_a_corrupt_ledger_is_exit_1_with_one_line(clean_env: Path) -> None:
    """A ledger file that is not a database: exit 1, one line naming the file."""
    (clean_env / "ledger.db").write_bytes(b"\x00garbage" * 100)
    for args in (["report"], ["ledger", "export"]):
        result = run(*args)
        assert result.exit_code == 1
        assert len(result.stderr.strip().splitlines()) == 1
        assert str(clean_env / "ledger.db") in result.stderr


def test_export_jsonl_has_the_required_fields(ledger_path: Path, tmp_path: Path) -> None:
    """ledger export: one JSON object per attempt with ids, usage and cost (string or null)."""
    out = tmp_path / "rows.jsonl"
    result = run("ledger", "export", "--format", "jsonl", "-o", str(out))
    assert result.exit_code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6
    required = {"call_id", "attempt", "model", "outcome", "input_tokens", "output_tokens", "cache_read_tokens"}
    required |= {"cache_write_5m_tokens", "cache_write_1h_tokens", "cost_usd"}
    assert all(required <= row.keys() for row in rows)
    assert [r["cost_usd"] for r in rows] == ["0.001", "0.01", None, "0.02", "0", "0.005"]
    assert all("prompt_text" not in r for r in rows)


def test_export_csv_streams_to_stdout_with_since(ledger_path: Path) -> None:
    """ledger export --format csv: header plus the attempts in range; unpriced is empty."""
    result = run("ledger", "export", "--format", "csv", "--since", "2026-03-10", "--until", "2026-03-10")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(r["call_id"], r["attempt"], r["cost_usd"]) for r in rows] == [("A", "2", "0.01"), ("B", "1", "")]
    assert rows[1]["tags"] == '["x", "y"]'


def test_export_of_a_missing_ledger_is_empty(clean_env: Path) -> None:
    """Exporting before anything was recorded prints nothing (CSV: the header only)."""
    assert run("ledger", "export").stdout == ""
    assert run("ledger", "export", "--format", "csv").stdout.startswith("call_id,attempt,")
    assert not (clean_env / "ledger.db").exists()


def test_ledger_path_shows_the_configured_location(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ledger path: $CANNY_HOME/ledger.db by default; CANNY_LEDGER wins, password masked."""
    assert run("ledger", "path").stdout.strip() == str(clean_env / "ledger.db")
    monkeypatch.setenv("CANNY_LEDGER", "postgresql://team:hunter2@db.internal/canny")
    result = run("ledger", "path")
    assert result.stdout.strip() == "postgresql://team:****@db.internal/canny"
    assert "hunter2" not in result.stdout + result.stderr


def test_ledger_option_reads_another_file(ledger_path: Path, clean_env: Path, tmp_path: Path) -> None:
    """--ledger PATH reports on that file instead of the configured one."""
    other = tmp_path / "other.db"
    opened = open_ledger(other)
    try:
        opened.record(AttemptRecord(call_id="solo", attempt=1, started_at=FIXTURE[0].started_at,
                                    ended_at=FIXTURE[0].ended_at, model="m", outcome="ok"))  # fmt: skip
    finally:
        opened.close()
    items = json.loads(run("report", "--ledger", str(other), "--json").stdout)
    assert items[-1]["attempts"] == 1
    assert items[-1]["cost_usd"] is None


def _report(rows: list[ReportRow]) -> Report:
    return Report("model", "UTC", None, None, tuple(rows), ReportRow("total"))


@pytest.fixture
def wide_rows() -> list[ReportRow]:
    return [
        ReportRow("a-very-long-model-name-that-goes-on-and-on", cost_usd=Decimal("12.5")),
        ReportRow("b", cost_usd=Decimal("3.125")),
        ReportRow("c", unpriced=2),
    ]


@pytest.mark.parametrize("width", [40, 80, 132])
def test_bar_chart_fits_the_terminal_width(wide_rows: list[ReportRow], width: int) -> None:
    """Every chart line fits in the given width; the largest bar is the longest."""
    lines = render_bars(_report(wide_rows), width=width).splitlines()
    assert all(len(line) <= width for line in lines)
    assert lines[1].count("█") > lines[2].count("█") > 0
    assert lines[3].rstrip().endswith("unpriced")


def test_bar_chart_falls_back_to_ascii_and_colours_only_when_asked(wide_rows: list[ReportRow]) -> None:
    """blocks=False draws with #; color=True wraps bars in ANSI; default has neither."""
    ascii_chart = render_bars(_report(wide_rows), width=60, blocks=False)
    assert "#" in ascii_chart
    assert "█" not in ascii_chart
    assert "\x1b[36m" in render_bars(_report(wide_rows), width=60, color=True)
    assert "\x1b[" not in render_bars(_report(wide_rows), width=60)
