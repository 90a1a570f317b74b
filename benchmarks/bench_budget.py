"""Budgets under load: many processes, one ledger, one daily budget.

    python benchmarks/bench_budget.py                 # 8 processes × 200 calls, SQLite; then PostgreSQL
    python benchmarks/bench_budget.py --quick         # 4 × 50
    python benchmarks/bench_budget.py --ledger postgresql://user@127.0.0.1/db
    python benchmarks/bench_budget.py --no-postgres   # SQLite only

Measures (DESIGN §4, budget line):

1. the invariant, end to end: N processes (``spawn``), each with its own emulator, make
   real calls through ``canny.Client`` against one daily budget sized to afford about half
   of them. Checked: total charged ≤ limit, every refused call is a ``budget_refused``
   row, no reservation left behind, the budget's counter equals the ledger's sum;
2. reserve + reconcile throughput: N processes each run ``BudgetGuard.reserve`` then
   ``settle`` in a loop (no HTTP), started together; pairs per second over all of them
   (target ≥ 500/s across 8 processes on SQLite);
3. the per-call cost of ``guard_for`` when no budget is set (the path every call takes);
4. PostgreSQL reserve + settle pairs per second at 1, 8, 32 and 64 client processes, against
   a throwaway server started with ``fsync=on`` and ``synchronous_commit=on``
   (``scripts/pg-test-server.sh start --durable``), with slices (the default) and, at 8
   processes, without them (every pair two round trips on the counter row); the 8-process
   figure, median of three runs, goes to the targets table (target >= 5,000 pairs/s).
   Skipped when no PostgreSQL can be started (``--no-postgres`` skips it too).

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


def pairs_worker(target: str, pairs: int, sliced: bool, ready: Any, go: Any, out: Any) -> None:
    """Reserve then settle ``pairs`` times once ``go`` is set (``sliced``: slices allowed, on
    PostgreSQL); put (start, end) wall times. Closing the ledger gives slices back."""
    from canny import budget
    from canny._call import CallSpec
    from canny.budget import slices
    from canny.ledger import open_ledger
    from canny.pricing import default_table

    if not sliced:
        slices.HOT_CALLS = slices.HOT_WAIT_US = 10**9
    ledger = open_ledger(target)
    guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger))
    body = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": _prompt(0)}]}
    table = default_table()  # as canny.Client does: the price table read once per call, put in its spec
    specs = [CallSpec(model=MODEL, params=dict(body), stream=True, project="pairs", table=table) for _ in range(pairs)]
    ready.put(os.getpid())
    go.wait()
    start = time.time()
    for spec in specs:
        guard.reserve(spec).settle(Decimal("0.0001"))
    ledger.close()
    out.put((start, time.time()))


@contextmanager
def fresh_ledger(url: str | None, workdir: Path, name: str) -> Iterator[str]:
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


def bench_pairs(target: str, processes: int, pairs: int, *, sliced: bool = True, quiet: bool = False) -> float:
    """Pairs per second over ``processes`` processes, from the first start to the last end
    (each closes its ledger, giving its slices back, inside its span); checks the counter."""
    from canny import budget
    from canny.ledger import open_ledger

    ledger: Any = open_ledger(target)
    budget.remove_budgets(ledger)
    with ledger.transaction() as tx:
        tx.execute("DELETE FROM budget_counters")
    budget.set_budget(ledger, period="day", limit="1000000", scope=budget.Scope(project="pairs"))
    ledger.close()
    # fork: 64 children start at once without importing canny 64 times on a loaded machine
    # (the parent holds no open connection: the ledger above is closed before they start).
    ctx: Any = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    children = [
        ctx.Process(target=pairs_worker, args=(target, pairs, sliced, ready, go, out)) for _ in range(processes)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.get(timeout=900)  # every child imported canny and opened its ledger
    go.set()
    spans: list[tuple[float, float]] = [out.get(timeout=900) for _ in children]
    for child in children:
        child.join()
    seconds = max(end for _, end in spans) - min(start for start, _ in spans)
    rate = processes * pairs / seconds
    ledger = open_ledger(target)
    (status,) = budget.budget_status(ledger)
    ledger.close()
    charged = Decimal("0.0001") * processes * pairs
    if (status.spent, status.reserved) != (charged, Decimal(0)):
        raise SystemExit(f"budget counter wrong after the pairs: spent {status.spent} (want {charged}), "
                         f"reserved {status.reserved} (want 0)")  # fmt: skip
    if not quiet:
        how = "with slices" if sliced else "direct (no slices)"
        print(f"\n== reserve + reconcile: {processes} processes × {pairs} pairs (no HTTP), {how}")
        print(f"{processes * pairs} pairs in {seconds:.2f} s: {rate:,.0f} pairs/s")
    return rate


@contextmanager
def _durable_postgres() -> Iterator[str | None]:
    """A throwaway PostgreSQL server with fsync=on and synchronous_commit=on (the script's
    ``start --durable``), or None when none can be started."""
    import shlex
    import subprocess

    script = Path(__file__).resolve().parent.parent / "scripts" / "pg-test-server.sh"
    started = subprocess.run(["bash", str(script), "start", "--durable"], capture_output=True, text=True, check=False)
    if started.returncode != 0:
        print(f"\n== PostgreSQL: no server could be started, skipped ({started.stderr.strip().splitlines()[-1:]})")
        yield None
        return
    env = dict(line.removeprefix("export ").split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    env = {k: shlex.split(v)[0] for k, v in env.items()}
    try:
        yield env["CANNY_TEST_POSTGRES_DSN"]
    finally:
        subprocess.run(["bash", str(script), "stop", env["CANNY_PG_TEST_DIR"]], capture_output=True, check=False)


def bench_postgres(url: str, quick: bool) -> None:
    """Pairs/s at 1, 8, 32 and 64 processes on a durable server; the 8-process row, median of
    three runs with its spread, goes to the targets table."""
    import psycopg

    with psycopg.connect(url) as conn:
        settings = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in ("fsync", "synchronous_commit")}  # type: ignore[index]
    print(f"\n== PostgreSQL budgets: fsync={settings['fsync']}, synchronous_commit={settings['synchronous_commit']}")
    total = 4000 if quick else 16000
    rates: dict[int, list[float]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="canny-bench-pg-") as tmp,
        fresh_ledger(url, Path(tmp), "pgpairs") as target,
    ):
        for processes in (1, 8, 32, 64):
            pairs = max(250, total // processes) if processes > 1 else total // 4
            runs = 1 if quick or processes != 8 else 3
            rates[processes] = [bench_pairs(target, processes, pairs, quiet=True) for _ in range(runs)]
            print(f"  {processes} processes × {pairs} pairs: " + ", ".join(f"{r:,.0f}" for r in rates[processes]),
                  flush=True)  # fmt: skip
        direct = bench_pairs(target, 8, 250 if quick else 500, sliced=False, quiet=True)
    print(f"{'processes':>9}  {'pairs/s (slices)':>17}  runs")
    for processes, found in rates.items():
        listed = ", ".join(f"{r:,.0f}" for r in found)
        print(f"{processes:>9}  {statistics.median(found):>17,.0f}  {listed}")
    print(f"8 processes without slices (two round trips per pair on the counter row): {direct:,.0f} pairs/s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from targets import record

    eight = rates[8]
    record(
        "budget_pg_pairs_8",
        "PostgreSQL budget reserve + settle, 8 processes (fsync on)",
        value=statistics.median(eight),
        target=5000,
        better="higher",
        spread=(min(eight), max(eight)),
        unit="pairs/s",
    )


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
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL pairs on a durable server")
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
        with fresh_ledger(args.ledger, workdir, "invariant") as target:
            passed = bench_invariant(target, args.processes, args.calls, workdir)
        with fresh_ledger(args.ledger, workdir, "pairs") as target:
            rate = bench_pairs(target, args.processes, args.pairs)
        with fresh_ledger(args.ledger, workdir, "empty") as target:
            bench_no_budget(target)
        if args.ledger is not None and args.ledger.startswith("postgres"):
            bench_postgres(args.ledger, args.quick)
        elif not args.no_postgres:
            with _durable_postgres() as url:
                if url is not None:
                    bench_postgres(url, args.quick)
    if not passed or (args.ledger is None and rate < 500):  # the throughput target is for SQLite
        sys.exit(1)


if __name__ == "__main__":
    main()
