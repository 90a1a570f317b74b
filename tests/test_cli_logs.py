"""`canny logs`: the last attempts newest first, -n, --json, stored text, and --follow
ending cleanly on Ctrl-C and on a closed pipe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pytest
from click.testing import CliRunner, Result

from canny.cli import main
from canny.ledger import AttemptRecord, open_ledger
from canny.usage import Usage
from tests.conftest import CANARY_KEY

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _row(n: int, **fields: Any) -> AttemptRecord:
    values: dict[str, Any] = {
        "call_id": f"call-{n}",
        "attempt": 1,
        "started_at": T0 + timedelta(minutes=n),
        "ended_at": T0 + timedelta(minutes=n, seconds=3),
        "model": "claude-sonnet-5-5",
        "outcome": "ok",
        "usage": Usage(input=1000 + n, output=50),
        "cost_usd": Decimal("0.0025") + n,
        **fields,
    }
    return AttemptRecord(**values)


def _write(path: Path, *rows: AttemptRecord) -> None:
    ledger = open_ledger(str(path))
    try:
        for row in rows:
            ledger.record(row)
    finally:
        ledger.close()


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["logs", *args])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    _write(
        path,
        _row(1, project="acme", tags=("nightly", "eu")),
        _row(2, outcome="error", status_code=529, error_type="overloaded_error", usage=Usage(input=0, output=0),
             cost_usd=Decimal(0)),
        _row(3, usage=Usage(input=1003, cache_read=38912, cache_write_1h=856, output=50), prompt_text=json.dumps(
            {"messages": [{"role": "user", "content": "What is our refund policy?"}], "system": None, "tools": None}
        ), response_text="Refunds within 30 days.\nNo questions asked."),
    )  # fmt: skip
    return path


def test_lines_are_newest_first_with_time_model_outcome_tokens_cost_project_tags(db: Path) -> None:
    """Each attempt is one line (plus its stored prompt and answer), newest first, and -n limits them."""
    result = run("--ledger", str(db))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        "2026-11-02 09:33:00  claude-sonnet-5-5  ok  in 1,003 · write 1h 856 · cache read 38,912 · out 50  $3.0025",
        "  > What is our refund policy?",
        "  < Refunds within 30 days. No questions asked.",
        "2026-11-02 09:32:00  claude-sonnet-5-5  error (overloaded_error)  in 0 · out 0  $0.0000",
        "2026-11-02 09:31:00  claude-sonnet-5-5  ok  in 1,001 · out 50  $1.0025  acme  #nightly #eu",
    ]
    newest = run("--ledger", str(db), "-n", "1").stdout.splitlines()
    assert newest[0].startswith("2026-11-02 09:33:00") and len(newest) == 3


def test_json_is_an_array_newest_first_with_decimal_strings_and_stored_text(db: Path) -> None:
    """--json prints a JSON array, newest first, costs as exact strings, the stored text in full."""
    result = run("--ledger", str(db), "--json", "-n", "2")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [(r["call_id"], r["outcome"], r["cost_usd"]) for r in rows] == [
        ("call-3", "ok", "3.0025"),
        ("call-2", "error", "0"),
    ]
    assert rows[0]["response_text"] == "Refunds within 30 days.\nNo questions asked."
    assert rows[1]["response_text"] is None


def test_time_zone_option_and_no_ledger_yet(tmp_path: Path) -> None:
    """--tz shows local times; a ledger that does not exist is 'nothing recorded yet' (and [] in JSON), not created."""
    path = tmp_path / "ledger.db"
    empty = run("--ledger", str(path))
    assert (empty.exit_code, empty.stdout, empty.stderr.strip()) == (0, "", "canny: nothing recorded yet")
    assert json.loads(run("--ledger", str(path), "--json").stdout) == []
    assert not path.exists()
    _write(path, _row(1))
    assert run("--ledger", str(path), "--tz", "Asia/Tokyo").stdout.startswith("2026-11-02 18:31:00")
    assert run("--ledger", str(path), "--tz", "Mars/Olympus").exit_code == 2


def _follow(db: Path, *extra: str) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "canny", "logs", "--follow", "--interval", "0.05", "--ledger", str(db), *extra]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def _readline(stream: IO[str] | None) -> str:
    assert stream is not None
    return stream.readline()


def test_follow_prints_rows_in_written_order_then_new_ones_and_ends_on_ctrl_c(db: Path) -> None:
    """--follow prints the last rows oldest first, then each new row as it lands; Ctrl-C ends it with exit 130."""
    with _follow(db, "-n", "2", "--json") as process:
        try:
            first = [json.loads(_readline(process.stdout)) for _ in range(2)]
            assert [r["call_id"] for r in first] == ["call-2", "call-3"]
            _write(db, _row(4, tags=("late",)))
            assert json.loads(_readline(process.stdout))["call_id"] == "call-4"
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130
    assert err.strip() == "canny: interrupted"
    assert CANARY_KEY not in err


def test_follow_into_a_closed_pipe_exits_141_without_a_traceback(db: Path) -> None:
    """When the reader of --follow goes away, the next row ends it with exit 141 and nothing on stderr."""
    with _follow(db) as process:
        try:
            assert _readline(process.stdout).startswith("2026-11-02 09:31:00")
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            _write(db, *(_row(n) for n in range(5, 9)))
            process.wait(timeout=60)
            err = process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 141
    assert "Traceback" not in err and "Exception ignored" not in err
