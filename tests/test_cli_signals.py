"""SIGTERM, SIGHUP, Ctrl-C and a closed stdout end `canny ask` the same way: the billed
part of the call in one `cancelled` ledger row, the budget settled, no Python noise on
stderr, and exit 143 / 129 / 130 / 141. Real child processes against the emulator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.cli import main
from tests.conftest import CANARY_KEY

POSIX = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
LONG = "A long story [[words=400]]"


def _default_signals() -> None:
    """In the child: start from default dispositions (a background test run ignores SIGINT)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def _spawn(
    args: list[str], env: dict[str, str], preexec: Callable[[], None] = _default_signals
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "canny", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=preexec,  # noqa: PLW1509 - no threads are started before it runs
    )


@pytest.fixture
def budget_home(clean_env: Path) -> Path:
    """A CANNY_HOME with a $5 daily budget, so every call takes a reservation."""
    result = CliRunner().invoke(main, ["budget", "set", "--day", "5"])
    assert result.exit_code == 0, result.stderr
    return clean_env


@pytest.fixture
def env(emulator: Any, run_id: str, budget_home: Path) -> dict[str, str]:
    """The child's environment: a canary key and the emulator, answering slowly."""
    return {
        **os.environ,
        "ANTHROPIC_API_KEY": CANARY_KEY,
        "ANTHROPIC_BASE_URL": emulator.url_for("slow;seconds=0.05", run=run_id),
    }


def _rows(home: Path) -> list[Any]:
    from canny.ledger import open_ledger

    ledger = open_ledger(home / "ledger.db")
    try:
        return list(ledger.records())
    finally:
        ledger.close()


def _assert_settled(home: Path, cost: Decimal) -> None:
    """No reservation is held, and the day's spend is exactly what the ledger row cost."""
    from canny import budget
    from canny.ledger import open_ledger

    ledger = open_ledger(home / "ledger.db")
    try:
        held, _, _ = budget.reservations_in_flight(ledger)
        (status,) = budget.budget_status(ledger)
    finally:
        ledger.close()
    assert held == 0
    assert status.reserved == 0
    assert status.spent == cost


def _assert_quiet(err: str) -> None:
    assert "Traceback" not in err
    assert "Exception ignored" not in err
    assert "please report" not in err
    assert CANARY_KEY not in err


def _assert_one_cancelled_row(home: Path) -> Any:
    (row,) = _rows(home)
    assert row.outcome == "cancelled"
    assert row.usage.output > 0
    assert row.cost_usd is not None and row.cost_usd > 0
    _assert_settled(home, row.cost_usd)
    return row


