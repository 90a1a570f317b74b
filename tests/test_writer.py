"""Rows written behind the call (canny.ledger.writer): read your own writes, nothing lost at
close or exit, failures spooled and reported in the caller's thread, one commit for many rows."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import warnings
from contextlib import closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from canny import budget
from canny.client import Client
from canny.errors import CannyWarning
from canny.ledger import AttemptRecord, open_for_calls, open_ledger
from canny.ledger.spool import pending
from canny.ledger.writer import Op, _coalesce
from canny.usage import Usage
from tests.conftest import CANARY_KEY

MODEL = "claude-sonnet-4-6"


def _record(call_id: str, attempt: int = 1) -> AttemptRecord:
    now = datetime.now(UTC)
    return AttemptRecord(
        call_id=call_id, attempt=attempt, started_at=now, ended_at=now, model=MODEL, outcome="ok",
        usage=Usage(input=10, output=2), cost_usd=Decimal("0.00006"),
    )  # fmt: skip


def _count(path: Path, table: str = "attempts") -> int:
    """Rows as another connection sees them (not through canny, so nothing is awaited)."""
    with closing(sqlite3.connect(path)) as conn:
        (n,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(n)


def test_client_writes_on_a_thread_of_its_own(emulator: Any, run_id: str, clean_env: Path) -> None:
    """A client's ledger writes behind the call; flush() puts every row on disk for other readers."""
    path = clean_env / "ledger.db"
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", "ok", run=run_id), model=MODEL, ledger=path) as c:
        assert c.ledger is not None and getattr(c.ledger, "_writer", None) is not None
        first = c.create("one", max_tokens=8)
        second = c.create("two", max_tokens=8)
        c.flush()
        assert _count(path) == 2
        assert _count(path, "inflight") == 0
    with closing(open_ledger(path)) as reader:
        assert [r.call_id for r in reader.records()] == [first.call_id, second.call_id]


def test_sync_writes_when_asked(emulator: Any, run_id: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CANNY_LEDGER_WRITES=sync writes each row in the caller's thread, before the call returns."""
    monkeypatch.setenv("CANNY_LEDGER_WRITES", "sync")
    path = clean_env / "ledger.db"
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id), model=MODEL, ledger=path) as c:
        c.create("one", max_tokens=8)
        assert getattr(c.ledger, "_writer", "missing") is None
        assert _count(path) == 1


def test_any_ledger_object_of_the_process_reads_its_own_writes(clean_env: Path) -> None:
    """A second ledger object on the same file waits for the first one's writer before it reads."""
    path = clean_env / "ledger.db"
    writer = open_for_calls(path)
    try:
        for n in range(50):
            writer.record(_record(f"call_{n}"))
        with closing(open_ledger(str(path))) as reader:
            assert len(list(reader.records())) == 50
    finally:
        writer.close()


def test_close_writes_what_is_queued(clean_env: Path) -> None:
    """close() returns only when every queued row is in the ledger."""
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    for n in range(300):
        ledger.record(_record(f"call_{n}"))
    ledger.close()
    assert _count(path) == 300


def test_exit_without_close_still_writes_the_rows(clean_env: Path) -> None:
    """A process that ends without closing its client leaves every row (written at exit)."""
    path = clean_env / "ledger.db"
    code = (
        "import sys\n"
        "from tests.test_writer import _record\n"
        "from canny.ledger import open_for_calls\n"
        "ledger = open_for_calls(sys.argv[1])\n"
        "for n in range(200):\n"
        "    ledger.record(_record(f'call_{n}'))\n"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, cwd=root, env=dict(os.environ), timeout=60)
    assert _count(path) == 200


