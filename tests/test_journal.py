"""The journal (canny.ledger.journal): rows wait to be committed in groups, and a process
killed before its writer committed them leaves them in its journal, written into the
ledger by the next client that opens it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from canny.errors import CannyWarning
from canny.ledger import AttemptRecord, journal, open_for_calls, open_ledger, writer
from canny.ledger._sql import _inflight_params, _row_params
from canny.usage import Usage
from tests.conftest import CANARY_KEY
from tests.test_ledger_contract import BACKENDS, fresh_target

MODEL = "claude-sonnet-4-6"
ROOT = Path(__file__).resolve().parent.parent


def _record(call_id: str, **changes: Any) -> AttemptRecord:
    now = datetime(2026, 12, 4, 12, 0, 0, 123456, tzinfo=UTC)
    record = AttemptRecord(
        call_id=call_id, attempt=1, started_at=now, ended_at=now + timedelta(seconds=2), model=MODEL,
        outcome="ok", usage=Usage(input=10, output=2, cache_read=5), cost_usd=Decimal("0.000061"),
        price_version="2026-11-01", streamed=True, project="alpha", tags=("nightly", "ünï"),
        status_code=200, stop_reason="end_turn",
    )  # fmt: skip
    return replace(record, **changes)


def _journals(home: Path) -> list[str]:
    directory = home / "journal"
    return sorted(os.listdir(directory)) if directory.exists() else []


def _ok_ids(where: str) -> list[str]:
    with closing(open_ledger(where)) as reader:
        return sorted(r.call_id for r in reader.records() if r.outcome == "ok")


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh ledger: a SQLite file, or a new schema in the test PostgreSQL database."""
    with fresh_target(request.param, tmp_path / "ledger.db") as where:
        yield where


def test_a_journal_line_gives_back_the_record_it_was_made_from() -> None:
    """Every field survives the journal: times to the microsecond, exact money, usage, tags, text."""
    records = [
        _record("plain"),
        _record("unpriced", cost_usd=None, extra={"unpriced": "no price for this model"}),
        _record(
            "full",
            first_token_at=datetime(2026, 12, 4, 12, 0, 1, 5, tzinfo=UTC),
            prompt_text='[{"role":"user","content":"héllo \\u2028 ☃"}]',
            response_text="résumé\nline two",
            session_id="sess_1",
            request_id="req_011CZ",
            batch=True,
            max_tokens=1024,
            usage=Usage(input=1, cache_write_5m=2, cache_write_1h=3, cache_read=4, output=5, web_search_requests=6),
            extra={"input_tokens": "estimated"},
        ),
    ]
    for record in records:
        assert journal.decode(journal.encode(_row_params(record))) == record
    lease = datetime(2026, 12, 4, 12, 30, tzinfo=UTC)
    in_flight = _inflight_params(records[0], lease, 7)
    assert journal.decode(journal.encode(in_flight, "begin")) == in_flight


def test_a_line_that_is_not_a_journal_line_is_refused() -> None:
    """Lines of another version, kind or length, or not JSON, raise ValueError."""
    good = journal.encode(_row_params(_record("x")))
    for line in (b"garbage\n", b"[2" + good[2:], b'[1,"b"' + good[6:], b"[1,2,3]\n", b"{}\n"):
        with pytest.raises(ValueError, match=r"journal line|Expecting|Extra data"):
            journal.decode(line)


