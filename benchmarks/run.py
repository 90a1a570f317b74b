"""canny against the raw ``anthropic`` SDK on the emulator, in the same run, as ratios.

    python benchmarks/run.py            # or: make bench
    python benchmarks/run.py --quick    # fewer repetitions

Measures (DESIGN §4):
- per-call overhead of a streamed call (1-token and ~1,000-token answers) and of a
  non-streamed call: canny (with and without its SQLite ledger) / raw SDK, medians;
- streaming throughput (output tokens per second) of a long answer, canny / SDK;
- cold start: ``canny --help`` and ``canny ask --offline`` against ``python -c "import anthropic"``;
- retries: time lost to a scripted 429 with ``retry-after: 1`` against the 1 s minimum;
- 64 concurrent async streams into one ledger: rows written vs expected.

Nothing here is a test: numbers are printed, and recorded in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KEY = "sk-ant-api03-CANARY-benchmark-key-0000000000"
MODEL = "claude-sonnet-5-5"
SHORT = "Say hi. [[tokens=1]]"
LONG = "Write at length about invoices. [[tokens=1000]]"


def _median_ms(func: Callable[[], object], repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        func()
    samples = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        func()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def _interleaved(funcs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Median ms per function, interleaving runs so drift hits every side equally."""
    for func in funcs.values():
        for _ in range(3):
            func()
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for _ in range(repeat):
        for name, func in funcs.items():
            start = time.perf_counter()
            func()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1000 for name, values in samples.items()}


def bench_calls(base_url: str, repeat: int, workdir: Path) -> list[tuple[str, float, float, float]]:
    import anthropic

    import canny

    sdk = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
    bare = canny.Client(api_key=KEY, base_url=base_url, ledger=False, model=MODEL)
    ledgered = canny.Client(api_key=KEY, base_url=base_url, ledger=workdir / "bench-ledger.db", model=MODEL)

    def sdk_stream(prompt: str, max_tokens: int) -> Callable[[], object]:
        def run() -> object:
            with sdk.messages.stream(
                model=MODEL, max_tokens=max_tokens, messages=[{"role": "user", "content": prompt}]
            ) as stream:
                for _ in stream.text_stream:
                    pass
                return stream.get_final_message()

        return run

    def canny_stream(client: canny.Client, prompt: str, max_tokens: int) -> Callable[[], object]:
        def run() -> object:
            with client.stream(prompt, max_tokens=max_tokens) as stream:
                for _ in stream:
                    pass
            return stream.result

        return run

    def sdk_create() -> object:
        return sdk.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": SHORT}])

    rows = []
    for label, prompt, max_tokens in (("stream, 1 token", SHORT, 1), ("stream, ~1,000 tokens", LONG, 1500)):
        medians = _interleaved(
            {
                "sdk": sdk_stream(prompt, max_tokens),
                "canny": canny_stream(bare, prompt, max_tokens),
                "canny+ledger": canny_stream(ledgered, prompt, max_tokens),
            },
            repeat,
        )
        rows.append((label, medians["sdk"], medians["canny"], medians["canny+ledger"]))
    medians = _interleaved(
        {
            "sdk": sdk_create,
            "canny": lambda: bare.create(SHORT, max_tokens=64),
            "canny+ledger": lambda: ledgered.create(SHORT, max_tokens=64),
        },
        repeat,
    )
    rows.append(("create (non-streamed)", medians["sdk"], medians["canny"], medians["canny+ledger"]))
    sdk.close()
    bare.close()
    ledgered.close()
    return rows


def bench_throughput(base_url: str, repeat: int) -> tuple[float, float]:
    import anthropic

    import canny

    prompt = "A long essay please. [[tokens=4000]]"
    sdk = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
    client = canny.Client(api_key=KEY, base_url=base_url, ledger=False, model=MODEL)
    tokens = {"n": 0}

    def sdk_run() -> None:
        with sdk.messages.stream(model=MODEL, max_tokens=8000, messages=[{"role": "user", "content": prompt}]) as s:
            for _ in s.text_stream:
                pass
            tokens["n"] = s.get_final_message().usage.output_tokens

    def canny_run() -> None:
        with client.stream(prompt, max_tokens=8000) as s:
            for _ in s:
                pass

    medians = _interleaved({"sdk": sdk_run, "canny": canny_run}, repeat)
    sdk.close()
    client.close()
    n = tokens["n"]
    return n / (medians["sdk"] / 1000), n / (medians["canny"] / 1000)


