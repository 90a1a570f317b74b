"""The cost of keeping attempts in flight (so kill -9 leaves a ``lost`` row).

    python benchmarks/bench_lost.py                  # SQLite, 2,000 rows per variant
    python benchmarks/bench_lost.py --quick          # 300 rows, 40 calls
    python benchmarks/bench_lost.py --ledger postgresql://user@127.0.0.1/db

Measures, interleaved in rounds so drift hits every variant alike:

1. ledger writes per attempt, median µs: the row insert as it was before (one transaction,
   insert only), ``record()`` now (the same transaction also drops the attempt's row in
   flight: one more indexed statement), and ``begin_attempt()`` + ``record()`` (the whole
   cost per attempt: one more short transaction);
2. whole calls through ``canny.Client`` against the embedded emulator with the ledger, with
   and without the row in flight (disabled by hiding ``begin_attempt``), median ms.

Numbers are printed; nothing here is a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

KEY = "sk-ant-api03-CANARY-benchmark-key-0000000000"
MODEL = "claude-sonnet-5-5"
ROUNDS = 10


def _record(call_id: str, outcome: str = "ok") -> Any:
    from canny.ledger import AttemptRecord
    from canny.usage import Usage

    now = datetime.now(UTC)
    return AttemptRecord(
        call_id=call_id, attempt=1, started_at=now, ended_at=now, model=MODEL, outcome=outcome,  # type: ignore[arg-type]
        usage=Usage(input=1200, output=300), cost_usd=Decimal("0.0081"), price_version="2026-11-01",
        project="bench", tags=("a", "b"), prompt_hash="ab" * 32, status_code=200,
    )  # fmt: skip


def _old_record(ledger: Any, record: Any) -> None:
    """The write as it was before rows in flight: one transaction, the insert and its tags."""
    from canny.ledger._sql import _INSERT, _row_params

    with ledger.transaction() as tx:
        inserted = tx.execute(_INSERT, (*_row_params(record), record.call_id))
        for tag in record.tags:
            tx.execute(
                "INSERT INTO attempt_tags (tag, attempt_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (tag, inserted[0][0]),
            )


def bench_writes(ledger: Any, n: int) -> dict[str, float]:
    """Median µs per attempt of each way of writing it."""
    lease = datetime.now(UTC) + timedelta(minutes=17)

    def before() -> None:
        _old_record(ledger, _record(uuid.uuid4().hex))

    def now() -> None:
        ledger.record(_record(uuid.uuid4().hex))

    def in_flight() -> None:
        call_id = uuid.uuid4().hex
        ledger.begin_attempt(_record(call_id, "lost"), lease_until=lease)
        ledger.record(_record(call_id))

    variants: dict[str, Callable[[], None]] = {
        "insert only (before)": before,
        "record() now": now,
        "begin_attempt() + record()": in_flight,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(n // ROUNDS, 1)
    for _ in range(ROUNDS):
        for name, func in variants.items():
            for _ in range(per_round):
                start = time.perf_counter()
                func()
                samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e6 for name, values in samples.items()}


class _NoInflight:
    """The ledger without ``begin_attempt``: canny then keeps no rows in flight."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.location = ledger.location

    def record(self, record: Any) -> None:
        self._ledger.record(record)

    def records(self, **kwargs: Any) -> Any:
        return self._ledger.records(**kwargs)

    def close(self) -> None:
        return None


def bench_calls(ledger: Any, calls: int) -> list[tuple[str, float, float]]:
    """(call, median ms without rows in flight, with them) through canny.Client."""
    import canny
    from canny.emulator import serve_in_thread

    rows = []
    with serve_in_thread() as emu:
        with_ = canny.Client(api_key=KEY, base_url=emu.url_for(), ledger=ledger, model=MODEL)
        without = canny.Client(api_key=KEY, base_url=emu.url_for(), ledger=_NoInflight(ledger), model=MODEL)

        def stream(client: canny.Client) -> Callable[[], None]:
            def run() -> None:
                with client.stream("What is a ledger?", max_tokens=1) as s:
                    for _ in s:
                        pass

            return run

        def create(client: canny.Client) -> Callable[[], None]:
            def run() -> None:
                client.create("What is a ledger?", max_tokens=64)

            return run

        for label, make in (("stream, 1 token", stream), ("create (non-streamed)", create)):
            funcs = {"without": make(without), "with": make(with_)}
            samples: dict[str, list[float]] = {"without": [], "with": []}
            for _ in range(calls):
                for name, func in funcs.items():
                    start = time.perf_counter()
                    func()
                    samples[name].append(time.perf_counter() - start)
            rows.append((label, statistics.median(samples["without"]) * 1e3, statistics.median(samples["with"]) * 1e3))
        with_.close()
        without.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--ledger", help="a postgresql:// URL (default: a temporary SQLite file)")
    args = parser.parse_args()
    from canny.ledger import open_ledger

    n, calls = (300, 40) if args.quick else (2000, 200)
    with tempfile.TemporaryDirectory() as tmp:
        target = args.ledger or str(Path(tmp) / "bench-lost.db")
        ledger: Any = open_ledger(target)
        try:
            print(
                f"rows in flight: {ledger.location if args.ledger else 'SQLite (WAL)'}, python {sys.version.split()[0]}"
            )
            print("\nledger writes per attempt, median µs")
            writes = bench_writes(ledger, n)
            base = writes["insert only (before)"]
            for name, us in writes.items():
                print(f"  {name:<28} {us:8.1f}  (+{us - base:6.1f})")
            print("\nwhole calls with a ledger, median ms (without rows in flight / with)")
            for label, without, with_ in bench_calls(ledger, calls):
                print(f"  {label:<24} {without:7.3f}  {with_:7.3f}  (+{(with_ - without) * 1000:5.0f} µs)")
        finally:
            ledger.close()


if __name__ == "__main__":
    main()
