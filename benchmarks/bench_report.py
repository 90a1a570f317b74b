"""How long `canny report`, `canny ledger export` and a budget's first check take over a large
SQLite ledger (targets, issue 11: every report under 1 s as a whole process, export at
100,000 rows/s or more, a first budget check under 10 ms, over 1,000,000 rows).

    .venv/bin/python benchmarks/bench_report.py                 # 1,000,000 rows in a temp dir
    .venv/bin/python benchmarks/bench_report.py --rows 200000 --keep /tmp/canny-bench.db

The ledger is filled through the public write path (``record_many``) with a year of
realistic attempts: ~7% of calls retried, a few unpriced models, tags, projects, request
ids and prompt hashes. Then each ``--by`` is timed through :func:`canny.reports.build_report`
(what the CLI runs), best of ``--repeat`` runs, then ``--savings`` (the prompt-caching
saving per group) for three of them; then, as whole processes (interpreter start-up
included), ``canny report --by X`` for every X and ``--html``, ``canny ledger export`` in
JSON lines and CSV, and in-process the first budget check (counter seeding) of a window
holding every row, for all calls and for one tag. Times are wall-clock seconds; the figures
with a target go to ``benchmarks/targets.py`` (``make bench`` prints them).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from canny.budget import Scope, Window, store
from canny.ledger import GROUP_BYS, OUTCOMES, AttemptRecord, ReportQuery
from canny.ledger.sqlite import SQLiteLedger
from canny.reports import build_report
from canny.units import from_us
from canny.usage import Usage

sys.path.insert(0, str(Path(__file__).parent))
from targets import record

MODELS = ["claude-sonnet-4-6", "claude-opus-4-7", "claude-haiku-4-5", "claude-sonnet-5", "in-house-finetune"]
START = datetime(2025, 11, 25, tzinfo=UTC)


def synthetic(rows: int, seed: int = 1) -> Iterator[AttemptRecord]:
    """``rows`` attempts spread evenly over one year, oldest first."""
    rng = random.Random(seed)
    step = timedelta(days=365) / rows
    outcomes = ["ok"] * 90 + ["max_tokens"] * 3 + ["refused"] + list(OUTCOMES[3:]) * 2
    made = 0
    call = 0
    while made < rows:
        call += 1
        call_id = f"call_{rng.getrandbits(96):024x}"
        model = rng.choices(MODELS, weights=[40, 15, 30, 10, 5])[0]
        tags = rng.choice([(), ("batch-job",), ("chat",), ("chat", "eval"), ("agent", "nightly")])
        project = rng.choice([None, "search", "support", "research"])
        retries = 1 + (rng.random() < 0.07) * rng.randint(1, 3)
        for attempt in range(1, retries + 1):
            if made >= rows:
                return
            started = START + step * made
            made += 1
            unpriced = model == "in-house-finetune"
            yield AttemptRecord(
                call_id=call_id,
                attempt=attempt,
                started_at=started,
                ended_at=started + timedelta(seconds=rng.uniform(0.5, 40)),
                first_token_at=started + timedelta(milliseconds=rng.randint(200, 2000)),
                model=model,
                outcome="error" if attempt < retries else rng.choice(outcomes),  # type: ignore[arg-type]
                session_id=f"sess_{call // 20:08x}",
                status_code=200,
                request_id=f"req_{rng.getrandbits(96):024x}",
                stop_reason="end_turn",
                usage=Usage(
                    input=rng.randint(10, 8000),
                    cache_write_5m=rng.choice([0, 0, 0, rng.randint(1024, 4000)]),
                    cache_write_1h=rng.choice([0, 0, 0, 0, rng.randint(1024, 4000)]),
                    cache_read=rng.choice([0, rng.randint(1024, 60000)]),
                    output=rng.randint(1, 4000),
                ),
                cost_usd=None if unpriced else Decimal(rng.randint(1, 10**9)).scaleb(-10),
                price_version=None if unpriced else "2026-11-01",
                project=project,
                tags=tags,
                key_fingerprint="sk-ant-…a1b2",
                prompt_hash=f"{rng.getrandbits(256):064x}",
            )


def fill(path: Path, rows: int) -> None:
    started = time.perf_counter()
    ledger = SQLiteLedger(path)
    try:
        ledger.record_many(synthetic(rows), batch=20_000)
    finally:
        ledger.close()
    size = path.stat().st_size / 1e6
    print(f"filled {rows:,} rows in {time.perf_counter() - started:.1f} s ({size:.0f} MB)", flush=True)


def timed(ledger: SQLiteLedger, by: str, tz: ZoneInfo | None, repeat: int, *, savings: bool = False) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        build_report(ledger, by, tz=tz, savings=savings)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - started)
    return best


def process_seconds(*args: str, repeat: int) -> list[float]:
    """Wall-clock seconds of ``canny ARGS`` as a whole process, ``repeat`` times."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "canny", *args], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return times


