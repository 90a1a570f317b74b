"""canny against the raw ``anthropic`` SDK on the emulator, in the same run, as ratios.

    python benchmarks/run.py            # or: make bench
    python benchmarks/run.py --quick    # fewer rounds and runs
    python benchmarks/run.py --quick --calls   # only the per-call and throughput figures
    python benchmarks/run.py --emulator thread # the emulator in this process (default: its own)
    python benchmarks/run.py --writer   # only the ledger writer's rows per second

Measures (DESIGN §4), every ratio against BOTH baselines of the raw SDK, the plain
``messages.create(stream=True)`` and the ``messages.stream()`` helper (which does more
work per event, so it is the easier one to beat):
- per-call time of a 1-token stream and of a non-streamed call: ``canny.Client`` with its
  SQLite ledger (and with three budgets set), ``canny.meter(anthropic.Anthropic())``;
- streaming throughput (output tokens per second) of a 4,000-token answer;
- cold start with the ledger on: ``canny ask --offline`` against ``import anthropic``;
- retries: time lost to a scripted 429 with ``retry-after: 1`` against the 1 s minimum;
- 64 concurrent async streams into one ledger: rows written vs expected;
- rows the ledger's writer commits per second, idle and with another thread busy, before
  and after a group became one statement (SQLite) or one round trip (PostgreSQL).

The per-call and throughput figures talk to an emulator in a process of its own, as the
real API is on another machine (``--emulator thread`` puts it in this process, where its
Python work and the client's take turns on one interpreter lock).

Every ratio is a median of medians: each run interleaves all the variants round by round
(so drift and the other processes on the machine hit every side alike; in a round each
variant makes one untimed call, then three timed calls back to back, and the order rotates,
so the rows canny writes behind a call are paid by its own next call, never by another
variant's), a run's ratio is
the ratio of its medians, and the figure is the median of the runs' ratios, with their
min–max as its spread. Figures with a target go to :func:`targets.record`; nothing here
is a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from targets import record

KEY = "sk-ant-api03-CANARY-benchmark-key-0000000000"
MODEL = "claude-sonnet-5-5"
SHORT = "Say hi. [[tokens=1]]"
LONG = "A long essay please. [[tokens=4000]]"

Runs = dict[str, list[float]]


#: Calls timed back to back per variant and round, after one untimed call (see _interleaved).
BLOCK = 3


def _interleaved(funcs: dict[str, Callable[[], object]], rounds: int, runs: int) -> Runs:
    """Each function's median seconds per call, per run: ``runs`` runs of ``rounds`` rounds.

    In each round every variant makes one untimed call and then :data:`BLOCK` timed calls
    back to back, and the order of the variants rotates from round to round. canny writes
    its rows on a thread after a call returns; back to back, that work lands on the
    variant's own next call, as in an application's loop, and the untimed call takes
    whatever the previous variant left running, so no variant is charged another's work
    (with one timed call per variant in a fixed order, each paid for the one before it).
    """
    for func in funcs.values():
        for _ in range(3):
            func()
    names = list(funcs)
    medians: Runs = {name: [] for name in funcs}
    for _ in range(runs):
        samples: dict[str, list[float]] = {name: [] for name in funcs}
        gc.collect()
        for n in range(rounds):
            shift = n % len(names)
            for name in names[shift:] + names[:shift]:
                func = funcs[name]
                func()
                for _ in range(BLOCK):
                    start = time.perf_counter()
                    func()
                    samples[name].append(time.perf_counter() - start)
        for name, values in samples.items():
            medians[name].append(statistics.median(values))
    return medians


#: Calls per variant and run of :func:`_sustained`.
SUSTAINED_CALLS = 200


def _sustained(funcs: dict[str, tuple[Callable[[], object], Callable[[], None]]], runs: int) -> Runs:
    """Each function's mean seconds per call, per run, over :data:`SUSTAINED_CALLS` calls back
    to back followed by its ledger's ``flush`` (the second callable), all inside the timing.

    The cross-check of :func:`_interleaved`: a median leaves out the calls that a group
    commit of the writer lands on, and work left queued when a variant's block ends would
    land on the next one. Here every variant starts with every queue written (untimed) and
    ends once its own rows are committed, so the mean holds all the work its calls made.
    """
    names = list(funcs)
    means: Runs = {name: [] for name in funcs}
    for run in range(runs):
        shift = run % len(names)
        for name in names[shift:] + names[:shift]:
            for _, flush in funcs.values():
                flush()
            call, flush = funcs[name]
            call()
            flush()
            gc.collect()
            start = time.perf_counter()
            for _ in range(SUSTAINED_CALLS):
                call()
            flush()
            means[name].append((time.perf_counter() - start) / SUSTAINED_CALLS)
    return means


def _ratio(medians: Runs, over: str, under: str) -> tuple[float, float, float]:
    """Median of the runs' ratios ``over / under``, and their min and max."""
    ratios = [a / b for a, b in zip(medians[over], medians[under], strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def _ms(medians: Runs, name: str) -> float:
    return statistics.median(medians[name]) * 1000


def _show(label: str, medians: Runs, name: str, baselines: tuple[str, ...]) -> None:
    ratios = "".join(
        f"{_ratio(medians, name, b)[0]:>8.3f} ({_ratio(medians, name, b)[1]:.2f}–{_ratio(medians, name, b)[2]:.2f})"
        for b in baselines
    )
    print(f"{label:<40}{_ms(medians, name):>9.2f}{ratios}")


def _target(key: str, what: str, medians: Runs, over: str, under: str, target: float, better: str) -> None:
    value, low, high = _ratio(medians, over, under)
    spread = (round(low, 3), round(high, 3))
    record(key, what, value=round(value, 3), target=target, better=better, spread=spread, unit="×")  # type: ignore[arg-type]


def _pass_through() -> Any:
    import anthropic

    class PassThrough(anthropic.Middleware):
        """A middleware that only hands the request on: what the SDK's middleware path costs."""

        def handle(self, request: Any, call_next: Any) -> Any:
            return call_next(request)

    return PassThrough()


def bench_calls(base_url: str, rounds: int, runs: int, workdir: Path) -> None:
    import anthropic

    import canny
    from canny import budget
    from canny.ledger import open_ledger

    sdk = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
    bare = canny.Client(api_key=KEY, base_url=base_url, ledger=False, model=MODEL)
    ledgered = canny.Client(api_key=KEY, base_url=base_url, ledger=workdir / "bench-ledger.db", model=MODEL)
    budgeted_path = workdir / "bench-budgets.db"
    db = open_ledger(budgeted_path)
    budget.set_budget(db, period="day", limit="1000000")
    budget.set_budget(db, period="month", limit="1000000")
    budget.set_budget(db, period="day", limit="1000000", scope=budget.Scope(project="bench"))
    db.close()
    budgeted = canny.Client(api_key=KEY, base_url=base_url, ledger=budgeted_path, model=MODEL, project="bench")
    metered = canny.meter(
        anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0), ledger=workdir / "bench-meter.db"
    )
    # The floor of any middleware: the SDK's own middleware path with one that does nothing.
    passing = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0, middleware=[_pass_through()])
    unledgered = canny.meter(anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0), ledger=False)
    short = [{"role": "user", "content": SHORT}]

    def raw_stream(client: anthropic.Anthropic) -> Callable[[], object]:
        def run() -> object:
            for _ in client.messages.create(model=MODEL, max_tokens=1, messages=short, stream=True):  # type: ignore[arg-type]
                pass
            return None

        return run

    def helper_stream(client: anthropic.Anthropic) -> Callable[[], object]:
        def run() -> object:
            with client.messages.stream(model=MODEL, max_tokens=1, messages=short) as stream:  # type: ignore[arg-type]
                for _ in stream.text_stream:
                    pass
                return stream.get_final_message()

        return run

    def canny_stream(client: canny.Client) -> Callable[[], object]:
        def run() -> object:
            with client.stream(SHORT, max_tokens=1) as stream:
                for _ in stream:
                    pass
            return stream.result

        return run

    def raw_create(client: anthropic.Anthropic) -> Callable[[], object]:
        return lambda: client.messages.create(model=MODEL, max_tokens=64, messages=short)  # type: ignore[arg-type]

    print("\n== 1-token stream, median ms; ratio (min–max of run ratios) vs raw create(stream=True), vs helper")
    medians = _interleaved(
        {
            "raw": raw_stream(sdk),
            "helper": helper_stream(sdk),
            "client": canny_stream(ledgered),
            "client, no ledger": canny_stream(bare),
            "meter": raw_stream(metered),
            "meter, helper": helper_stream(metered),
            "meter, no ledger": raw_stream(unledgered),
            "SDK + pass-through middleware": raw_stream(passing),
        },
        rounds,
        runs,
    )
    for name in medians:
        _show(name, medians, name, ("raw", "helper"))
    _target("stream_1tok_client_vs_create", "1-token stream, Client+SQLite / raw create(stream=True)",
            medians, "client", "raw", 1.05, "lower")  # fmt: skip
    _target("stream_1tok_meter_vs_create", "1-token stream, meter / raw create(stream=True)",
            medians, "meter", "raw", 1.05, "lower")  # fmt: skip

    print("\n== create (non-streamed), median ms; ratio (min–max) vs raw create")
    medians = _interleaved(
        {
            "raw": raw_create(sdk),
            "client": lambda: ledgered.create(SHORT, max_tokens=64),
            "client, three budgets": lambda: budgeted.create(SHORT, max_tokens=64),
            "client, no ledger": lambda: bare.create(SHORT, max_tokens=64),
            "meter": raw_create(metered),
            "meter, no ledger": raw_create(unledgered),
            "SDK + pass-through middleware": raw_create(passing),
        },
        rounds,
        runs,
    )
    for name in medians:
        _show(name, medians, name, ("raw",))
    _target("create_client_vs_raw", "create, Client+SQLite / raw create", medians, "client", "raw", 1.05, "lower")
    _target("create_budgets_vs_raw", "create, Client+SQLite+3 budgets / raw create",
            medians, "client, three budgets", "raw", 1.05, "lower")  # fmt: skip
    _target("create_meter_vs_raw", "create, meter / raw create", medians, "meter", "raw", 1.05, "lower")

    meter_of = next(m for m in metered.middleware if isinstance(m, canny.Meter))

    def nothing() -> None:
        return None

    print(
        f"\n== sustained: mean ms per call over {SUSTAINED_CALLS} calls back to back, the variant's own rows "
        "committed inside the timing; ratio (min–max) vs raw"
    )
    means = _sustained(
        {
            "raw, 1-token stream": (raw_stream(sdk), nothing),
            "client, 1-token stream": (canny_stream(ledgered), ledgered.flush),
            "client, no ledger, 1-token stream": (canny_stream(bare), nothing),
            "meter, 1-token stream": (raw_stream(metered), meter_of.flush),
            "raw, create": (raw_create(sdk), nothing),
            "client, create": (lambda: ledgered.create(SHORT, max_tokens=64), ledgered.flush),
            "client, three budgets, create": (lambda: budgeted.create(SHORT, max_tokens=64), budgeted.flush),
            "meter, create": (raw_create(metered), meter_of.flush),
        },
        runs,
    )
    for name in means:
        base = "raw, create" if name.endswith("create") else "raw, 1-token stream"
        _show(name, means, name, (base,))
    for client in (sdk, metered, passing, unledgered):
        client.close()
    for own in (bare, ledgered, budgeted):
        own.close()


