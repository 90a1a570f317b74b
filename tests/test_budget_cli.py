"""`canny budget set|show|reset`, and `canny ask` stopped by a budget with exit code 4."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from canny import budget
from canny.cli import main
from canny.ledger import open_ledger


def _canny(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("canny:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_set_then_show(clean_env: Path) -> None:
    """`set` stores day and month limits; `show --json` lists them with spent and headroom."""
    result = _canny("budget", "set", "--day", "5", "--month", "$100", "--project", "acme", "--tz", "Europe/Paris")
    assert result.exit_code == 0, result.stderr
    assert "day budget for project acme: $5.0000 per day (Europe/Paris)" in result.stderr
    shown = _canny("budget", "show", "--json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert [(b["period"], b["limit"], b["project"], b["time_zone"]) for b in data["budgets"]] == [
        ("day", "5", "acme", "Europe/Paris"),
        ("month", "100", "acme", "Europe/Paris"),
    ]
    assert {b["spent"] for b in data["budgets"]} == {"0"}
    assert data["budgets"][0]["headroom"] == "5"
    assert data["reservations"] == {"held": 0, "expired": 0, "next_lease_end": None}
    table = _canny("budget", "show")
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == ["budget", "period", "limit", "spent", "reserved", "headroom"]
    assert "day · project acme" in table.stdout


def test_show_includes_profile_budgets(clean_env: Path) -> None:
    """Budgets from the active profile's budget table are shown, marked as such."""
    (clean_env / "config.toml").write_text('[budget]\nmonth = "20"\ntag = "nightly"\n', encoding="utf-8")
    result = _canny("budget", "show")
    assert result.exit_code == 0, result.stderr
    assert "month · tag nightly (profile)" in result.stdout


def test_show_with_no_budgets(clean_env: Path) -> None:
    """With nothing set, `show` says how to set a budget."""
    result = _canny("budget", "show")
    assert result.exit_code == 0
    assert "canny budget set --day 5" in result.stderr and result.stdout == ""


def test_set_needs_a_limit_and_valid_values(clean_env: Path) -> None:
    """`set` without a limit is a usage error; a bad amount or zone is one clean line, exit 2."""
    assert _canny("budget", "set").exit_code == 2
    bad = _canny("budget", "set", "--day", "lots")
    assert bad.exit_code == 2
    assert "dollar amount" in _one_line(bad.stderr)
    zone = _canny("budget", "set", "--day", "5", "--tz", "Nowhere/Special")
    assert zone.exit_code == 2
    assert "unknown time zone" in _one_line(zone.stderr)


def test_reset_asks_first(clean_env: Path) -> None:
    """`reset` asks before removing; answering no keeps the budgets, --yes removes them."""
    _canny("budget", "set", "--day", "5")
    _canny("budget", "set", "--month", "50", "--tag", "ci")
    declined = _canny("budget", "reset", stdin="n\n")
    assert declined.exit_code == 1
    assert "Remove 2 budget(s)" in declined.stderr
    assert len(json.loads(_canny("budget", "show", "--json").stdout)["budgets"]) == 2
    removed = _canny("budget", "reset", "--tag", "ci", "--yes")
    assert removed.exit_code == 0
    assert "removed 1 budget(s)" in removed.stderr
    left = json.loads(_canny("budget", "show", "--json").stdout)["budgets"]
    assert [(b["period"], b["tag"]) for b in left] == [("day", None)]


def test_reset_reservations(clean_env: Path) -> None:
    """`reset --reservations --yes` ends the holds of calls in flight."""
    from canny._call import CallSpec

    ledger = open_ledger(clean_env / "ledger.db")
    try:
        budget.set_budget(ledger, period="day", limit="1")
        spec = CallSpec(
            model="claude-sonnet-5-5",
            params={"model": "claude-sonnet-5-5", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]},
            stream=True,
        )
        guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
        guard.reserve(spec)
    finally:
        ledger.close()
    assert "1 reservation(s) held" in _canny("budget", "show").stdout
    result = _canny("budget", "reset", "--reservations", "--yes")
    assert result.exit_code == 0, result.stderr
    assert "1 reservation(s) ended" in result.stderr
    data = json.loads(_canny("budget", "show", "--json").stdout)
    assert data["budgets"][0]["reserved"] == "0"
    assert data["reservations"]["held"] == 0


def test_ask_over_a_stored_budget_exits_4(clean_env: Path) -> None:
    """`canny ask` refused by a stored budget: exit 4, one clean line, a budget_refused row."""
    _canny("budget", "set", "--day", "0.00001")
    result = _canny("ask", "--offline", "hello")
    assert result.exit_code == 4
    line = _one_line(result.stderr)
    assert line.startswith("canny: the day budget for all calls ($0.00001")
    assert "canny budget set --day" in line
    assert result.stdout == ""
    ledger = open_ledger(clean_env / "ledger.db")
    try:
        assert [r.outcome for r in ledger.records()] == ["budget_refused"]
    finally:
        ledger.close()


def test_ask_over_a_profile_budget_exits_4(clean_env: Path) -> None:
    """A budget from the config profile binds `canny ask` too."""
    config = '[profiles.tight]\n[profiles.tight.budget]\nday = "0.00001"\ntime_zone = "Asia/Tokyo"\n'
    (clean_env / "config.toml").write_text(config, encoding="utf-8")
    assert _canny("ask", "--offline", "hello").exit_code == 0
    result = _canny("ask", "--offline", "--profile", "tight", "hello")
    assert result.exit_code == 4
    assert "raise budget.day in the config profile" in _one_line(result.stderr)