def test_a_row_the_ledger_refuses_is_spooled_and_reported_in_the_callers_thread(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A locked ledger: the writer spools the row, and the warning appears at the caller's next flush."""
    from canny.ledger.sqlite import SQLiteLedger

    monkeypatch.setattr(SQLiteLedger.__init__, "__kwdefaults__", {"busy_timeout": 0.1, "read_only": False})
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            ledger.record(_record("locked"))
            with pytest.warns(CannyWarning, match="waits in"):
                ledger.flush()  # type: ignore[attr-defined]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert pending(str(path)) == 1
    finally:
        ledger.close()


def test_rows_in_flight_and_their_own_rows_cancel_out_in_one_batch() -> None:
    """A row in flight whose attempt's row is in the same batch is never written, nor a forgotten one."""
    rec = _record("c1")
    lease = datetime.now(UTC) + timedelta(seconds=60)
    batch = [
        Op("begin", None, ("c1", 1), lease, build=lambda: rec),
        Op("begin", None, ("c2", 1), lease, build=lambda: rec),
        Op("record", rec, ("c1", 1)),
        Op("begin", None, ("c3", 1), lease, build=lambda: rec),
        Op("forget", key=("c3", 1)),
        Op("forget", key=("c4", 1)),
    ]
    kept = _coalesce(batch)
    assert [(op.kind, op.key) for op in kept] == [("begin", ("c2", 1)), ("record", ("c1", 1)), ("forget", ("c4", 1))]


def test_many_threads_share_one_writer_without_losing_a_row(clean_env: Path) -> None:
    """Eight threads recording at once: every row lands once, and none stays in flight."""
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    lease = datetime.now(UTC) + timedelta(seconds=60)

    def work(t: int) -> None:
        for n in range(100):
            rec = _record(f"t{t}_{n}")
            ledger.begin_attempt(rec, lease_until=lease)  # type: ignore[attr-defined]
            ledger.record(rec)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    assert _count(path) == 800
    assert _count(path, "inflight") == 0


def test_budget_limits_change_check_ignores_rows_but_sees_limits(clean_env: Path) -> None:
    """The limits' change stamp stays put while rows are written and moves when a limit is set."""
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        before = ledger.change_stamp()  # type: ignore[attr-defined]
        for n in range(20):
            ledger.record(_record(f"call_{n}"))
        ledger.flush()  # type: ignore[attr-defined]
        assert ledger.change_stamp() == before  # type: ignore[attr-defined]
        with closing(open_ledger(path)) as other:  # as another process would
            budget.set_budget(other, period="day", limit="5")
        assert ledger.change_stamp() != before  # type: ignore[attr-defined]
    finally:
        ledger.close()


def test_a_row_in_flight_is_built_only_when_it_is_written(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lazily queued row in flight is never built when its attempt's row comes in the same batch."""
    from canny.ledger import writer

    monkeypatch.setattr(writer, "LINGER_SECONDS", 60.0)  # only the next put or a flush ends the wait
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    built: list[str] = []
    lease = datetime.now(UTC) + timedelta(seconds=60)

    def build(call_id: str) -> Any:
        def make() -> AttemptRecord:
            built.append(threading.current_thread().name)
            return _record(call_id)

        return make

    try:
        for n in range(writer.RECENT_ATTEMPTS):  # attempts as short as a local server's: lingering pays
            ledger.begin_attempt_later(build(f"warm_{n}"), (f"warm_{n}", 1), lease_until=lease)  # type: ignore[attr-defined]
            ledger.record(_record(f"warm_{n}"))
        ledger.flush()  # type: ignore[attr-defined]
        built.clear()
        ledger.begin_attempt_later(build("quick"), ("quick", 1), lease_until=lease)  # type: ignore[attr-defined]
        ledger.record(_record("quick"))  # within the linger: the row in flight cancels out
        ledger.flush()  # type: ignore[attr-defined]
        assert built == []
        ledger.begin_attempt_later(build("slow"), ("slow", 1), lease_until=lease)  # type: ignore[attr-defined]
        ledger.flush()  # type: ignore[attr-defined]
        assert built == ["canny-ledger-writer"]
        assert [r.call_id for r in ledger.in_flight()] == ["slow"]  # type: ignore[attr-defined]
    finally:
        ledger.close()


def test_a_budget_reservation_settles_behind_the_call(emulator: Any, run_id: str, clean_env: Path) -> None:
    """The writer settles a call's reservation after its row: then spent is the call's cost and nothing is held."""
    path = clean_env / "ledger.db"
    with closing(open_ledger(path)) as db:
        budget.set_budget(db, period="day", limit="5")
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id), model=MODEL, ledger=path) as client:
        result = client.create("hello", max_tokens=64)
        client.flush()
        with closing(sqlite3.connect(path)) as conn:
            spent, reserved = conn.execute("SELECT spent_pico, reserved_pico FROM budget_counters").fetchone()
        assert result.cost is not None
        assert (Decimal(spent).scaleb(-12), reserved) == (result.cost, 0)