def bench_throughput(base_url: str, rounds: int, runs: int, workdir: Path) -> None:
    import anthropic

    import canny

    sdk = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0)
    metered = canny.meter(
        anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0), ledger=workdir / "bench-meter.db"
    )
    client = canny.Client(api_key=KEY, base_url=base_url, ledger=workdir / "bench-ledger.db", model=MODEL)
    long = [{"role": "user", "content": LONG}]
    tokens = {"n": 0}

    def helper(api: anthropic.Anthropic) -> Callable[[], object]:
        def run() -> object:
            with api.messages.stream(model=MODEL, max_tokens=8000, messages=long) as s:  # type: ignore[arg-type]
                for _ in s.text_stream:
                    pass
                tokens["n"] = s.get_final_message().usage.output_tokens
            return None

        return run

    def raw(api: anthropic.Anthropic) -> Callable[[], object]:
        def run() -> object:
            for _ in api.messages.create(model=MODEL, max_tokens=8000, messages=long, stream=True):  # type: ignore[arg-type]
                pass
            return None

        return run

    def canny_run() -> None:
        with client.stream(LONG, max_tokens=8000) as s:
            for _ in s:
                pass

    medians = _interleaved(
        {"helper": helper(sdk), "raw": raw(sdk), "meter, helper": helper(metered), "meter, raw": raw(metered),
         "client": canny_run},
        rounds,
        runs,
    )  # fmt: skip
    n = tokens["n"]
    print(f"\n== streaming throughput of a {n:,}-token answer, tokens/s; ratio (min–max) vs raw create, vs helper")
    for name in medians:
        tps = n / statistics.median(medians[name])
        raw_r, helper_r = _ratio(medians, "raw", name), _ratio(medians, "helper", name)
        print(
            f"{name:<40}{tps:>9,.0f}{raw_r[0]:>8.3f} ({raw_r[1]:.2f}–{raw_r[2]:.2f})"
            f"{helper_r[0]:>8.3f} ({helper_r[1]:.2f}–{helper_r[2]:.2f})"
        )
    # throughput ratio = raw time / metered time
    _target("throughput_meter_vs_helper", "metered streaming throughput / raw messages.stream()",
            medians, "helper", "meter, helper", 0.95, "higher")  # fmt: skip
    for api in (sdk, metered):
        api.close()
    client.close()