def test_rows_wait_for_their_group_and_are_committed_without_a_flush(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows journaled within GROUP_SECONDS are committed together, by the writer's own clock."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 2.0)
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        for n in range(20):
            ledger.record(_record(f"call_{n}"))
        assert _count(path) == 0  # waiting for the group, safe in the journal meanwhile
        assert any(os.path.getsize(clean_env / "journal" / name) > 0 for name in _journals(clean_env))
        deadline = time.monotonic() + 10
        while _count(path) < 20 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _count(path) == 20
    finally:
        ledger.close()


def _count(path: Path) -> int:
    """Rows as another connection sees them (not through canny, so no writer is awaited)."""
    with closing(sqlite3.connect(path)) as conn:
        (n,) = conn.execute("SELECT count(*) FROM attempts").fetchone()
    return int(n)


@pytest.fixture
def held(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``<CANNY_HOME>/ledger.db`` opened for calls, its groups never due: only flush() or close() commits."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    ledger = open_for_calls(clean_env / "ledger.db")
    yield ledger
    ledger.close()


def test_close_commits_the_rows_and_removes_the_journal(clean_env: Path, held: Any) -> None:
    """close() commits what waits for its group and leaves no journal file behind."""
    for n in range(5):
        held.record(_record(f"call_{n}"))
    assert _journals(clean_env)
    held.close()
    assert _count(clean_env / "ledger.db") == 5
    assert _journals(clean_env) == []


def test_a_live_processs_journal_is_left_alone(clean_env: Path, held: Any) -> None:
    """Recovery takes only journals no process holds: a running writer's rows are its own to commit."""
    path = clean_env / "ledger.db"
    for n in range(5):
        held.record(_record(f"call_{n}"))
    taken: list[AttemptRecord] = []

    class Other:  # another ledger object would read this process's own writes first
        location = str(path)

        def record_all(self, records: list[AttemptRecord]) -> None:
            taken.extend(records)

    assert journal.recover(Other()) == 0
    assert taken == []
    assert _count(path) == 0
    held.close()
    assert _count(path) == 5


#: The child: records ROWS rows, which wait for a group that never comes, then says DONE.
CHILD = """
import sys, time
from canny.ledger import open_for_calls, writer
from tests.test_journal import _record
writer.GROUP_SECONDS = 3600.0
ledger = open_for_calls(sys.argv[1])
for n in range(int(sys.argv[2])):
    ledger.record(_record(f"call_{n}"))
print("DONE", flush=True)
time.sleep(600)
"""


def _run_and_kill(code: str, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """Run ``code`` in a child until it prints DONE, then kill it with SIGKILL; return the
    lines it printed before DONE."""
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env or dict(os.environ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    said: list[str] = []
    watchdog = threading.Timer(60, proc.kill)  # a child that never says DONE ends the wait
    watchdog.start()
    try:
        while not said or said[-1] != "DONE":
            line = proc.stdout.readline()
            if not line:
                proc.kill()
                _, err = proc.communicate()
                pytest.fail(f"the child never said DONE: {said!r} {err[-2000:]}")
            said.append(line.strip())
    finally:
        watchdog.cancel()
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()
    return said[:-1]


def test_rows_of_a_process_killed_before_its_commit_come_back_from_its_journal(clean_env: Path, where: str) -> None:
    """kill -9 before the writer committed: the next open_for_calls writes every row, exactly, once."""
    _run_and_kill(CHILD, where, "40")
    assert _ok_ids(where) == []  # nothing was committed: only the journal holds them
    assert len(_journals(clean_env)) == 1
    reopened = open_for_calls(where)
    reopened.close()
    ids = _ok_ids(where)
    assert ids == sorted(f"call_{n}" for n in range(40))
    with closing(open_ledger(where)) as reader:
        first = next(r for r in reader.records() if r.call_id == "call_0")
    assert first == _record("call_0")
    assert _journals(clean_env) == []
    open_for_calls(where).close()  # nothing left to recover, nothing doubled
    assert _ok_ids(where) == ids


#: A client's calls through the emulator: N calls, then DONE, killed before any group commit.
CLIENT_CHILD = f"""
import sys, time, json
from canny.client import Client
from canny.ledger import writer
writer.GROUP_SECONDS = 3600.0
url, ledger, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = Client(base_url=url, ledger=ledger, model="{MODEL}")
results = []
for i in range(n):
    with client.stream("count to three", max_tokens=16) as stream:
        for _ in stream:
            pass
    r = stream.result
    results.append([r.call_id, str(r.cost), r.usage.output, r.outcome])
print(json.dumps(results), flush=True)
print("DONE", flush=True)
time.sleep(600)
"""


def test_a_killed_clients_finished_calls_keep_their_whole_rows(emulator: Any, run_id: str, clean_env: Path) -> None:
    """Calls that returned before kill -9 are on the record with their output and cost, not as lost rows."""
    path = clean_env / "ledger.db"
    env = {**os.environ, "ANTHROPIC_API_KEY": CANARY_KEY}
    url = emulator.url_for(*["ok"] * 12, run=run_id)
    [results_line] = _run_and_kill(CLIENT_CHILD, url, str(path), "12", env=env)
    import json

    results = json.loads(results_line)
    with closing(open_ledger(path)) as reader:
        assert len(list(reader.records())) < 12  # the last calls' rows were still waiting for their group
    open_for_calls(path).close()
    with closing(open_ledger(path)) as reader:
        rows = {r.call_id: r for r in reader.records()}
        assert reader.in_flight() == []  # type: ignore[attr-defined]
    assert len(rows) == 12
    for call_id, cost, output, outcome in results:
        assert rows[call_id].outcome == outcome != "lost"
        assert rows[call_id].usage.output == output > 0
        assert str(rows[call_id].cost_usd) == cost
    for name in os.listdir(clean_env / "journal") if (clean_env / "journal").exists() else []:
        assert CANARY_KEY not in (clean_env / "journal" / name).read_text()


def journals_of(home: Path, where: str) -> tuple[Path, str]:
    """Open the ledger at ``where`` once (it exists, nothing to recover), and give the
    journal directory under ``home`` and the prefix of that ledger's journal names."""
    from canny.ledger.spool import location_of

    open_for_calls(where).close()
    directory = home / "journal"
    directory.mkdir(exist_ok=True)
    return directory, journal._prefix(location_of(where))


def test_unreadable_lines_are_set_aside_and_the_rest_recovered(clean_env: Path) -> None:
    """A dead journal with a garbage line and a torn last line: good rows written, the rest in .bad, warned."""
    path = clean_env / "ledger.db"
    directory, prefix = journals_of(clean_env, str(path))
    dead = directory / f"{prefix}.999999.dead.0.jsonl"
    good = [journal.encode(_row_params(_record(f"call_{n}"))) for n in range(3)]
    dead.write_bytes(good[0] + b"garbage\n" + good[1] + good[2][:40])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        open_for_calls(path).close()
    assert _ok_ids(str(path)) == ["call_0", "call_1"]
    assert not dead.exists()
    bad = dead.with_suffix(".bad").read_bytes()
    assert bad == b"garbage\n" + good[2][:40] + b"\n"
    assert any(issubclass(w.category, CannyWarning) and "unreadable" in str(w.message) for w in caught)


def test_without_a_usable_journal_rows_are_committed_at_once(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Where no journal can be written (its directory is a file), a row does not wait for a group."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    (clean_env / "journal").write_text("not a directory")
    path = tmp_path / "ledger.db"
    ledger = open_for_calls(path)
    try:
        ledger.record(_record("call_0"))
        deadline = time.monotonic() + 10
        while _count(path) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _count(path) == 1
    finally:
        ledger.close()


def test_a_journal_file_is_private(clean_env: Path, held: Any) -> None:
    """Journal files are readable by their owner only (they may hold prompts when content is logged)."""
    held.record(_record("call_0"))
    names = _journals(clean_env)
    assert names
    for name in names:
        assert (clean_env / "journal" / name).stat().st_mode & 0o077 == 0


def test_doctor_and_report_count_the_rows_a_killed_process_left(clean_env: Path) -> None:
    """`canny doctor` and `canny report` say how many journaled rows wait; after the next open, none."""
    from click.testing import CliRunner

    from canny.cli import main

    target = str(clean_env / "ledger.db")  # the default ledger
    _run_and_kill(CHILD, target, "7")
    assert journal.waiting(target) == 7
    runner = CliRunner()
    doctor = runner.invoke(main, ["doctor", "--offline"])
    assert f"journal: 7 row(s) of ended processes wait in their journals in {clean_env / 'journal'}" in doctor.stdout
    assert "other ledgers" not in doctor.stdout
    report = runner.invoke(main, ["report"])
    assert report.exit_code == 0
    assert [line for line in report.stderr.splitlines() if "journal" in line] == [
        f"canny: 7 row(s) of ended processes wait in their journals in {clean_env / 'journal'}; "
        "they go into the ledger the next time a call opens it"
    ]
    open_for_calls(target).close()
    assert journal.waiting(target) == 0
    assert "journal" not in runner.invoke(main, ["report"]).stderr


def test_doctor_counts_the_journals_left_for_other_ledgers(clean_env: Path, tmp_path: Path) -> None:
    """`canny doctor` counts the journals ended processes left for other ledgers, which no open of its ledger writes."""
    from click.testing import CliRunner

    from canny.cli import main

    other = str(tmp_path / "scratch.db")
    _run_and_kill(CHILD, other, "3")
    runner = CliRunner()
    doctor = runner.invoke(main, ["doctor", "--offline"])
    assert doctor.exit_code == 0, doctor.output
    assert (
        f"ok   journal: 1 journal file(s) of ended processes wait for other ledgers in {clean_env / 'journal'}"
        in doctor.stdout
    )
    assert "row(s) of ended processes" not in doctor.stdout  # none for the configured ledger
    open_for_calls(other).close()
    assert "other ledgers" not in runner.invoke(main, ["doctor", "--offline"]).stdout


#: The child: an attempt in flight against a slow API, journaled, then killed.
IN_FLIGHT_CHILD = """
import sys, time
from datetime import UTC, datetime, timedelta
from canny.ledger import open_for_calls, writer
from tests.test_journal import _record
writer.GROUP_SECONDS = 3600.0
ledger = open_for_calls(sys.argv[1])
now = datetime.now(UTC)
record = _record("slow_call", outcome="lost", started_at=now, ended_at=now)
ledger.begin_attempt(record, lease_until=now + timedelta(minutes=20))
print("DONE", flush=True)
time.sleep(600)
"""


def test_a_killed_processs_attempt_in_flight_comes_back_and_is_lost_at_its_lease_end(
    clean_env: Path, where: str
) -> None:
    """A journaled row in flight is recovered as a row in flight, with its lease; at lease end, a `lost` row."""
    _run_and_kill(IN_FLIGHT_CHILD, where)
    with closing(open_ledger(where)) as reader:
        assert reader.in_flight() == []  # type: ignore[attr-defined]
    open_for_calls(where).close()
    with closing(open_ledger(where)) as reader:
        [row] = reader.in_flight()  # type: ignore[attr-defined]
        assert (row.call_id, row.usage.input, row.project) == ("slow_call", 10, "alpha")
        started = row.started_at
        assert reader.sweep_lost(now=started + timedelta(minutes=19)) == 0  # type: ignore[attr-defined]
        assert reader.sweep_lost(now=started + timedelta(minutes=21)) == 1  # type: ignore[attr-defined]
        [lost] = list(reader.records())
    assert (lost.call_id, lost.outcome, lost.ended_at) == ("slow_call", "lost", started + timedelta(minutes=20))
    assert _journals(clean_env) == []


def _unclosed_worker(path: str, n: int) -> None:
    """A multiprocessing worker that records rows and returns without closing its ledger."""
    ledger = open_for_calls(path)
    for i in range(n):
        ledger.record(_record(f"{os.getpid()}_{i}"))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_multiprocessing_workers_commit_their_rows_before_join_returns(clean_env: Path) -> None:
    """A worker forked by multiprocessing (it ends with os._exit, no atexit) commits its rows as it ends."""
    import multiprocessing

    path = str(clean_env / "ledger.db")
    open_for_calls(path).close()
    context = multiprocessing.get_context("fork")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        workers = [context.Process(target=_unclosed_worker, args=(path, 5)) for _ in range(3)]
        for worker in workers:
            worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert _count(Path(path)) == 15
    assert _journals(clean_env) == []


#: The child: a journaled row in flight, then its attempt is never sent after all (forgotten).
FORGOTTEN_CHILD = """
import sys, time
from datetime import UTC, datetime, timedelta
from canny.ledger import open_for_calls, writer
from tests.test_journal import _record
writer.GROUP_SECONDS = 3600.0
ledger = open_for_calls(sys.argv[1])
now = datetime.now(UTC)
ledger.begin_attempt(_record("kept", started_at=now, ended_at=now), lease_until=now + timedelta(minutes=20))
ledger.begin_attempt(_record("unsent", started_at=now, ended_at=now), lease_until=now + timedelta(minutes=20))
ledger.forget_attempt("unsent", 1)
print("DONE", flush=True)
time.sleep(600)
"""


def test_a_row_in_flight_forgotten_before_the_kill_does_not_come_back(clean_env: Path) -> None:
    """An attempt never sent (its row in flight forgotten) leaves nothing after kill -9 and recovery."""
    path = str(clean_env / "ledger.db")
    _run_and_kill(FORGOTTEN_CHILD, path)
    open_for_calls(path).close()
    with closing(open_ledger(path)) as reader:
        assert [row.call_id for row in reader.in_flight()] == ["kept"]  # type: ignore[attr-defined]
    assert _journals(clean_env) == []
