"""Budget alerts: each threshold fires exactly once per period, across processes, after
the spend that crossed it was committed; the command gets the figures on stdin, the URL a
JSON POST; failures are warnings that never fail the call."""

from __future__ import annotations

import json
import multiprocessing
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny import budget, errors
from canny.budget import alerts
from canny.cli import main
from canny.ledger import open_ledger
from tests import test_budget_concurrency
from tests.conftest import CANARY_KEY

#: A fresh SQLite file or PostgreSQL schema per test (the concurrency tests' fixture).
target = test_budget_concurrency.target

APPEND = """\
import json, sys
figures = json.load(sys.stdin)
with open(sys.argv[1], "a", encoding="utf-8") as out:
    out.write(json.dumps(figures) + "\\n")
"""


@dataclass(frozen=True)
class Spec:
    """A call whose worst case and actual cost are both ``cost``."""

    call_id: str
    cost: Decimal
    model: str = "claude-sonnet-5-5"
    max_tokens: int = 100
    project: str | None = None
    tags: tuple[str, ...] = ()
    key_fingerprint: str | None = None

    def worst_case(self, max_tokens: int | None = None) -> Decimal:
        return self.cost


def spend(target: str, worker: int, calls: int, cost: str, out: Any) -> None:
    """Child process: ``calls`` reserve-and-settle cycles of ``cost`` each; put (settled, refused)."""
    ledger = open_ledger(target)
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    settled = refused = 0
    for n in range(calls):
        try:
            hold = guard.reserve(Spec(f"w{worker}-{n}", Decimal(cost)))
        except errors.BudgetExceeded:
            refused += 1
            continue
        hold.settle(Decimal(cost))
        settled += 1
    ledger.close()
    out.put((settled, refused))


class Receiver:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies, lock = self.bodies, threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                data = self.rfile.read(int(self.headers["content-length"]))
                with lock:
                    bodies.append(json.loads(data))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/budget"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def _command(tmp_path: Path) -> tuple[str, Path]:
    script = tmp_path / "append.py"
    script.write_text(APPEND, encoding="utf-8")
    out = tmp_path / "alerts.jsonl"
    return f"{sys.executable} {script} {out}", out


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


@pytest.mark.slow
def test_eight_processes_fire_each_threshold_exactly_once(target: str, tmp_path: Path, receiver: Receiver) -> None:
    """8 processes settle 120 calls of $0.001 on a $0.10 day budget: 50, 80 and 100% fire once each, both ways."""
    command, out = _command(tmp_path)
    ledger = open_ledger(target)
    try:
        budget.set_budget(
            ledger, period="day", limit="0.10", alert_at="50,80,100", alert_command=command, alert_url=receiver.url
        )
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        children = [ctx.Process(target=spend, args=(target, i, 15, "0.001", queue)) for i in range(8)]
        for child in children:
            child.start()
        results = [queue.get(timeout=120) for _ in children]
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        assert (sum(r[0] for r in results), sum(r[1] for r in results)) == (100, 20)
        run = _lines(out)
        assert sorted(line["threshold_percent"] for line in run) == ["100", "50", "80"]
        assert sorted(body["threshold_percent"] for body in receiver.bodies) == ["100", "50", "80"]
        for figures in run:
            threshold = Decimal(figures["threshold_percent"])
            spent = Decimal(figures["spent_usd"])
            assert figures["limit_usd"] == "0.1"
            assert threshold / 1000 <= spent <= Decimal("0.1")  # at or past it, never past the limit
            if target == "sqlite":  # each settle writes its own spend: fired within one call of it
                assert spent < threshold / 1000 + Decimal("0.001")
            # PostgreSQL: a process whose counter is hot settles into a slice, whose spend is
            # written back (and checked) several calls at a time, at least once a second.
        (stored,) = budget.stored_budgets(ledger)
        rule, fired = budget.budget_alerts(ledger, stored)
        assert rule is not None
        assert rule.thresholds == (Decimal(50), Decimal(80), Decimal(100))
        stored_figures = {f.threshold: f.spent for f in fired}
        assert sorted(stored_figures) == [Decimal(50), Decimal(80), Decimal(100)]
        assert stored_figures == {Decimal(f["threshold_percent"]): Decimal(f["spent_usd"]) for f in run}
        if target == "sqlite":
            assert list(stored_figures.values()) == [Decimal("0.05"), Decimal("0.08"), Decimal("0.1")]
    finally:
        ledger.close()


