"""Budgets at scale on SQLite and PostgreSQL: many clients across processes, slices of
headroom leased to processes, and what comes back on close and after a crash.

The zero-overspend test runs 64 clients (8 processes × 8 threads, each with its own
ledger object) reserving and settling straight through ``BudgetGuard`` (no HTTP), with
slices turned on early; ``benchmarks/bench_budget.py`` measures the same loop's throughput.
A SQLite ledger uses slices when it writes behind the call (a client's or meter's ledger),
so the SQLite ledgers here are opened that way (:func:`_open`).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from canny import budget
from canny._call import CallSpec
from canny.budget import slices
from canny.ledger import Ledger, open_for_calls, open_ledger
from canny.ledger.records import AttemptRecord
from canny.units import usd_to_pico
from canny.usage import Usage
from tests.test_ledger_contract import fresh_target

MODEL = "claude-sonnet-5-5"
PG_DSN = os.environ.get("CANNY_TEST_POSTGRES_DSN", "")


def _spec(n: int, max_tokens: int = 200) -> CallSpec:
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"question {n}"}]}
    return CallSpec(model=MODEL, params=body, stream=True)


def _open(target: str) -> Ledger:
    """The ledger as a client opens it: on SQLite, writing behind the call (slices on)."""
    return open_ledger(target) if "://" in target else open_for_calls(target)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgres",
            id="postgres",
            marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_DSN, reason="CANNY_TEST_POSTGRES_DSN is not set")],
        ),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh SQLite file, or a fresh PostgreSQL schema, to hold the ledger."""
    with fresh_target(request.param, tmp_path / "ledger.db") as where:
        yield where


def _books(target: str) -> tuple[list[tuple[int, int]], int, int]:
    """(spent, reserved) of every counter, held reservations, slice rows."""
    ledger: Any = open_ledger(target)
    try:
        with ledger.transaction(write=False) as tx:
            counters = [
                (int(s), int(r)) for s, r in tx.execute("SELECT spent_pico, reserved_pico FROM budget_counters")
            ]
            held = int(tx.execute("SELECT count(*) FROM budget_reservations WHERE state = 'held'")[0][0])
            sliced = int(tx.execute("SELECT count(*) FROM budget_slices")[0][0])
    finally:
        ledger.close()
    return counters, held, sliced


def clients(target: str, threads: int, pairs: int, seed: int, out: Any) -> None:
    """Child process: ``threads`` clients, each on its own ledger, reserve and end ``pairs``
    calls (settled at 30-100% of what was held, or released); put the totals on ``out``."""
    from canny import errors

    slices.HOT_CALLS = 4
    totals: dict[str, Any] = {"charged": Decimal(0), "ok": 0, "refused": 0, "sliced": 0, "released": 0, "failed": 0}
    lock = threading.Lock()

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        ledger = _open(target)
        try:
            guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
            for n in range(pairs):
                try:
                    held: Any = guard.reserve(_spec(n))
                except errors.BudgetExceeded:
                    with lock:
                        totals["refused"] += 1
                    continue
                except errors.LedgerError:
                    with lock:
                        totals["failed"] += 1
                    continue
                sliced = isinstance(held, slices.SliceReservation)
                if n % 9 == 4:
                    held.release()
                    with lock:
                        totals["released"] += 1
                        totals["sliced"] += sliced
                    continue
                cost = (held.amount * rng.randint(30, 100) / 100).quantize(Decimal("1e-12"), rounding="ROUND_DOWN")
                held.settle(cost)
                with lock:
                    totals["charged"] += cost
                    totals["ok"] += 1
                    totals["sliced"] += sliced
        finally:
            ledger.close()

    pool = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    out.put(totals)


