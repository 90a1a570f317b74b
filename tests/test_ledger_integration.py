"""Every attempt `canny ask` makes, failed ones included, is one ledger row that
`canny report` and `canny ledger export` show; unpriced is never stored as $0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.ledger import open_ledger
from tests.conftest import CANARY_KEY

# fault plan -> the outcomes of its attempts, in order
PLANS: dict[str, list[str]] = {
    "ok": ["ok"],
    "rate_limit;retry_after_ms=1,ok": ["error", "ok"],
    "overloaded,error_event;after=0,ok": ["error", "error", "ok"],
    "drop;after=0,ok": ["error", "ok"],
    "drop;after=2": ["interrupted"],
    "error_event;after=2": ["interrupted"],
    "stall;after=2;seconds=10": ["interrupted"],
    "refusal;category=cyber": ["refused"],
    "refusal;category=bio": ["refused"],
    "refusal_partial": ["refused"],
    "max_tokens": ["max_tokens"],
    "no_message_stop": ["ok"],
    "bad_request": ["error"],
    "bad_key": ["error"],
    "spend_limit": ["error"],
    "overloaded,overloaded,overloaded": ["error", "error", "error"],
}


@pytest.fixture
def home(clean_env: Path) -> Path:
    (clean_env / "config.toml").write_text(
        "[retry]\ninitial_delay = 0.001\nmax_attempts = 3\n[timeouts]\nidle = 0.5\n", encoding="utf-8"
    )
    return clean_env


def _rows(home: Path) -> list[Any]:
    ledger = open_ledger(home / "ledger.db")
    try:
        return list(ledger.records())
    finally:
        ledger.close()


@pytest.mark.parametrize("plan", sorted(PLANS))
def test_each_fault_leaves_one_row_per_attempt(emulator: Any, home: Path, run_id: str, plan: str) -> None:
    """The ledger holds exactly one row per HTTP attempt, with the right outcome and no key."""
    base = emulator.url_for(*plan.split(","), run=run_id)
    CliRunner().invoke(
        main, ["ask", "Explain ledgers"], env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base}
    )
    rows = _rows(home)
    assert [r.outcome for r in rows] == PLANS[plan]
    assert len(emulator.requests(run=run_id)) == len(rows)
    assert len({r.call_id for r in rows}) == 1
    assert [r.attempt for r in rows] == list(range(1, len(rows) + 1))
    for row in rows:
        assert row.cost_usd is not None  # every model here is priced: never unpriced, never missing
        if row.outcome == "error" and row.usage.input == 0:
            assert row.cost_usd == 0
    if plan.startswith("refusal;category=cyber"):
        assert rows[0].cost_usd is not None and rows[0].cost_usd > 0  # billed as its usage reports
        assert rows[0].refusal_category == "cyber"
    if plan.startswith("refusal;category=bio"):
        assert rows[0].cost_usd is not None and rows[0].cost_usd > 0  # billed category
    assert CANARY_KEY.encode() not in (home / "ledger.db").read_bytes()


def test_report_and_export_show_every_attempt(emulator: Any, home: Path, run_id: str) -> None:
    """After a retried call and a refused one, report --by outcome and export list all attempts."""
    env = {"ANTHROPIC_API_KEY": CANARY_KEY}
    for i, plan in enumerate(["overloaded,ok", "refusal;category=cyber"]):
        env["ANTHROPIC_BASE_URL"] = emulator.url_for(*plan.split(","), run=f"{run_id}-{i}")
        CliRunner().invoke(main, ["ask", "hi"], env=env)
    report = json.loads(CliRunner().invoke(main, ["report", "--by", "outcome", "--json"]).stdout)
    by_outcome = {item["group"]: item for item in report if item["kind"] == "group"}
    assert {k: v["attempts"] for k, v in by_outcome.items()} == {"error": 1, "ok": 1, "refused": 1}
    total = next(item for item in report if item["kind"] != "group")
    assert (total["calls"], total["attempts"]) == (2, 3)
    export = CliRunner().invoke(main, ["ledger", "export", "--format", "jsonl"]).stdout.splitlines()
    assert sorted(json.loads(line)["outcome"] for line in export) == ["error", "ok", "refused"]


def test_unknown_model_is_stored_unpriced_not_zero(clean_env: Path, recorded_unknown: str) -> None:
    """A model with no price is stored with a NULL cost and shown as unpriced, never $0."""
    result = CliRunner().invoke(
        main, ["ask", "hi"], env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": recorded_unknown}
    )
    assert result.exit_code == 0, result.stderr
    assert "$ unpriced" in result.stderr
    assert "canny: warning:" in result.stderr
    (row,) = _rows(clean_env)
    assert row.cost_usd is None
    assert row.model == "claude-future-9"
    report = json.loads(CliRunner().invoke(main, ["report", "--by", "model", "--json"]).stdout)
    future = next(item for item in report if item.get("group") == "claude-future-9")
    assert future["unpriced"] == 1


@pytest.fixture
def recorded_unknown() -> Any:
    """A server that answers with a model canny has no price for."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = (
        (Path(__file__).parent / "fixtures" / "basic_padded.sse")
        .read_bytes()
        .replace(b"claude-opus-4-8", b"claude-future-9")
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length", "0")))
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_opening_a_second_ledger_on_a_file_keeps_the_locks_of_the_first(tmp_path: Path) -> None:
    """While a ledger is open, another process closing its connection is never the "last"
    one (which would checkpoint and delete the WAL under the open ledger's readers), even
    after this process opened a second ledger object on the same file: closing any
    descriptor of a file drops every POSIX lock the process holds on it."""
    import subprocess
    import sys

    path = tmp_path / "ledger.db"
    first: Any = open_ledger(path)
    probe = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)\n"
        "conn.execute('CREATE TABLE IF NOT EXISTS probe (x)')\n"
        "conn.close()\n"
    )
    try:
        list(first.records())  # a pooled connection, in WAL mode, holding its shared lock
        open_ledger(path).close()  # a second ledger object on the same file, in this process
        subprocess.run([sys.executable, "-c", probe, str(path)], check=True, timeout=60)
        assert Path(f"{path}-wal").exists()  # the other process knew it was not the last
    finally:
        first.close()