@POSIX
@pytest.mark.parametrize(
    ("signum", "code", "last_line"),
    [
        (signal.SIGTERM, 143, "canny: stopped by SIGTERM"),
        (signal.SIGHUP, 129, "canny: stopped by SIGHUP"),
        (signal.SIGINT, 130, "canny: interrupted"),
    ],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_signal_mid_stream_bills_a_cancelled_row(
    env: dict[str, str], budget_home: Path, signum: int, code: int, last_line: str
) -> None:
    """A signal after the first text: its exit code, the usage line, one cancelled row, budget settled."""
    proc = _spawn(["ask", LONG], env)
    assert proc.stdout is not None
    first = proc.stdout.read(20)  # text is on screen
    proc.send_signal(signum)
    rest, err_bytes = proc.communicate(timeout=60)
    err = err_bytes.decode()
    assert proc.returncode == code, err
    assert first
    _assert_quiet(err)
    lines = err.splitlines()
    assert lines[-1] == last_line
    assert lines[-2].startswith("[tokens in/out: ")
    row = _assert_one_cancelled_row(budget_home)
    assert f"/{row.usage.output} " in lines[-2]  # the line shows what the row bills
    assert CANARY_KEY.encode() not in first + rest


@POSIX
def test_stdout_closed_mid_stream_is_141_with_a_cancelled_row(env: dict[str, str], budget_home: Path) -> None:
    """`canny ask ... | head -c 20`: exit 141, no BrokenPipeError noise, one cancelled row, budget settled."""
    proc = _spawn(["ask", LONG], env)
    assert proc.stdout is not None
    assert len(proc.stdout.read(20)) == 20
    proc.stdout.close()  # the reader goes away, as `head -c 20` does
    _, err_bytes = proc.communicate(timeout=60)
    err = err_bytes.decode()
    assert proc.returncode == 141, err
    _assert_quiet(err)
    lines = err.splitlines()
    assert lines[-1] == "canny: standard output was closed; the call was cancelled"
    assert lines[-2].startswith("[tokens in/out: ")
    _assert_one_cancelled_row(budget_home)


@POSIX
def test_offline_sigterm_mid_stream_bills_a_cancelled_row(budget_home: Path) -> None:
    """`canny ask --offline` with a slow scripted answer: SIGTERM is exit 143 and one cancelled row."""
    proc = _spawn(["ask", "--offline", LONG + " [[fault=slow;seconds=0.05]]"], dict(os.environ))
    assert proc.stdout is not None
    assert proc.stdout.read(20)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    _assert_quiet(err.decode())
    _assert_one_cancelled_row(budget_home)


@POSIX
def test_a_burst_of_signals_still_writes_exactly_one_row(env: dict[str, str], budget_home: Path) -> None:
    """A burst of SIGTERM / SIGHUP stops the call once (143, or 129 if SIGHUP was pending too), one cancelled row."""
    proc = _spawn(["ask", LONG], env)
    assert proc.stdout is not None
    assert proc.stdout.read(20)
    proc.send_signal(signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGHUP) * 10:
        if proc.poll() is not None:
            break
        proc.send_signal(signum)
        time.sleep(0.002)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (143, 129, -signal.SIGTERM, -signal.SIGHUP), err
    _assert_quiet(err.decode())
    _assert_one_cancelled_row(budget_home)


@POSIX
@pytest.mark.parametrize("flag", ["--no-stream", "--json"])
def test_sigterm_during_a_non_streamed_call(emulator: Any, run_id: str, budget_home: Path, flag: str) -> None:
    """SIGTERM while a non-streamed call waits: exit 143, one cancelled row, reservation released."""
    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": CANARY_KEY,
        "ANTHROPIC_BASE_URL": emulator.url_for("stall_headers;seconds=30", run=run_id),
    }
    proc = _spawn(["ask", flag, "hello"], env)
    deadline = time.monotonic() + 30
    while not emulator.requests(run=run_id) and time.monotonic() < deadline:
        time.sleep(0.02)  # the request is in flight
    assert emulator.requests(run=run_id)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out == b""
    _assert_quiet(err.decode())
    assert err.decode().splitlines()[-1] == "canny: stopped by SIGTERM"
    (row,) = _rows(budget_home)
    assert row.outcome == "cancelled"
    _assert_settled(budget_home, row.cost_usd)


@POSIX
def test_an_ignored_sighup_stays_ignored(emulator: Any, run_id: str, budget_home: Path) -> None:
    """Under `nohup` (SIGHUP ignored) canny does not start listening to it: the answer completes."""

    def nohup() -> None:
        _default_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": CANARY_KEY,
        "ANTHROPIC_BASE_URL": emulator.url_for("slow;seconds=0.01", run=run_id),
    }
    proc = _spawn(["ask", "A short story [[words=40]]"], env, preexec=nohup)
    assert proc.stdout is not None
    assert proc.stdout.read(5)
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    (row,) = _rows(budget_home)
    assert row.outcome == "ok"


def _closed_stdout_run(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run canny with a stdout whose reader has already gone away."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "canny", *args],
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=subprocess.PIPE,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write)
    return proc.returncode, proc.stderr.decode()


@POSIX
@pytest.mark.parametrize("args", [["models"], ["report"], ["ledger", "export"]], ids=" ".join)
def test_other_commands_into_a_closed_pipe_exit_141_quietly(budget_home: Path, args: list[str]) -> None:
    """`canny models | head` and the like: exit 141 and nothing on stderr."""
    assert CliRunner().invoke(main, ["ask", "--offline", "hello"]).exit_code == 0  # rows to print
    code, err = _closed_stdout_run(args, dict(os.environ))
    assert code == 141, err
    assert err == ""


