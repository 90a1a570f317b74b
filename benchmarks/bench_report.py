"""How long `canny report` takes over a large SQLite ledger (target: about 1 s for 1,000,000 rows).

    .venv/bin/python benchmarks/bench_report.py                 # 1,000,000 rows in a temp dir
    .venv/bin/python benchmarks/bench_report.py --rows 200000 --keep /tmp/canny-bench.db

The ledger is filled through the public write path (``record_many``) with a year of
realistic attempts: ~7% of calls retried, a few unpriced models, tags, projects, request
ids and prompt hashes. Then each ``--by`` is timed through :func:`canny.reports.build_report`
(what the CLI runs), best of ``--repeat`` runs, then ``--savings`` (the prompt-caching
saving per group) for three of them, plus one ``canny report --by day`` process end to end
(interpreter start-up included). Times are wall-clock seconds.
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from canny.ledger import GROUP_BYS, OUTCOMES, AttemptRecord
from canny.ledger.sqlite import SQLiteLedger
from canny.reports import build_report

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
                input_tokens=rng.randint(10, 8000),
                cache_write_5m_tokens=rng.choice([0, 0, 0, rng.randint(1024, 4000)]),
                cache_write_1h_tokens=rng.choice([0, 0, 0, 0, rng.randint(1024, 4000)]),
                cache_read_tokens=rng.choice([0, rng.randint(1024, 60000)]),
                output_tokens=rng.randint(1, 4000),
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
            rows = ledger.aggregate(None)[1].attempts
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
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "canny", "report", "--by", "day", "--ledger", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        cli = time.perf_counter() - started
        print(f"  `canny report --by day` process, start-up included: {cli:.3f} s")
        print(f"report --by day over {rows:,} rows: {results['day']:.3f} s (target about 1 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
