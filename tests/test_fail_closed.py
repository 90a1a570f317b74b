"""Fail closed (issue 8): no call is sent that is not on the record, and no row is recorded twice.

The fault matrix: {ledger corrupt, read-only, locked past the busy timeout, PostgreSQL
down} x {no budget, a daily budget} x {Client.stream, Client.create, canny.meter}. A ledger
that cannot be opened, or budgets that cannot be checked, refuse the call before it is
sent (LedgerUnavailable, exit 9); a row that cannot be written after a billed call waits
in the spool and lands in the ledger exactly once on the next open.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import pytest
from click.testing import CliRunner

import canny
from canny import errors
from canny.cli._exit_codes import exit_code_for
from canny.client import Client
from canny.errors import CannyWarning
from canny.ledger import open_ledger
from canny.ledger.spool import pending, spool_path
from canny.ledger.sqlite import SQLiteLedger
from tests.conftest import CANARY_KEY

MODEL = "claude-sonnet-4-6"
FAULTS = ("corrupt", "read_only", "locked", "postgres_down")
PATHS = ("stream", "create", "meter")


@pytest.fixture(autouse=True)
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite waits 0.2 s (not 10 s) for a lock in these tests."""
    monkeypatch.setattr(SQLiteLedger.__init__, "__kwdefaults__", {"busy_timeout": 0.2, "read_only": False})


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Broken:
    """A ledger target with one fault; ``sent_ok`` says whether a call may go out (and be spooled)."""

    target: str
    sent_ok: bool = False
    holder: sqlite3.Connection | None = None
    secrets: list[str] = field(default_factory=list)

    def release(self) -> None:
        if self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()
            self.holder = None


def _prepared(path: Path) -> None:
    """A real, migrated ledger (budget tables included) at ``path``."""
    from canny.budget import stored_budgets

    ledger = open_ledger(path)
    stored_budgets(ledger)
    ledger.close()


@contextmanager
def _fault(kind: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Broken]:
    path = home / "ledger.db"
    if kind == "corrupt":
        path.write_bytes(b"this is not a SQLite database\n" * 200)
        broken = Broken(str(path))
    elif kind == "read_only":
        _prepared(path)
        path.chmod(0o444)
        if os.geteuid() == 0:  # root ignores file modes: fail the way a read-only file does
            real_open = os.open

            def read_only_open(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
                if Path(file) == path and flags & (os.O_WRONLY | os.O_RDWR):
                    raise PermissionError(13, "Permission denied", str(file))
                return real_open(file, flags, *args, **kwargs)

            def read_only_access(file: Any, mode: int, *args: Any, **kwargs: Any) -> bool:
                return not (Path(file) == path and mode & os.W_OK) and real_access(file, mode, *args, **kwargs)

            real_access = os.access
            monkeypatch.setattr(os, "open", read_only_open)
            monkeypatch.setattr(os, "access", read_only_access)
        broken = Broken(str(path))
    elif kind == "locked":
        _prepared(path)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process writing, far beyond the busy timeout
        # Readers still get in (WAL): the ledger opens, a budget cannot be reserved, a row cannot be written.
        broken = Broken(str(path), sent_ok=True, holder=holder)
    else:
        password = "pw-CANARY-ledger-secret"
        broken = Broken(f"postgresql://canny:{password}@127.0.0.1:{_closed_port()}/canny", secrets=[password])
    monkeypatch.setenv("CANNY_LEDGER", broken.target)
    try:
        yield broken
    finally:
        broken.release()


def _with_budget(home: Path) -> None:
    (home / "config.toml").write_text('[budget]\nday = "5"\n', encoding="utf-8")


def _call(path: str, base_url: str) -> None:
    if path == "meter":
        with anthropic.Anthropic(api_key=CANARY_KEY, base_url=base_url, max_retries=0) as sdk:
            metered = canny.meter(sdk)
            try:
                metered.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}])
            finally:
                # Rows are written behind the call; a row that could not be written is
                # reported at the meter's next use or when it closes.
                for middleware in metered.middleware:
                    if isinstance(middleware, canny.Meter):
                        middleware.close()
        return
    with Client(api_key=CANARY_KEY, base_url=base_url, model=MODEL) as client:
        if path == "create":
            client.create("hello", max_tokens=64)
        else:
            for _ in client.stream("hello", max_tokens=64):
                pass