def first_check_ms(ledger: SQLiteLedger, *, tag: str = "", repeat: int) -> list[float]:
    """Milliseconds to seed a budget counter whose window holds every row (its first check)."""
    with ledger.transaction(write=False) as tx:
        lo, hi = tx.execute("SELECT min(started_at_us), max(started_at_us) + 1 FROM attempts")[0]
    window = Window("month", "UTC", "bench", from_us(int(lo)), from_us(int(hi)))
    key = store.CounterKey(window, Scope(tag=tag or None))
    times = []
    for _ in range(repeat):
        with store.begin(ledger) as tx:
            tx.execute("DELETE FROM budget_counters WHERE label = 'bench'")
        with store.begin(ledger) as tx:
            started = time.perf_counter()
            store.counters(tx, [key], int(hi))
            times.append((time.perf_counter() - started) * 1000)
    return times


def compiled() -> None:
    """Compile canny's modules to bytecode first, as an installed package is (pip compiles
    on install): with ``PYTHONDONTWRITEBYTECODE`` set and no ``__pycache__``, every process
    would compile them from source (about 0.2 s) and time that instead of the report."""
    import compileall

    import canny

    compileall.compile_dir(str(Path(canny.__file__).parent), quiet=1)


def processes(path: Path, rows: int, repeat: int) -> None:
    """The whole-process figures, recorded against their targets."""
    compiled()
    reports: dict[str, float] = {}
    for by in GROUP_BYS:
        reports[by] = statistics.median(process_seconds("report", "--by", by, "--ledger", str(path), repeat=repeat))
        print(f"  `canny report --by {by}` process: {reports[by]:.3f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        html = ("report", "--html", str(Path(tmp) / "r.html"), "--ledger", str(path))
        reports["html"] = statistics.median(process_seconds(*html, repeat=repeat))
    print(f"  `canny report --html` process: {reports['html']:.3f} s", flush=True)
    # --by session reads rows (no rollup keeps sessions): shown, not part of the target.
    counted = {k: v for k, v in reports.items() if k != "session"}
    worst = max(counted, key=lambda k: counted[k])
    record(
        "report_1m_process",
        f"`canny report` over {rows:,} rows, whole process, slowest --by/--html ({worst})",
        value=reports[worst],
        target=1.0,
        better="lower",
        spread=(min(counted.values()), counted[worst]),
        unit="s",
    )
    for fmt in ("jsonl", "csv"):
        times = process_seconds("ledger", "export", "--format", fmt, "--ledger", str(path), "-o", os.devnull, repeat=1)
        rate = rows / times[0]
        print(f"  `canny ledger export --format {fmt}`: {times[0]:.2f} s, {rate:,.0f} rows/s", flush=True)
        record(
            f"export_1m_{fmt}",
            f"`canny ledger export` {fmt}, {rows:,} rows",
            value=rate,
            target=100_000,
            better="higher",
            unit="rows/s",
        )
    ledger = SQLiteLedger(path)
    try:
        every = first_check_ms(ledger, repeat=max(repeat, 3))
        tagged = first_check_ms(ledger, tag="chat", repeat=max(repeat, 3))
    finally:
        ledger.close()
    print(
        f"  first budget check, window of {rows:,} rows: {statistics.median(every):.2f} ms all calls, "
        f"{statistics.median(tagged):.2f} ms tag scope",
        flush=True,
    )
    worst_ms = max(statistics.median(every), statistics.median(tagged))
    record(
        "budget_first_check_1m",
        f"first budget check of a window with {rows:,} rows (all calls, tag scope)",
        value=worst_ms,
        target=10,
        better="lower",
        spread=(min(every + tagged), max(every + tagged)),
        unit="ms",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is shown")
    parser.add_argument("--keep", type=Path, help="ledger file to reuse (filled if missing) instead of a temp one")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "ledger.db"
        if not path.exists():
            fill(path, args.rows)
        ledger = SQLiteLedger(path)
        try:
            rows = ledger.aggregate(ReportQuery(None))[1].attempts
            print(f"ledger {path}: {rows:,} attempts")
            results: dict[str, float] = {}
            for by in GROUP_BYS:
                results[by] = timed(ledger, by, None, args.repeat)
                print(f"  report --by {by:<8} {results[by]:6.3f} s")
            paris = timed(ledger, "day", ZoneInfo("Europe/Paris"), args.repeat)
            print(f"  report --by day --tz Europe/Paris {paris:6.3f} s")
            for by in ("day", "model", "tag"):
                saving = timed(ledger, by, None, args.repeat, savings=True)
                print(f"  report --by {by} --savings {saving:6.3f} s")
        finally:
            ledger.close()
        processes(path, rows, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