@POSIX
@pytest.mark.parametrize("flag", ["--json", "--no-stream"])
def test_a_finished_call_into_a_closed_pipe_keeps_its_ok_row(budget_home: Path, flag: str) -> None:
    """A non-streamed answer nobody reads: exit 141, the usage line on stderr, one `ok` row."""
    code, err = _closed_stdout_run(["ask", "--offline", flag, "hello"], dict(os.environ))
    assert code == 141, err
    _assert_quiet(err)
    assert err.splitlines()[-1].startswith("[tokens in/out: ")
    (row,) = _rows(budget_home)
    assert row.outcome == "ok"
    _assert_settled(budget_home, row.cost_usd)


class _SignalDuringWrite:
    """A ledger whose row write is hit by a signal halfway through (and is slow to finish)."""

    location = "memory"

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.rows: list[Any] = []

    def record(self, record: Any) -> None:
        signal.raise_signal(self.signum)
        time.sleep(0.1)  # the held-back signal comes back (and is held back again) meanwhile
        self.rows.append(record)

    def records(self, *, since: Any = None, until: Any = None) -> Iterator[Any]:
        return iter(list(self.rows))

    def close(self) -> None:
        return None


def _client(base_url: str, ledger: Any) -> Any:
    from canny.client import Client

    return Client(api_key=CANARY_KEY, base_url=base_url, ledger=ledger)


@POSIX
def test_a_signal_during_a_row_write_waits_for_the_row(emulator: Any, run_id: str) -> None:
    """SIGTERM while the `ok` row is being written: the row is written whole, then the call stops (143)."""
    from canny.cli._signals import Stopped, stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    ledger = _SignalDuringWrite(signal.SIGTERM)
    client = _client(emulator.url_for(run=run_id), ledger)
    with client, pytest.raises(Stopped) as info, stop_on_signals():  # noqa: PT012
        client.create("hello")
        time.sleep(5)  # the held-back signal lands here
    assert info.value.exit_code == 143
    (row,) = ledger.rows
    assert row.outcome == "ok"
    assert signal.getsignal(signal.SIGTERM) == before


@POSIX
def test_a_second_signal_while_the_cancelled_row_is_written_is_ignored(emulator: Any, run_id: str) -> None:
    """SIGTERM stops a stream; a SIGHUP during the `cancelled` row's write neither cuts it nor wins."""
    from canny.cli._signals import Stopped, stop_on_signals

    ledger = _SignalDuringWrite(signal.SIGHUP)
    with _client(emulator.url_for("slow;seconds=0.05", run=run_id), ledger) as client:
        stream = client.stream(LONG)
        with pytest.raises(Stopped) as info, stop_on_signals():  # noqa: PT012
            try:
                for _ in stream:
                    signal.raise_signal(signal.SIGTERM)
            finally:
                stream.close()
    assert info.value.signum == signal.SIGTERM
    (row,) = ledger.rows
    assert row.outcome == "cancelled"
    assert row.usage.output > 0


@POSIX
def test_the_library_installs_no_signal_handler(emulator: Any, run_id: str, memory_ledger: Any) -> None:
    """Importing canny and making a call leave SIGINT, SIGTERM and SIGHUP as they were."""
    names = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = [signal.getsignal(s) for s in names]
    with _client(emulator.url_for(run=run_id), memory_ledger) as client:
        client.create("hello")
        assert "".join(client.stream("hello"))
    assert [signal.getsignal(s) for s in names] == before


@POSIX
def test_stop_on_signals_keeps_an_ignored_signal_ignored_and_restores_the_rest() -> None:
    """A SIG_IGN disposition (nohup) is left alone; the others are back to what they were after the block."""
    from canny.cli._signals import stop_on_signals

    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        before = signal.getsignal(signal.SIGTERM)
        with stop_on_signals():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) != before
        assert signal.getsignal(signal.SIGTERM) == before
    finally:
        signal.signal(signal.SIGHUP, old_hup)
