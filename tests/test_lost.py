"""kill -9 leaves a trace: an attempt is on the record from the moment the API accepted it
(``message_start``, or just before a non-streamed send), and when its lease ends it becomes
a ``lost`` row with the reported input tokens and their cost, settling its budget."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import pytest
from click.testing import CliRunner

from canny import budget, reports
from canny._call import CallSpec, lease_for
from canny.cli import main
from canny.client import Client
from canny.config import Timeouts
from canny.ledger import open_ledger
from canny.meter import meter
from canny.pricing import cost
from canny.usage import Usage
from tests.conftest import CANARY_KEY
from tests.test_ledger_contract import BACKENDS, fresh_target

MODEL = "claude-sonnet-4-6"
PROMPT = "Tell me about ledgers, please"
TIMEOUTS = Timeouts(connect=5.0, first_event=120.0, idle=120.0, total=600.0)

#: The child: one call through canny.Client; says TEXT at the first text, SENDING before a
#: non-streamed send, then is killed by the test.
CHILD = f"""
import sys
from canny.client import Client
from canny.config import Timeouts
mode, url, ledger = sys.argv[1:4]
client = Client(base_url=url, ledger=ledger, model="{MODEL}",
                timeouts=Timeouts(connect=5.0, first_event=120.0, idle=120.0, total=600.0))
if mode == "stream":
    with client.stream("{PROMPT}") as stream:
        for text in stream:
            print("TEXT", flush=True)
else:
    print("SENDING", flush=True)
    client.create("{PROMPT}")
"""


def _spawn(mode: str, url: str, ledger: Path | str) -> subprocess.Popen[str]:
    env = {**os.environ, "ANTHROPIC_API_KEY": CANARY_KEY}
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, mode, url, str(ledger)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_for(proc: subprocess.Popen[str], word: str, timeout: float = 60.0) -> None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != word:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the child never said {word}: {line!r} {err[-2000:]}")


def _wait_in_flight(ledger: Path | str, timeout: float = 30.0) -> None:
    """Wait until the child's attempt is on the record as in flight. Rows are written behind
    the call (canny.ledger.writer): the row in flight lands within about a millisecond of
    message_start, on the writer's thread, and a kill in that window is the documented gap."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(open_ledger(ledger)) as reader:
            if reader.in_flight():  # type: ignore[attr-defined]
                return
        time.sleep(0.01)
    pytest.fail("the child's attempt never showed up as in flight")


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    proc.stderr.close()