def test_an_alert_from_a_real_call_carries_its_figures(tmp_path: Path, emulator: Any, run_id: str) -> None:
    """One call through canny.Client crossing 1% of a $1 budget runs the command once with the call's cost as spent."""
    from canny.client import Client

    command, out = _command(tmp_path)
    target = str(tmp_path / "ledger.db")
    ledger = open_ledger(target)
    budget.set_budget(ledger, period="day", limit="1", alert_at=[Decimal("0.0001"), 1], alert_command=command)
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for(run=run_id), ledger=target, max_tokens=50) as client:
        client.create("Say something about budgets.")
    (row,) = list(ledger.records())
    assert row.cost_usd is not None
    ((figures),) = _lines(out)
    assert figures["threshold_percent"] == "0.0001"
    assert figures["period"] == "day"
    assert Decimal(figures["spent_usd"]) == row.cost_usd
    assert figures["spent_percent"] == str((row.cost_usd * 100).quantize(Decimal("0.01")))
    assert CANARY_KEY not in out.read_text(encoding="utf-8")
    ledger.close()


def test_a_failing_destination_warns_once_and_never_fails_the_call(tmp_path: Path) -> None:
    """A command that exits 3 and a URL nobody answers: one warning each, the settles all succeed."""
    alerts._warned.clear()
    ledger = open_ledger(tmp_path / "ledger.db")
    budget.set_budget(
        ledger, period="day", limit="1", alert_at="10,20,30",
        alert_command=f"{sys.executable} -c 'raise SystemExit(3)'", alert_url="http://127.0.0.1:9/nobody",
    )  # fmt: skip
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in range(4):
            guard.reserve(Spec(f"c{n}", Decimal("0.1"))).settle(Decimal("0.1"))
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2, messages
    assert "exit code 3" in messages[0]
    assert "http://127.0.0.1:9/nobody" in messages[1]
    (status,) = budget.budget_status(ledger)
    assert status.spent == Decimal("0.4")
    _rule, fired = budget.budget_alerts(ledger, budget.stored_budgets(ledger)[0])
    assert [f.threshold for f in fired] == [10, 20, 30]
    ledger.close()


def test_thresholds_are_validated() -> None:
    """Thresholds parse as distinct ascending percentages; nonsense is a ConfigError."""
    assert alerts.parse_thresholds("100, 50,80%,50") == (Decimal(50), Decimal(80), Decimal(100))
    for bad in ("0", "-5", "abc", "1001", "nan"):
        with pytest.raises(errors.ConfigError):
            alerts.parse_thresholds(bad)


def test_cli_sets_alerts_and_show_marks_the_fired_ones(tmp_path: Path, receiver: Receiver) -> None:
    """`budget set --alert-at --alert-url` stores the rule; after spend, `show` ticks the fired threshold."""
    runner = CliRunner()
    set_ = runner.invoke(
        main, ["budget", "set", "--day", "2", "--alert-at", "50,100", "--alert-url", receiver.url, "--project", "p"]
    )
    assert set_.exit_code == 0, set_.stderr
    from canny.config import default_ledger

    ledger = open_ledger(default_ledger())
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    guard.reserve(Spec("one", Decimal("1.5"), project="p")).settle(Decimal("1.5"))
    ledger.close()
    assert [b["threshold_percent"] for b in receiver.bodies] == ["50"]
    assert receiver.bodies[0]["project"] == "p"
    shown = runner.invoke(main, ["budget", "show", "--json"])
    assert shown.exit_code == 0, shown.stderr
    (row,) = json.loads(shown.stdout)["budgets"]
    assert row["alerts"]["thresholds"] == ["50", "100"]
    assert [f["threshold"] for f in row["alerts"]["fired"]] == ["50"]
    assert row["alerts"]["fired"][0]["spent"] == "1.5"
    table = runner.invoke(main, ["budget", "show"])
    assert "50%✓ 100%" in table.stdout
    usage = runner.invoke(main, ["budget", "set", "--day", "2", "--alert-url", receiver.url])
    assert usage.exit_code == 2
    assert "--alert-at" in usage.stderr
    cleared = runner.invoke(main, ["budget", "set", "--day", "2", "--project", "p", "--no-alerts"])
    assert cleared.exit_code == 0, cleared.stderr
    (row,) = json.loads(runner.invoke(main, ["budget", "show", "--json"]).stdout)["budgets"]
    assert row["alerts"]["thresholds"] == []  # the fired history stays
    assert [f["threshold"] for f in row["alerts"]["fired"]] == ["50"]