def _wall(cmd: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench_cold_start(repeat: int, workdir: Path) -> dict[str, float]:
    canny_bin = str(Path(sys.executable).with_name("canny"))
    env_home = ["env", f"CANNY_HOME={workdir}"]
    return {
        "python -c pass": _wall([sys.executable, "-c", "pass"], repeat),
        'python -c "import anthropic"': _wall([sys.executable, "-c", "import anthropic"], repeat),
        "canny --help": _wall([*env_home, canny_bin, "--help"], repeat),
        "canny ask --offline": _wall([*env_home, canny_bin, "ask", "--offline", "hi", "--no-ledger"], repeat),
    }


def bench_retry(emulator: Any) -> float:
    import canny

    client = canny.Client(api_key=KEY, base_url=emulator.url_for("rate_limit;retry_after=1", "ok"), ledger=False)
    start = time.perf_counter()
    client.create("hi", max_tokens=8)
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def bench_concurrency(emulator: Any, workdir: Path, n: int = 64) -> tuple[int, int, float]:
    import canny
    from canny.ledger import open_ledger

    path = workdir / "concurrent.db"

    async def main() -> None:
        async with canny.AsyncClient(api_key=KEY, base_url=emulator.url_for("ok"), ledger=path, model=MODEL) as client:

            async def one(i: int) -> None:
                async with client.stream(f"stream {i} [[words=50]]", max_tokens=200) as s:
                    async for _ in s:
                        pass

            await asyncio.gather(*(one(i) for i in range(n)))

    start = time.perf_counter()
    asyncio.run(main())
    elapsed = time.perf_counter() - start
    ledger = open_ledger(path)
    rows = list(ledger.records())
    ledger.close()
    return len(rows), len({(r.call_id, r.attempt) for r in rows}), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 15 if args.quick else 60
    import anthropic

    import canny
    from canny.emulator import serve_in_thread

    print(f"canny {canny.__version__} · anthropic {anthropic.__version__} · Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread() as emu:
        workdir = Path(tmp)
        print("\n== per-call time, median ms (ratio = canny / raw SDK; target <= 1.05)")
        print(f"{'call':<24}{'SDK':>9}{'canny':>9}{'ratio':>8}{'+ledger':>9}{'ratio':>8}")
        for label, sdk_ms, canny_ms, ledger_ms in bench_calls(emu.base_url, repeat, workdir):
            print(
                f"{label:<24}{sdk_ms:>9.2f}{canny_ms:>9.2f}{canny_ms / sdk_ms:>8.2f}"
                f"{ledger_ms:>9.2f}{ledger_ms / sdk_ms:>8.2f}"
            )
        sdk_tps, canny_tps = bench_throughput(emu.base_url, max(5, repeat // 4))
        print("\n== streaming throughput, output tokens/s (target ratio >= 0.95)")
        print(f"SDK {sdk_tps:,.0f} · canny {canny_tps:,.0f} · ratio {canny_tps / sdk_tps:.2f}")
        print("\n== cold start, median wall seconds")
        cold = bench_cold_start(5 if args.quick else 11, workdir)
        base = cold['python -c "import anthropic"']
        for name, seconds in cold.items():
            print(f"{name:<30}{seconds:>8.3f} s{seconds / base:>8.2f}x import anthropic")
        lost = bench_retry(emu)
        print("\n== retry: 429 with retry-after: 1, then 200")
        print(f"total {lost:.3f} s; over the 1 s minimum by {(lost - 1) * 100:.1f}% (target within 10%)")
        rows, distinct, elapsed = bench_concurrency(emu, workdir)
        print("\n== 64 concurrent async streams into one SQLite ledger")
        print(f"rows {rows}, distinct (call, attempt) {distinct}, expected 64 · {elapsed:.2f} s")


if __name__ == "__main__":
    main()