def bench_cold_start(repeat: int, workdir: Path) -> None:
    """Whole-process wall time, the commands interleaved; ``canny ask`` writes its ledger.
    canny is compiled to bytecode first, as an installed package is (``anthropic`` is):
    with ``PYTHONDONTWRITEBYTECODE`` set, each process would otherwise compile it."""
    import compileall

    import canny

    compileall.compile_dir(str(Path(canny.__file__).parent), quiet=1)
    canny_bin = str(Path(sys.executable).with_name("canny"))
    env_home = ["env", f"CANNY_HOME={workdir}"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        'python -c "import anthropic"': [sys.executable, "-c", "import anthropic"],
        "canny --help": [*env_home, canny_bin, "--help"],
        "canny ask --offline (ledger on)": [*env_home, canny_bin, "ask", "--offline", "hi"],
    }
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            samples[name].append(time.perf_counter() - start)
    base = statistics.median(samples['python -c "import anthropic"'])
    print(f"\n== cold start, median wall seconds of {repeat} interleaved runs (min–max)")
    for name, values in samples.items():
        median = statistics.median(values)
        spread = f"({min(values):.3f}–{max(values):.3f})"
        print(f"{name:<40}{median:>8.3f} s {spread}{median / base:>8.2f}x import anthropic")


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


