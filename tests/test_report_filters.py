"""`canny report` filters, two-key grouping, --by session, --limit, the terminal width and
--since in minutes (issue 14, "First report"), on the hand-computed fixture of test_reports."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from canny import reports
from canny.cli import main
from canny.ledger import ReportFilter, open_ledger
from tests.test_reports import FIXTURE


def run(*args: str, columns: int | None = None) -> Result:
    env = {"COLUMNS": str(columns)} if columns else {}
    return CliRunner().invoke(main, list(args), catch_exceptions=False, env=env)


#: FIXTURE plus one emulator call (tagged offline) and a session on call E.
ROWS = [
    *FIXTURE[:-1],
    replace(FIXTURE[-1], session_id="s-1"),
    replace(FIXTURE[-1], call_id="F", tags=("offline",), cost_usd=Decimal("0.5"), session_id="s-1"),
]


@pytest.fixture
def ledger_path(clean_env: Path) -> Path:
    path = clean_env / "ledger.db"
    opened = open_ledger(path)
    try:
        for record in ROWS:
            opened.record(record)
    finally:
        opened.close()
    return path


def _json(*args: str) -> list[dict[str, Any]]:
    result = run("report", "--tz", "UTC", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return list(json.loads(result.stdout))


def test_filters_keep_only_the_matching_attempts(ledger_path: Path) -> None:
    """--model/--project/--outcome/--tag narrow the rows; repeated values are alternatives."""
    total = _json("--by", "model", "--model", "sonnet", "--exclude-offline")[-1]
    assert (total["calls"], total["attempts"], total["cost_usd"]) == (3, 4, "0.016")
    total = _json("--by", "model", "--project", "p2", "--exclude-offline")[-1]
    assert (total["calls"], total["attempts"], total["cost_usd"]) == (2, 2, "0.025")
    total = _json("--by", "day", "--outcome", "ok", "--outcome", "refused")[-1]
    assert (total["calls"], total["attempts"], total["cost_usd"], total["unpriced"]) == (3, 3, "0.03", 1)
    rows = _json("--by", "tag", "--tag", "y")
    assert [(r["group"], r["attempts"]) for r in rows] == [("y", 2), ("x", 1), ("total", 2)]


def test_offline_calls_count_unless_excluded(ledger_path: Path) -> None:
    """By default the emulator's calls (tag `offline`) count; --exclude-offline leaves them out."""
    assert _json("--by", "model")[-1]["cost_usd"] == "0.536"
    assert _json("--by", "model", "--exclude-offline")[-1]["cost_usd"] == "0.036"


def test_two_keys_group_by_both(ledger_path: Path) -> None:
    """--by month,model: one row per (month, model) pair, with `then` and `subgroup`."""
    rows = _json("--by", "month,model", "--exclude-offline")
    pairs = [(r["group"], r["subgroup"], r["calls"], r["cost_usd"]) for r in rows if r["kind"] == "group"]
    assert pairs == [
        ("2026-03", "opus", 1, "0.02"),
        ("2026-03", "sonnet", 1, "0.011"),
        ("2026-03", "haiku", 1, None),
        ("2026-04", "sonnet", 2, "0.005"),
    ]
    assert rows[0]["then"] == "model"


def test_by_session_groups_the_session_ids(ledger_path: Path) -> None:
    """--by session: attempts without a session form the (none) group, listed last."""
    rows = _json("--by", "session")
    assert [(r["group"], r["calls"], r["cost_usd"]) for r in rows] == [
        ("s-1", 2, "0.505"),
        (None, 4, "0.031"),
        ("total", 6, "0.536"),
    ]


def test_limit_keeps_the_latest_periods_and_the_whole_total(ledger_path: Path) -> None:
    """--limit 2 --by day shows the two latest days; the total still covers every day."""
    rows = _json("--by", "day", "--limit", "2", "--exclude-offline")
    assert [r["group"] for r in rows] == ["2026-03-16", "2026-04-01", "total"]
    assert rows[-1]["calls"] == 5
    result = run("report", "--tz", "UTC", "--by", "model", "--limit", "1")
    assert "2 more group(s) not shown" in result.stderr


@pytest.mark.parametrize("columns", [80, 200])
def test_the_table_fits_the_terminal(ledger_path: Path, columns: int) -> None:
    """The table fits COLUMNS: 80 drops token columns (keeps group, calls, cost); 200 shows all."""
    result = run("report", "--tz", "UTC", "--by", "month,model", columns=columns)
    table = result.stdout.split("\n\n")[0].splitlines()
    assert max(len(line) for line in table) <= columns
    head = table[0].split()
    assert head[:3] == ["month", "model", "calls"] and "cost" in head
    assert ("1h" in head) is (columns == 200)  # the "write 1h" column


def test_long_labels_are_shortened_to_fit(clean_env: Path) -> None:
    """A model name longer than the room left is cut with an ellipsis, the line still fits."""
    opened = open_ledger(clean_env / "ledger.db")
    opened.record(replace(FIXTURE[0], model="m" * 120))
    opened.close()
    result = run("report", "--by", "model", columns=80)
    line = next(line for line in result.stdout.splitlines() if line.startswith("mmm"))
    assert len(line) <= 80 and "…" in line


def test_since_accepts_minutes_and_hours() -> None:
    """--since 30m and 90min go back minutes; 2h hours (as 7d goes back days)."""
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert reports.parse_when("30m", tz=UTC, now=now) == now - timedelta(minutes=30)
    assert reports.parse_when("90min", tz=UTC, now=now) == now - timedelta(minutes=90)
    assert reports.parse_when("2h", tz=UTC, now=now) == now - timedelta(hours=2)


def test_since_30m_on_the_command_line(clean_env: Path) -> None:
    """`canny report --since 30m` counts the attempts of the last half hour only."""
    opened = open_ledger(clean_env / "ledger.db")
    now = datetime.now(UTC)
    opened.record(replace(FIXTURE[1], call_id="new", started_at=now - timedelta(minutes=5), ended_at=now))
    opened.record(replace(FIXTURE[1], call_id="old", started_at=now - timedelta(minutes=50), ended_at=now))
    opened.close()
    result = run("report", "--since", "30m", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[-1]["calls"] == 1


def test_a_bad_grouping_is_one_usage_line() -> None:
    """--by with an unknown, repeated or a third key is a one-line usage error (exit 2)."""
    for by in ("model,model", "day,model,tag", "colour"):
        result = run("report", "--by", by)
        assert result.exit_code == 2
        assert "expected one or two different keys" in result.stderr


def test_the_python_summary_applies_the_same_filters(memory_ledger: Any) -> None:
    """A ledger without SQL (and --reprice) filters in Python with the same meaning."""
    for record in ROWS:
        memory_ledger.record(record)
    flt = ReportFilter(models=("sonnet",), offline=False)
    report = reports.build_report(memory_ledger, "model", filters=flt, then="day")
    assert [(r.group, r.subgroup, r.calls) for r in report.rows] == [
        ("sonnet", "2026-03-10", 1),
        ("sonnet", "2026-04-01", 2),
        ("sonnet", "2026-03-09", 1),
    ]
    assert report.total.cost_usd == Decimal("0.016")