def _rows(target: str) -> list[Any]:
    ledger = open_ledger(target)
    try:
        return list(ledger.records())
    finally:
        ledger.close()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("budget", [False, True], ids=["no-budget", "daily-budget"])
@pytest.mark.parametrize("kind", FAULTS)
def test_fault_matrix_nothing_sent_without_a_record(
    kind: str,
    budget: bool,
    path: str,
    emulator: Any,
    run_id: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever the ledger fault, a call is either refused before sending or recorded (via the spool) exactly once."""
    if budget:
        _with_budget(clean_env)
    base_url = emulator.url_for("ok", run=run_id)
    with _fault(kind, clean_env, monkeypatch) as broken:
        location = broken.target.replace(broken.secrets[0], "****") if broken.secrets else broken.target
        if broken.sent_ok and not budget:
            with pytest.warns(CannyWarning, match="waits in"):
                _call(path, base_url)
            assert pending(location) == 1
        else:
            with pytest.raises(errors.LedgerUnavailable) as caught:
                _call(path, base_url)
            message = str(caught.value)
            assert location in message
            assert all(secret not in message + caught.value.hint for secret in broken.secrets)
            assert exit_code_for(caught.value) == 9
    sent = len(emulator.requests(run=run_id))
    if kind == "locked":  # the lock is gone: the spool lands, once, on the next open
        assert sent == (0 if budget else 1)
        with Client(api_key=CANARY_KEY, base_url=base_url) as client:
            assert client.ledger is not None
        rows = _rows(broken.target)
        assert len(rows) == sent
        assert pending(location) == 0
        with Client(api_key=CANARY_KEY, base_url=base_url) as client:
            assert client.ledger is not None
        assert len(_rows(broken.target)) == sent  # a second open records nothing twice
    else:
        assert sent == 0


def test_no_ledger_is_the_way_to_call_without_one(
    emulator: Any, run_id: str, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ledger=False, and a meter with ledger=False, still call with a corrupt ledger configured."""
    base_url = emulator.url_for("ok", "ok", run=run_id)
    with _fault("corrupt", clean_env, monkeypatch):
        with Client(api_key=CANARY_KEY, base_url=base_url, model=MODEL, ledger=False) as client:
            assert client.create("hello", max_tokens=64).text
        with anthropic.Anthropic(api_key=CANARY_KEY, base_url=base_url) as sdk:
            canny.meter(sdk, ledger=False).messages.create(
                model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hello"}]
            )
    assert len(emulator.requests(run=run_id)) == 2


def test_ledger_that_opens_later_is_used(emulator: Any, run_id: str, clean_env: Path) -> None:
    """A refused open is tried again on the next call: once the ledger is fixed, calls are recorded."""
    path = clean_env / "ledger.db"
    path.write_bytes(b"garbage" * 500)
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id), model=MODEL, ledger=path) as client:
        with pytest.raises(errors.LedgerUnavailable):
            client.create("hello", max_tokens=64)
        path.unlink()
        result = client.create("hello", max_tokens=64)
    assert [r.call_id for r in _rows(str(path))] == [result.call_id]