class _Deadlocking:
    """A ledger whose first transactions lose a deadlock, as PostgreSQL reports it."""

    dialect = "postgres"
    location = "postgresql://example/ledger"

    def __init__(self, losses: int) -> None:
        self.losses = losses
        self.written: list[str] = []

    def transaction(self) -> Any:
        from contextlib import contextmanager

        from canny.errors import LedgerError

        @contextmanager
        def tx() -> Any:
            if self.losses:
                self.losses -= 1
                raise LedgerError("ledger postgresql://example/ledger: deadlock detected DETAIL: ...")
            yield self

        return tx()


def test_a_deadlock_victim_is_written_again(clean_env: Path) -> None:
    """A row whose transaction lost a deadlock is tried again and lands; past the retries it is spooled."""
    from canny.ledger.writer import RETRIES, Writer

    def keep(kept: list[str]) -> Any:
        def spool(op: Op, exc: Exception) -> str:
            kept.append(op.key[0])
            return "spooled"

        return spool

    for losses, landed in ((RETRIES, True), (RETRIES + 1, False)):
        fake = _Deadlocking(losses)
        kept: list[str] = []
        writer = Writer(fake, lambda tx, op: tx.written.append(op.key[0]), keep(kept))  # type: ignore[arg-type,attr-defined]
        writer.put(Op("record", _record("c1"), ("c1", 1)))
        if landed:
            writer.flush()
            assert (fake.written, kept) == (["c1"], [])
        else:
            with pytest.warns(CannyWarning, match="spooled"):
                writer.flush()
            assert (fake.written, kept) == ([], ["c1"])
        writer.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_writes_its_own_rows(clean_env: Path) -> None:
    """A child forked while the parent's writer is busy writes its own rows; the parent's land once."""
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        for n in range(200):
            ledger.record(_record(f"parent_{n}"))
        with warnings.catch_warnings():
            # Python 3.12+ warns that forking a process with threads may deadlock the
            # child: that is what this test checks does not happen.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # the child: its own row, then leave without running the parent's exit
            code = 0
            try:
                ledger.record(_record("child"))
                ledger.close()
            except BaseException as exc:
                import traceback

                (clean_env / "child-error.txt").write_text("".join(traceback.format_exception(exc)))
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        error = clean_env / "child-error.txt"
        assert os.waitstatus_to_exitcode(status) == 0, error.read_text() if error.exists() else ""
    finally:
        ledger.close()
    with closing(open_ledger(path)) as reader:
        ids = [r.call_id for r in reader.records()]
    assert sorted(ids) == sorted([f"parent_{n}" for n in range(200)] + ["child"])


def test_without_short_attempts_a_row_in_flight_is_journaled_and_waits_for_its_group(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no history of short attempts (a remote API), a row in flight is built and journaled at once."""
    from canny.ledger import writer

    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)  # only a flush ends the wait
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        lease = datetime.now(UTC) + timedelta(seconds=60)
        ledger.begin_attempt(_record("remote"), lease_until=lease)  # type: ignore[attr-defined]
        lines = b"".join(p.read_bytes() for p in (clean_env / "journal").iterdir())
        assert lines.startswith(b'[1,"b","remote",1,') and lines.count(b"\n") == 1
        assert _count(path, "inflight") == 0
        ledger.flush()  # type: ignore[attr-defined]
        assert _count(path, "inflight") == 1
    finally:
        ledger.close()


def test_without_a_journal_a_row_in_flight_of_a_long_attempt_is_written_at_once(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no journal can be written, a remote attempt's row in flight does not wait for a group."""
    import time

    from canny.ledger import writer

    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    monkeypatch.setattr(writer, "LINGER_SECONDS", 60.0)  # were it to linger, only a flush would end it
    (clean_env / "journal").write_text("not a directory")
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    try:
        lease = datetime.now(UTC) + timedelta(seconds=60)
        ledger.begin_attempt(_record("remote"), lease_until=lease)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 30
        while _count(path, "inflight") == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _count(path, "inflight") == 1
    finally:
        ledger.close()