def bench_writer(workdir: Path, n: int = 2000) -> None:
    """Rows a ledger's writer commits per second while the calling thread queues ``n``,
    the process otherwise idle and with another thread busy in Python: a group as one
    statement (SQLite) or one round trip (PostgreSQL, when ``CANNY_TEST_POSTGRES_DSN`` names
    a server) against the statement-by-statement path it replaced (``write_all`` off). A
    thread busy in Python keeps the interpreter lock, and the writer waits for it after
    every statement it runs."""
    import os
    import threading
    import uuid
    from datetime import UTC, datetime
    from decimal import Decimal

    from bench_budget import fresh_ledger

    from canny.ledger import AttemptRecord, open_for_calls
    from canny.usage import Usage

    now = datetime.now(UTC)

    def row(i: int) -> AttemptRecord:
        return AttemptRecord(
            call_id=f"call_{i}", attempt=1, started_at=now, ended_at=now, model=MODEL, outcome="ok",
            usage=Usage(input=10, output=2), cost_usd=Decimal("0.00006"),
        )  # fmt: skip

    def rate(url: str | None, grouped: bool, busy: bool) -> float:
        stop = threading.Event()

        def spin() -> None:
            while not stop.is_set():
                sum(range(100))

        with fresh_ledger(url, workdir, f"writer_{uuid.uuid4().hex[:8]}") as where:
            ledger = open_for_calls(where)
            if not grouped:
                ledger.write_all = lambda ops: False  # type: ignore[attr-defined]  # the path before
            spinner = threading.Thread(target=spin, daemon=True)
            if busy:
                spinner.start()
            try:
                start = time.perf_counter()
                for i in range(n):
                    ledger.record(row(i))
                ledger.flush()  # type: ignore[attr-defined]
                return n / (time.perf_counter() - start)
            finally:
                stop.set()
                if busy:
                    spinner.join()
                ledger.close()

    dsn = os.environ.get("CANNY_TEST_POSTGRES_DSN", "")
    targets: list[tuple[str, str | None]] = [("SQLite", None)] + ([("PostgreSQL", dsn)] if dsn else [])
    print(f"\n== rows the ledger's writer commits per second, {n:,} queued; before (statement by statement) / now")
    for name, url in targets:
        for busy in (False, True):
            before, after = rate(url, False, busy), rate(url, True, busy)
            state = "another thread busy" if busy else "process idle"
            print(f"{name:10} {state:20} {before:>9,.0f} / {after:>9,.0f} rows/s  ({after / before:.1f}x)")