def _reported_input(emulator: Any, run_id: str) -> int:
    """The input tokens the emulator reports for PROMPT (it is deterministic)."""
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id + "-ref"), ledger=False) as client:
        result = client.create(PROMPT, model=MODEL)
    return result.usage.input


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger: a SQLite file, or a new schema in the test PostgreSQL database."""
    with fresh_target(request.param, tmp_path / "ledger.db") as where:
        yield where


def test_sigkill_mid_stream_leaves_a_lost_row_and_settles_the_budget(emulator: Any, run_id: str, where: str) -> None:
    """A child killed with SIGKILL mid-stream leaves its attempt; at lease end it is `lost`,
    with the reported input tokens and their cost, and the budget holds nothing."""
    path = where
    with open_ledger(path) as ledger:  # type: ignore[attr-defined]
        budget.set_budget(ledger, period="day", limit="5")
    proc = _spawn("stream", emulator.url_for("stall;after=2;seconds=60", run=run_id), path)
    _wait_for(proc, "TEXT")
    _wait_in_flight(path)
    _kill(proc)
    expected = _reported_input(emulator, run_id)

    ledger = open_ledger(path)  # opening sweeps only leases that ended: this one has not
    try:
        assert list(ledger.records()) == []
        (pending,) = ledger.in_flight()  # type: ignore[attr-defined]
        assert (pending.usage.input, pending.usage.output) == (expected, 0)
        lease_end = pending.ended_at
        assert (
            timedelta(0)
            < lease_end - pending.started_at - timedelta(seconds=lease_for(TIMEOUTS))
            < timedelta(seconds=30)
        )
        (line,) = budget.budget_status(ledger, now=pending.started_at)
        assert line.reserved > 0 and line.spent == 0  # the dead call still pins its worst case

        assert ledger.sweep_lost(now=lease_end - timedelta(seconds=1)) == 0  # type: ignore[attr-defined]
        assert ledger.sweep_lost(now=lease_end + timedelta(seconds=1)) == 1  # type: ignore[attr-defined]
        (lost,) = list(ledger.records())
        price = cost(MODEL, Usage(input=expected), at=lost.started_at)
        assert price is not None and price > 0
        assert (lost.outcome, lost.model, lost.usage.input, lost.usage.output) == ("lost", MODEL, expected, 0)
        assert (lost.cost_usd, lost.status_code, lost.streamed) == (price, 200, True)
        assert lost.request_id and lost.prompt_hash
        assert ledger.in_flight() == []  # type: ignore[attr-defined]

        (line,) = budget.budget_status(ledger, now=lost.started_at)
        assert (line.reserved, line.spent) == (Decimal(0), price)  # settled with the billed input
        held, expired, _ = budget.reservations_in_flight(ledger)
        assert (held, expired) == (0, 1)

        report = reports.build_report(ledger, "outcome")
        assert [(row.group, row.failures, row.cost_usd) for row in report.rows] == [("lost", 1, price)]
        if not path.startswith("postgresql"):
            assert CANARY_KEY.encode() not in Path(path).read_bytes()
    finally:
        ledger.close()


def test_sigkill_during_a_non_streamed_call_leaves_the_estimate(emulator: Any, run_id: str, tmp_path: Path) -> None:
    """A non-streamed attempt is on the record while it is sent, with the input estimate."""
    path = tmp_path / "ledger.db"
    url = emulator.url_for("stall_headers;seconds=60", run=run_id)
    proc = _spawn("create", url, path)
    _wait_for(proc, "SENDING")
    deadline = time.monotonic() + 30
    while not emulator.requests(run=run_id) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.requests(run=run_id)
    _kill(proc)

    ask = {"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": PROMPT}]}
    estimate = CallSpec(model=MODEL, params=ask, stream=False).estimated_input_tokens()
    ledger = open_ledger(path)
    try:
        (pending,) = ledger.in_flight()  # type: ignore[attr-defined]
        assert ledger.sweep_lost(everything=True) == 1  # type: ignore[attr-defined]
        (lost,) = list(ledger.records())
        assert lost == replace(pending, ended_at=lost.ended_at)
        assert lost.started_at <= lost.ended_at < pending.ended_at  # a reset ends it now
        assert (lost.outcome, lost.streamed, lost.status_code, lost.usage.output) == ("lost", False, None, 0)
        assert lost.usage.input == estimate  # nothing reported yet: the local estimate
        assert lost.extra["input_tokens"].startswith("estimated")
        assert lost.cost_usd == cost(MODEL, Usage(input=lost.usage.input), at=lost.started_at)
    finally:
        ledger.close()


def test_budget_reset_reservations_records_attempts_in_flight_as_lost(
    emulator: Any, run_id: str, tmp_path: Path
) -> None:
    """`canny budget reset --reservations` turns a killed call's attempt into a lost row now."""
    path = tmp_path / "ledger.db"
    with open_ledger(path) as ledger:  # type: ignore[attr-defined]
        budget.set_budget(ledger, period="month", limit="5")
    proc = _spawn("stream", emulator.url_for("stall;after=1;seconds=60", run=run_id), path)
    _wait_for(proc, "TEXT")
    _wait_in_flight(path)
    _kill(proc)
    result = CliRunner().invoke(main, ["budget", "reset", "--reservations", "-y", "--ledger", str(path)])
    assert result.exit_code == 0, result.stderr
    assert "1 reservation(s) ended, 1 attempt(s) in flight recorded as lost" in result.stderr
    with open_ledger(path) as ledger:  # type: ignore[attr-defined]
        (lost,) = list(ledger.records())
        assert lost.outcome == "lost" and lost.cost_usd and lost.cost_usd > 0
        (line,) = budget.budget_status(ledger, now=lost.started_at)
        assert (line.reserved, line.spent) == (Decimal(0), lost.cost_usd)
    report = CliRunner().invoke(main, ["report", "--by", "outcome", "--ledger", str(path)])
    assert report.exit_code == 0, report.stderr
    assert "lost" in report.stdout