def test_64_clients_across_processes_with_slices_never_overspend(target: str) -> None:
    """8 processes × 8 clients on a half-affordable budget, slices on: spent ≤ limit, all ended."""
    processes, threads, pairs = 8, 8, 40
    worst = _spec(0).worst_case()
    assert worst is not None
    limit = (worst * processes * threads * pairs * Decimal("0.65") / 2).quantize(Decimal("0.0001"))
    ledger = open_ledger(target)
    budget.set_budget(ledger, period="day", limit=limit)
    ledger.close()
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    children = [ctx.Process(target=clients, args=(target, threads, pairs, i, out)) for i in range(processes)]
    for child in children:
        child.start()
    results = [out.get(timeout=300) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    total: dict[str, Any] = {k: sum((r[k] for r in results), Decimal(0) if k == "charged" else 0) for k in results[0]}
    assert total["failed"] == 0
    assert total["ok"] + total["refused"] + total["released"] == processes * threads * pairs
    assert total["refused"] > 0  # the budget ran out: the last dollars went through the direct path
    assert total["sliced"] > 0  # and before that, slices carried calls
    assert total["charged"] <= limit
    counters, held, sliced = _books(target)
    assert counters == [(usd_to_pico(total["charged"]), 0)]  # every cost counted, nothing left reserved
    assert (held, sliced) == (0, 0)  # every reservation settled or returned, every slice given back


def test_a_slice_gives_back_what_it_did_not_spend_when_the_ledger_closes(
    target: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settled costs reach the counter and the unspent slice is freed on close."""
    monkeypatch.setattr(slices, "HOT_CALLS", 1)
    monkeypatch.setattr(slices, "FLUSH_SECONDS", 3600.0)
    ledger = _open(target)
    budget.set_budget(ledger, period="day", limit="10")
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    held: list[Any] = [guard.reserve(_spec(n)) for n in range(5)]
    assert all(isinstance(h, slices.SliceReservation) for h in held)
    worst = _spec(0).worst_case()
    assert worst is not None
    [(spent, reserved)], _, sliced = _books(target)
    assert (spent, sliced) == (0, 1)
    assert reserved == min(usd_to_pico(Decimal(10)) // slices.SHARE, slices.CAP_CALLS * usd_to_pico(worst))
    assert reserved > 5 * usd_to_pico(worst)  # one slice holds all five calls
    held[0].settle(Decimal("0.001"))
    held[1].settle(Decimal("0.002"))
    held[2].settle(Decimal("0.0005"))
    held[3].release()
    held[4].settle(None)  # unpriced: charged its worst case
    ledger.close()
    [(spent, reserved)], reservations, sliced = _books(target)
    assert spent == usd_to_pico(Decimal("0.0035") + worst)
    assert (reserved, reservations, sliced) == (0, 0, 0)


def _attempt(call_id: str, cost: str) -> AttemptRecord:
    now = datetime.now(UTC)
    return AttemptRecord(call_id=call_id, attempt=1, started_at=now, ended_at=now, model=MODEL, outcome="ok",
                         usage=Usage(output=10), cost_usd=Decimal(cost))  # fmt: skip


def hold_slice_and_hang(target: str, ready: Any) -> None:
    """Child process: take a slice, finish two calls (rows written, one settled in memory),
    start a third, then hang holding it all until killed."""
    import time

    slices.HOT_CALLS = 1
    slices.FLUSH_SECONDS = 3600.0
    ledger: Any = _open(target)
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), lease=30)
    first, second, _third = (guard.reserve(_spec(n)) for n in range(3))
    ledger.record(_attempt("call-1", "0.004"))
    first.settle(Decimal("0.004"))
    ledger.record(_attempt("call-2", "0.002"))  # killed before its settle
    ledger.flush()  # both rows are in the ledger (a SQLite ledger writes them behind the call)
    ready.put(type(second).__name__)
    time.sleep(600)


def test_a_crashed_holders_slice_comes_back_after_its_lease(target: str) -> None:
    """kill -9 while holding a slice: pinned until the lease ends, then only the ledger's rows count."""
    ledger = open_ledger(target)
    try:
        budget.set_budget(ledger, period="day", limit="10")
        ctx = multiprocessing.get_context("spawn")
        ready = ctx.Queue()
        child = ctx.Process(target=hold_slice_and_hang, args=(target, ready))
        child.start()
        try:
            assert ready.get(timeout=60) == "SliceReservation"
        finally:
            os.kill(child.pid or 0, signal.SIGKILL)
            child.join(timeout=30)
        assert child.exitcode == -signal.SIGKILL
        now = datetime.now(UTC)
        (pinned,) = budget.budget_status(ledger, now=now)
        assert pinned.spent == 0  # nothing was written to the counter before the crash
        worst = _spec(0).worst_case()
        assert worst is not None
        share = min(usd_to_pico(Decimal(10)) // slices.SHARE, slices.CAP_CALLS * usd_to_pico(worst))
        assert usd_to_pico(pinned.reserved) == share
        (freed,) = budget.budget_status(ledger, now=now + timedelta(seconds=31))
        assert (freed.spent, freed.reserved) == (Decimal("0.006"), Decimal(0))
        assert _books(target)[1:] == (0, 0)
    finally:
        ledger.close()


def test_near_the_limit_no_slice_is_granted_and_calls_go_direct(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When 1/SHARE of the headroom is less than a worst case, the call holds its own reservation."""
    monkeypatch.setattr(slices, "HOT_CALLS", 1)
    worst = _spec(0).worst_case()
    assert worst is not None
    ledger = _open(target)
    try:
        budget.set_budget(ledger, period="day", limit=worst * 3)
        guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
        held = guard.reserve(_spec(0))
        assert isinstance(held, budget.LedgerReservation)
        assert held.amount == worst
        [(spent, reserved)], reservations, sliced = _books(target)
        assert (spent, reserved, reservations, sliced) == (0, usd_to_pico(worst), 1, 0)
        held.settle(Decimal("0.001"))
        assert _books(target) == ([(usd_to_pico(Decimal("0.001")), 0)], 0, 0)
    finally:
        ledger.close()


def test_a_slice_ended_by_a_reset_is_not_used_again(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """After `budget reset --reservations` ends a live slice, the next call takes a new one; costs all count."""
    monkeypatch.setattr(slices, "HOT_CALLS", 1)
    monkeypatch.setattr(slices, "FLUSH_SECONDS", 0.0)
    ledger = _open(target)
    budget.set_budget(ledger, period="day", limit="10")
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    first: Any = guard.reserve(_spec(0))
    assert isinstance(first, slices.SliceReservation)
    budget.clear_in_flight(ledger)  # ends the slice as if its lease had run out
    assert _books(target) == ([(0, 0)], 0, 0)
    second: Any = guard.reserve(_spec(1))
    assert isinstance(second, slices.SliceReservation)
    assert second.generation == first.generation + 1  # a new slice, not the dead one's memory
    first.settle(Decimal("0.001"))  # in flight across the reset: its cost still counts
    second.settle(Decimal("0.002"))
    ledger.close()
    assert _books(target) == ([(usd_to_pico(Decimal("0.003")), 0)], 0, 0)
