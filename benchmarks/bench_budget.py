"""Budgets under load: many processes, one ledger, one daily budget.

    python benchmarks/bench_budget.py                 # 8 processes × 200 calls, SQLite
    python benchmarks/bench_budget.py --quick         # 4 × 50
    python benchmarks/bench_budget.py --ledger postgresql://user@127.0.0.1/db

Measures (DESIGN §4, budget line):

1. the invariant, end to end: N processes (``spawn``), each with its own emulator, make
   real calls through ``canny.Client`` against one daily budget sized to afford about half
   of them. Checked: total charged ≤ limit, every refused call is a ``budget_refused``
   row, no reservation left behind, the budget's counter equals the ledger's sum;
2. reserve + reconcile throughput: N processes each run ``BudgetGuard.reserve`` then
   ``settle`` in a loop (no HTTP), started together; pairs per second over all of them
   (target ≥ 500/s across 8 processes on SQLite);
3. the per-call cost of ``guard_for`` when no budget is set (the path every call takes).

Numbers are printed; nothing here is a test (tests/test_budget_concurrency.py is the
small version of 1).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

KEY = "sk-ant-api03-CANARY-benchmark-key-0000000000"
MODEL = "claude-sonnet-5-5"
MAX_TOKENS = 200


def _prompt(n: int) -> str:
    return f"Question {n} from process {os.getpid()}: what does a budget reservation hold?"


def calls_worker(target: str, calls: int, out: Any) -> None:
    """Make ``calls`` calls; put (ok, refused, clamped, failed, seconds) on ``out``."""
    from canny import errors
    from canny.client import Client
    from canny.emulator import serve_in_thread
    from canny.retry import RetryPolicy

    counts = [0, 0, 0, 0]
    with serve_in_thread() as emu:
        client = Client(
            api_key=KEY, base_url=emu.url_for(), ledger=target, model=MODEL, max_tokens=MAX_TOKENS,
            retry=RetryPolicy(sleep=lambda _: None, rng=lambda: 0.0),
        )  # fmt: skip
        started = time.perf_counter()
        for n in range(calls):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                try:
                    client.create(_prompt(n))
                    counts[0] += 1
                except errors.BudgetExceeded:
                    counts[1] += 1
                except errors.CannyError:
                    counts[3] += 1
            counts[2] += any("max_tokens lowered" in str(w.message) for w in seen)
        elapsed = time.perf_counter() - started
        client.close()
    out.put((*counts, elapsed))


def pairs_worker(target: str, pairs: int, go: Any, out: Any) -> None:
    """Reserve then settle ``pairs`` times once ``go`` is set; put (start, end) wall times."""
    from canny import budget
    from canny._call import CallSpec
    from canny.ledger import open_ledger

    ledger = open_ledger(target)
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": _prompt(0)}]}
    specs = [CallSpec(model=MODEL, params=dict(body), stream=True, project="pairs") for _ in range(pairs)]
    go.wait()
    start = time.time()
    for spec in specs:
        guard.reserve(spec).settle(Decimal("0.0001"))
    out.put((start, time.time()))
    ledger.close()


@contextmanager
def _fresh(url: str | None, workdir: Path, name: str) -> Iterator[str]:
    """An empty ledger: a new SQLite file, or a new schema in the PostgreSQL database."""
    if url is None:
        yield str(workdir / f"{name}.db")
        return
    import psycopg

    schema = f"bench_{name}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield url + ("&" if "?" in url else "?") + f"options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _mean_call_cost(workdir: Path) -> Decimal:
    """The average cost of a call like the workers', from a few calls without a budget."""
    from canny.client import Client
    from canny.emulator import serve_in_thread

    with serve_in_thread() as emu, Client(api_key=KEY, base_url=emu.url_for(), ledger=False, model=MODEL) as client:
        costs = [client.create(_prompt(n), max_tokens=MAX_TOKENS).cost or Decimal(0) for n in range(40)]
    return sum(costs, Decimal(0)) / len(costs)