def test_a_finished_call_leaves_nothing_in_flight(emulator: Any, run_id: str, tmp_path: Path) -> None:
    """While a stream runs its attempt is in flight; its final row replaces it, for every attempt."""
    path = tmp_path / "ledger.db"
    url = emulator.url_for("drop;after=0", "ok", "ok", run=run_id)
    ledger = open_ledger(path)
    try:
        with Client(api_key=CANARY_KEY, base_url=url, ledger=ledger, timeouts=TIMEOUTS) as client:
            seen: list[int] = []
            with client.stream(PROMPT, model=MODEL) as stream:
                for _ in stream:
                    seen.append(len(ledger.in_flight()))  # type: ignore[attr-defined]
            assert seen and set(seen) == {1}
            assert ledger.in_flight() == []  # type: ignore[attr-defined]
            client.create(PROMPT, model=MODEL)
        assert ledger.in_flight() == []  # type: ignore[attr-defined]
        assert [r.outcome for r in ledger.records()] == ["error", "ok", "ok"]
    finally:
        ledger.close()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
def test_the_meter_keeps_attempts_in_flight_too(emulator: Any, run_id: str, tmp_path: Path, stream: bool) -> None:
    """canny.meter drives the same CallRun: attempts in flight while running, none after."""
    ledger = open_ledger(tmp_path / "ledger.db")
    ask: dict[str, Any] = {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": PROMPT}]}
    try:
        with anthropic.Anthropic(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id)) as sdk:
            metered = meter(sdk, ledger=ledger)
            if stream:
                seen: list[int] = []
                with metered.messages.stream(**ask) as events:
                    for _ in events.text_stream:
                        seen.append(len(ledger.in_flight()))  # type: ignore[attr-defined]
                assert seen and set(seen) == {1}
            else:
                metered.messages.create(**ask)
        assert ledger.in_flight() == []  # type: ignore[attr-defined]
        (row,) = list(ledger.records())
        assert row.outcome == "ok" and row.streamed is stream
    finally:
        ledger.close()


def test_a_ledger_that_fails_in_flight_does_not_fail_the_call(emulator: Any, run_id: str) -> None:
    """If the row in flight cannot be written, the call goes on and its final row is written."""
    from canny import errors
    from tests.conftest import MemoryLedger

    class Flaky(MemoryLedger):
        def begin_attempt(self, record: Any, **kwargs: Any) -> None:
            raise errors.LedgerError("ledger x: database is locked")

    ledger = Flaky()
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id), ledger=ledger) as client:
        result = client.create(PROMPT, model=MODEL)
        with client.stream(PROMPT, model=MODEL) as stream:
            text = "".join(stream)
    assert result.outcome == "ok" and text
    assert [r.outcome for r in ledger.rows] == ["ok", "ok"]


def test_the_lease_is_the_total_timeout_plus_an_idle_gap_and_a_margin() -> None:
    """An attempt stays in flight for its total timeout, one idle gap and 60 s."""
    assert lease_for(Timeouts()) == 900 + 60 + 60
    assert lease_for(TIMEOUTS) == 600 + 120 + 60


def test_an_attempt_never_sent_leaves_nothing_in_flight(tmp_path: Path) -> None:
    """A non-streamed attempt answered without sending (a later middleware) leaves no row."""
    from canny._call import CallRun

    ask = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": PROMPT}]}
    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        run = CallRun(CallSpec(model=MODEL, params=ask, stream=False), ledger=ledger)
        attempt = run.start_attempt()
        assert len(ledger.in_flight()) == 1  # type: ignore[attr-defined]
        run.not_sent(attempt)
        assert ledger.in_flight() == []  # type: ignore[attr-defined]
        assert ledger.sweep_lost(everything=True) == 0  # type: ignore[attr-defined]
        assert list(ledger.records()) == []
    finally:
        ledger.close()