class LockedAfterOpen:
    """Holds an exclusive lock on a SQLite ledger from outside, as another process would."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)

    def __enter__(self) -> LockedAfterOpen:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def _second_call(client: Client, path: str) -> Any:
    if path == "create":
        return client.create("second", max_tokens=64)
    stream = client.stream("second", max_tokens=64)
    "".join(stream)
    return stream.result


@pytest.mark.parametrize("path", ["stream", "create"])
def test_row_that_cannot_be_written_is_spooled_and_lands_once(
    path: str, emulator: Any, run_id: str, clean_env: Path
) -> None:
    """The ledger locks mid-run: the billed attempt is spooled (fsync'd), then written exactly once on the next open."""
    target = clean_env / "ledger.db"
    base_url = emulator.url_for("ok", "ok", run=run_id)
    with Client(api_key=CANARY_KEY, base_url=base_url, model=MODEL, ledger=target) as client:
        first = client.create("first", max_tokens=64)
        client.flush()  # the first row is in before the ledger locks
        with LockedAfterOpen(target):
            second = _second_call(client, path)
            with pytest.warns(CannyWarning, match="waits in"):
                client.flush()  # rows are written behind the call: the write happens while locked
    assert pending(str(target)) == 1
    assert [r.call_id for r in _rows(str(target))] == [first.call_id]  # open_ledger alone does not drain
    with Client(api_key=CANARY_KEY, base_url=base_url, ledger=target) as client:
        assert client.ledger is not None  # the next open writes the spooled row
    rows = _rows(str(target))
    assert [(r.call_id, r.outcome) for r in rows] == [(first.call_id, first.outcome), (second.call_id, second.outcome)]
    assert rows[1].cost_usd == second.cost
    assert rows[1].usage.output == second.usage.output
    assert pending(str(target)) == 0


def test_spooled_row_already_in_the_ledger_is_not_doubled(clean_env: Path) -> None:
    """A drain interrupted after writing (the spool not yet emptied) runs again without doubling a row."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from canny.ledger import AttemptRecord, open_for_calls
    from canny.ledger.spool import spool
    from canny.usage import Usage

    target = str(clean_env / "ledger.db")
    now = datetime.now(UTC)
    record = AttemptRecord(
        call_id="c1", attempt=1, started_at=now, ended_at=now, model=MODEL, outcome="ok",
        cost_usd=Decimal("0.000123"), tags=("a", "b"), extra={"note": "x"}, usage=Usage(input=7),
    )  # fmt: skip
    ledger = open_ledger(target)
    ledger.record(record)
    ledger.close()
    spool(target, record)
    spool(target, record)
    open_for_calls(target).close()
    [row] = _rows(target)
    assert row == record
    assert pending(target) == 0


#: A row as spooled before AttemptRecord had a ``usage`` field: the buckets as ledger columns.
_SPOOLED_LINE = (
    b'{"v":1,"ledger":"/tmp/l.db","call_id":"c1","attempt":1,"started_at":"2026-11-02T09:30:00+00:00",'
    b'"ended_at":"2026-11-02T09:30:00+00:00","model":"claude-sonnet-5-5","outcome":"ok","session_id":null,'
    b'"first_token_at":null,"status_code":null,"error_type":null,"error_code":null,"request_id":null,'
    b'"stop_reason":null,"refusal_category":null,"input_tokens":7,"cache_write_5m_tokens":0,'
    b'"cache_write_1h_tokens":3,"cache_read_tokens":5,"output_tokens":2,"web_search_requests":1,'
    b'"web_fetch_requests":0,"code_execution_requests":0,"cost_usd":"0.25","price_version":null,"batch":false,'
    b'"inference_geo":null,"speed":null,"streamed":true,"endpoint":null,"project":null,"tags":["a"],'
    b'"key_fingerprint":null,"prompt_hash":null,"prompt_text":null,"response_text":null,"extra":{},'
    b'"max_tokens":null,"prefix_hashes":null}\n'
)


def test_a_spooled_line_keeps_its_bytes_and_reads_back_with_its_usage() -> None:
    """A spooled row is written as before (usage as bucket columns) and a line spooled before reads back equal."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from canny.ledger import AttemptRecord
    from canny.ledger.spool import decode, encode
    from canny.usage import Usage

    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    usage = Usage(input=7, cache_write_1h=3, cache_read=5, output=2, web_search_requests=1)
    record = AttemptRecord(
        call_id="c1", attempt=1, started_at=at, ended_at=at, model="claude-sonnet-5-5", outcome="ok",
        usage=usage, cost_usd=Decimal("0.25"), tags=("a",),
    )  # fmt: skip
    assert encode(record, "/tmp/l.db") == _SPOOLED_LINE
    assert decode(_SPOOLED_LINE) == record
    assert decode(_SPOOLED_LINE).usage == usage


def test_spool_is_private_and_torn_lines_are_set_aside(clean_env: Path) -> None:
    """The spool file is 0600; a torn line (a crash mid-write) moves to .bad and the rest still lands."""
    from datetime import UTC, datetime

    from canny.ledger import AttemptRecord, open_for_calls
    from canny.ledger.spool import spool

    target = str(clean_env / "ledger.db")
    now = datetime.now(UTC)
    where = spool(
        target, AttemptRecord(call_id="c2", attempt=1, started_at=now, ended_at=now, model=MODEL, outcome="ok")
    )
    assert where == spool_path(target)
    assert where.stat().st_mode & 0o777 == 0o600
    with where.open("ab") as stream:
        stream.write(b'{"v":1,"call_id":"torn"')
    with pytest.warns(CannyWarning, match="unreadable"):
        open_for_calls(target).close()
    assert [r.call_id for r in _rows(target)] == ["c2"]
    assert where.with_suffix(".bad").read_bytes().startswith(b'{"v":1,"call_id":"torn"')


def test_cli_ask_with_a_broken_ledger_exits_9_with_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`canny ask --offline` with a corrupt ledger: no stdout, one stderr line naming the ledger, exit 9."""
    from canny.cli import main

    bad = clean_env / "ledger.db"
    bad.write_bytes(b"not a database" * 300)
    monkeypatch.setenv("CANNY_LEDGER", str(bad))
    result = CliRunner().invoke(main, ["ask", "--offline", "hello"])
    assert result.exit_code == 9
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"canny: ledger {bad} cannot be opened, so nothing was sent:")
    assert "--no-ledger" in line


def test_cli_doctor_and_report_count_spooled_rows(clean_env: Path) -> None:
    """`canny doctor` and `canny report` say how many spooled rows wait for the ledger."""
    from datetime import UTC, datetime

    from canny.cli import main
    from canny.ledger import AttemptRecord
    from canny.ledger.spool import spool

    target = str(clean_env / "ledger.db")
    open_ledger(target).close()
    now = datetime.now(UTC)
    for attempt in (1, 2):
        spool(
            target, AttemptRecord(call_id="c", attempt=attempt, started_at=now, ended_at=now, model=MODEL, outcome="ok")
        )
    runner = CliRunner()
    doctor = runner.invoke(main, ["doctor", "--offline"])
    assert "2 spooled row(s) wait" in doctor.stdout
    report = runner.invoke(main, ["report"])
    assert report.exit_code == 0
    assert [line for line in report.stderr.splitlines() if "spooled" in line] == [
        f"canny: 2 spooled row(s) wait in {spool_path(target)}; they go into the ledger the next time a call opens it"
    ]


def _spool_many(target: str, home: str, worker: int, count: int) -> None:
    """Child process: spool ``count`` rows for ``target``."""
    from datetime import UTC, datetime

    from canny.ledger import AttemptRecord
    from canny.ledger.spool import spool

    os.environ["CANNY_HOME"] = home
    now = datetime.now(UTC)
    for attempt in range(1, count + 1):
        spool(
            target,
            AttemptRecord(
                call_id=f"w{worker}", attempt=attempt, started_at=now, ended_at=now, model=MODEL, outcome="ok"
            ),
        )


def test_concurrent_spooling_and_draining_lose_and_double_nothing(clean_env: Path) -> None:
    """Four processes spool 25 rows each while the ledger drains the spool: all 100 rows land, each once."""
    import multiprocessing

    from canny.ledger import open_for_calls
    from canny.ledger.spool import drain

    target = str(clean_env / "ledger.db")
    ledger = open_for_calls(target)
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_spool_many, args=(target, str(clean_env), n, 25)) for n in range(4)]
    for worker in workers:
        worker.start()
    while any(worker.is_alive() for worker in workers):
        drain(ledger)
    for worker in workers:
        worker.join()
        assert worker.exitcode == 0
    drain(ledger)
    ledger.close()
    rows = _rows(target)
    assert len(rows) == 100
    assert len({(r.call_id, r.attempt) for r in rows}) == 100
    assert pending(target) == 0