def bench_invariant(target: str, processes: int, calls: int, workdir: Path) -> bool:
    from canny import budget
    from canny.ledger import open_ledger

    total_calls = processes * calls
    limit = (_mean_call_cost(workdir) * total_calls / 2).quantize(Decimal("0.0001"))
    ledger: Any = open_ledger(target)
    budget.set_budget(ledger, period="day", limit=limit)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    children = [ctx.Process(target=calls_worker, args=(target, calls, out)) for _ in range(processes)]
    started = time.perf_counter()
    for child in children:
        child.start()
    results = [out.get(timeout=600) for _ in children]
    wall = time.perf_counter() - started
    for child in children:
        child.join()
    ok, refused, clamped, failed = (sum(r[i] for r in results) for i in range(4))
    rows = list(ledger.records())
    charged = sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
    refused_rows = sum(r.outcome == "budget_refused" for r in rows)
    held, _expired, _next = budget.reservations_in_flight(ledger)
    with ledger.transaction(write=False) as tx:
        counters = tx.execute("SELECT spent_pico, reserved_pico FROM budget_counters")
    ledger.close()
    spent_pico = sum(int(c[0]) for c in counters)
    reserved_pico = sum(int(c[1]) for c in counters)
    checks = {
        "total charged <= limit": charged <= limit,
        "every refusal is a budget_refused row": refused_rows == refused,
        "no reservation left behind": held == 0 and reserved_pico == 0,
        "counter == ledger sum": spent_pico == int(charged.scaleb(12)),
        "no call failed": failed == 0,
    }
    print(f"\n== invariant: {processes} processes × {calls} calls, one daily budget")
    print(f"limit ${limit} (about half of {total_calls} calls at the measured mean cost)")
    print(f"ok {ok} (max_tokens lowered on {clamped}) · refused {refused} · failed {failed} · {wall:.1f} s wall")
    print(f"charged ${charged} = {charged / limit * 100:.2f}% of the limit · headroom ${limit - charged}")
    print(f"calls/s over all processes: {total_calls / wall:,.0f} (each call: HTTP to an emulator + 3 transactions)")
    for name, passed in checks.items():
        print(f"  [{'ok' if passed else 'FAIL'}] {name}")
    return all(checks.values())


def bench_pairs(target: str, processes: int, pairs: int) -> float:
    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger(target)
    budget.set_budget(ledger, period="day", limit="1000000", project="pairs")
    ledger.close()
    ctx = multiprocessing.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    children = [ctx.Process(target=pairs_worker, args=(target, pairs, go, out)) for _ in range(processes)]
    for child in children:
        child.start()
    time.sleep(3.0)  # let every child import and open its ledger
    go.set()
    spans: list[tuple[float, float]] = [out.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    rate = processes * pairs / seconds
    print(f"\n== reserve + reconcile: {processes} processes × {pairs} pairs (no HTTP)")
    print(f"{processes * pairs} pairs in {seconds:.2f} s: {rate:,.0f} pairs/s (target >= 500/s)")
    return rate


def bench_no_budget(target: str) -> float:
    from canny import budget
    from canny.config import load_settings
    from canny.ledger import open_ledger

    ledger = open_ledger(target)
    settings = load_settings()
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(2000):
            assert budget.guard_for(ledger, settings) is None
        samples.append((time.perf_counter() - started) / 2000 * 1e6)
    ledger.close()
    micros = float(statistics.median(samples))
    print("\n== guard_for with no budget (every call pays this)")
    print(f"{micros:.1f} µs per call (one read of the budget_limits table)")
    return micros


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200, help="calls per process in the invariant run")
    parser.add_argument("--pairs", type=int, default=500, help="reserve+settle pairs per process")
    parser.add_argument(
        "--ledger", help="a postgresql:// URL; each part runs in a new schema (default: SQLite files in a temp dir)"
    )
    parser.add_argument("--quick", action="store_true", help="4 processes × 50 calls, 200 pairs")
    args = parser.parse_args()
    if args.quick:
        args.processes, args.calls, args.pairs = 4, 50, 200
    os.environ.setdefault("CANNY_HOME", tempfile.mkdtemp(prefix="canny-bench-home-"))
    with tempfile.TemporaryDirectory(prefix="canny-bench-budget-") as tmp:
        workdir = Path(tmp)
        where = "SQLite (temp)"
        if args.ledger:
            from canny.ledger.postgres import mask_url

            where = mask_url(args.ledger)
        print(f"Python {sys.version.split()[0]} · {os.cpu_count()} CPUs · ledger {where}")
        with _fresh(args.ledger, workdir, "invariant") as target:
            passed = bench_invariant(target, args.processes, args.calls, workdir)
        with _fresh(args.ledger, workdir, "pairs") as target:
            rate = bench_pairs(target, args.processes, args.pairs)
        with _fresh(args.ledger, workdir, "empty") as target:
            bench_no_budget(target)
    if not passed or (args.ledger is None and rate < 500):  # the throughput target is for SQLite
        sys.exit(1)


if __name__ == "__main__":
    main()
