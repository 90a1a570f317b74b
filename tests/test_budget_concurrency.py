"""The overspend invariant under real concurrency (OS processes started with ``spawn``,
threads in each, one ledger), and leases after a real ``kill -9``.

Each child runs its own emulator and makes real calls through ``canny.Client``. The
benchmark (``benchmarks/bench_budget.py``) runs the large version: 8 processes × 200 calls.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from canny import budget
from canny.ledger import Ledger, open_ledger
from tests.conftest import CANARY_KEY
from tests.test_ledger_contract import fresh_target

MODEL = "claude-sonnet-5-5"
PG_DSN = os.environ.get("CANNY_TEST_POSTGRES_DSN", "")
pytestmark = pytest.mark.slow


def run_calls(target: str, calls: int, threads: int, project: str | None, out: Any) -> None:
    """Child process: ``threads`` threads share ``calls`` calls on their own clients; put
    ``(ok, refused, failed)`` on ``out``."""
    import warnings

    from canny import errors
    from canny.client import Client
    from canny.emulator import serve_in_thread
    from canny.errors import CannyWarning
    from canny.retry import RetryPolicy

    warnings.simplefilter("ignore", CannyWarning)  # lowered max_tokens is expected near the limit
    counts = {"ok": 0, "refused": 0, "failed": 0}
    lock = threading.Lock()

    def worker(index: int, emu: Any) -> None:
        client = Client(
            api_key=CANARY_KEY, base_url=emu.url_for(), ledger=target, model=MODEL, max_tokens=200, project=project,
            retry=RetryPolicy(sleep=lambda _: None, rng=lambda: 0.0),
        )  # fmt: skip
        try:
            for n in range(index, calls, threads):
                try:
                    client.create(f"Question {n} from process {os.getpid()}: tell me about budgets.")
                    outcome = "ok"
                except errors.BudgetExceeded:
                    outcome = "refused"
                except errors.CannyError:
                    outcome = "failed"
                with lock:
                    counts[outcome] += 1
        finally:
            client.close()

    with serve_in_thread() as emu:
        pool = [threading.Thread(target=worker, args=(i, emu)) for i in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    out.put((counts["ok"], counts["refused"], counts["failed"]))


def hold_and_hang(target: str, plan: list[str], ready: Any) -> None:
    """Child process: start a call that fails once after message_start (billed), then stalls
    on its retry while holding its reservation; it is killed there."""
    from canny.client import Client
    from canny.config import load_settings
    from canny.emulator import serve_in_thread
    from canny.retry import RetryPolicy

    with serve_in_thread() as emu:
        ready.put("up")
        settings = load_settings(base_url=emu.url_for(*plan), model=MODEL, max_tokens=200, budgets={"lease": 30})
        retry = RetryPolicy(sleep=lambda _: None, rng=lambda: 0.0)
        client = Client(api_key=CANARY_KEY, ledger=target, settings=settings, retry=retry)
        client.stream("A question that will never be answered.").final()


def _targets() -> list[Any]:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_DSN, reason="CANNY_TEST_POSTGRES_DSN is not set")],
        ),
    ]


@pytest.fixture(params=_targets())
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where a fresh ledger lives: a new SQLite file, or a new PostgreSQL schema."""
    with fresh_target(request.param, tmp_path / "ledger.db") as where:
        yield where


def _charged(ledger: Ledger) -> tuple[Decimal, int, int]:
    """(sum of every attempt's cost, budget_refused rows, rows with no cost)."""
    rows = list(ledger.records())
    total = sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
    return total, sum(r.outcome == "budget_refused" for r in rows), sum(r.cost_usd is None for r in rows)


def _counters(ledger: Any) -> list[tuple[int, int]]:
    with ledger.transaction(write=False) as tx:
        return [(int(s), int(r)) for s, r in tx.execute("SELECT spent_pico, reserved_pico FROM budget_counters")]


def test_processes_and_threads_never_overspend(target: str) -> None:
    """4 processes × 2 threads × 25 calls on a half-affordable day budget: never over the limit."""
    processes, threads, calls = 4, 2, 25
    limit = Decimal("0.03")
    ledger = open_ledger(target)
    try:
        budget.set_budget(ledger, period="day", limit=limit, scope=budget.Scope(project="race"))
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        children = [ctx.Process(target=run_calls, args=(target, calls, threads, "race", out)) for _ in range(processes)]
        for child in children:
            child.start()
        results = [out.get(timeout=90) for _ in children]
        for child in children:
            child.join(timeout=30)
            assert child.exitcode == 0
        ok = sum(r[0] for r in results)
        refused = sum(r[1] for r in results)
        assert sum(r[2] for r in results) == 0
        assert ok + refused == processes * calls
        assert min(ok, refused) > 10, (ok, refused)  # the budget really was contended
        total, refused_rows, unpriced = _charged(ledger)
        assert total <= limit
        assert (refused_rows, unpriced) == (refused, 0)
        [(spent, reserved)] = _counters(ledger)
        assert (spent, reserved) == (int(total.scaleb(12)), 0)
        assert budget.reservations_in_flight(ledger) == (0, 0, None)
    finally:
        ledger.close()


def test_a_killed_process_pins_the_budget_only_until_its_lease_ends(target: str) -> None:
    """kill -9 mid-call: the hold lasts only until its lease ends, then only billed rows count."""
    ledger = open_ledger(target)
    try:
        budget.set_budget(ledger, period="day", limit="0.01")
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        child = ctx.Process(
            target=hold_and_hang, args=(target, ["error_event;after=0", "stall_headers;seconds=60"], ready)
        )
        child.start()
        try:
            assert ready.get(timeout=60) == "up"
            deadline = time.monotonic() + 30
            while not (list(ledger.records()) and budget.reservations_in_flight(ledger)[0] == 1):
                assert time.monotonic() < deadline, "the child never got its first attempt recorded"
                time.sleep(0.05)
        finally:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        (billed,) = [r.cost_usd for r in ledger.records()]
        assert billed is not None
        assert billed > 0
        now = datetime.now(UTC)
        (pinned,) = budget.budget_status(ledger, now=now)
        assert pinned.reserved > 0
        assert pinned.spent == 0
        later = now + timedelta(seconds=31)
        (freed,) = budget.budget_status(ledger, now=later)
        assert (freed.spent, freed.reserved) == (billed, Decimal(0))
        assert budget.reservations_in_flight(ledger)[:2] == (0, 1)  # a tombstone, for a late settle
        with cast(Any, ledger).transaction(write=False) as tx:
            assert tx.execute("SELECT state FROM budget_reservations") == [("expired",)]
    finally:
        ledger.close()