@contextlib.contextmanager
def served_in_process(workdir: Path) -> Iterator[str]:
    """The emulator in a process of its own (``canny emulator serve``), as the real API is
    on another machine: its work does not share this process's interpreter lock with the
    client under test. Yields its base URL."""
    port_file = workdir / "emulator.port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "canny", "emulator", "serve", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator process did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and runs")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per run (default 150; --quick 40)")
    parser.add_argument("--runs", type=int, help="runs, each giving one median per variant (default 3)")
    parser.add_argument("--calls", action="store_true", help="only the per-call and throughput figures")
    parser.add_argument("--writer", action="store_true", help="only the ledger writer's rows per second")
    parser.add_argument(
        "--emulator",
        choices=("process", "thread"),
        default="process",
        help="where the emulator of the per-call and throughput figures runs (default: its own process, "
        "like a remote API; thread: in this process, sharing its interpreter lock)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (40 if args.quick else 150)
    runs = args.runs or 3
    import anthropic

    import canny
    from canny.emulator import serve_in_thread

    print(f"canny {canny.__version__} · anthropic {anthropic.__version__} · Python {sys.version.split()[0]}")
    print(f"{runs} runs × {rounds} interleaved rounds; ratios are medians of the runs' ratios (min–max)")
    print(f"emulator for the per-call figures: {args.emulator}")
    with tempfile.TemporaryDirectory() as tmp, serve_in_thread() as emu:
        workdir = Path(tmp)
        if args.writer:
            bench_writer(workdir)
            return
        with contextlib.ExitStack() as stack:
            base_url = stack.enter_context(served_in_process(workdir)) if args.emulator == "process" else emu.base_url
            bench_calls(base_url, rounds, runs, workdir)
            bench_throughput(base_url, max(5, rounds // 15), runs, workdir)
        if args.calls:
            return
        bench_cold_start(5 if args.quick else 11, workdir)
        lost = bench_retry(emu)
        print("\n== retry: 429 with retry-after: 1, then 200")
        print(f"total {lost:.3f} s; over the 1 s minimum by {(lost - 1) * 100:.1f}% (target within 10%)")
        rows, distinct, elapsed = bench_concurrency(emu, workdir)
        print("\n== 64 concurrent async streams into one SQLite ledger")
        print(f"rows {rows}, distinct (call, attempt) {distinct}, expected 64 · {elapsed:.2f} s")
        bench_writer(workdir)


if __name__ == "__main__":
    main()
