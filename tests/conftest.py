"""Shared fixtures: a clean environment for every test, no network but loopback, and
one emulator server for the session."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

CANARY_KEY = "sk-ant-api03-CANARY-0123456789abcdefghijklmnopqrstuvwxyz-TESTONLY"


def transport_error(raised: BaseException | None) -> BaseException | None:
    """The transport error behind what the SDK raised when a stream's connection failed
    mid-body: up to 2.16 the SDK lets the ``httpx2`` error itself escape; from 2.17 it raises
    ``anthropic.APIConnectionError`` (``APITimeoutError`` for a timeout) caused by it."""
    import anthropic

    if isinstance(raised, anthropic.APIConnectionError) and raised.__cause__ is not None:
        return raised.__cause__
    return raised


# Hypothesis on a shared, loaded machine: no per-example deadline (a stalled CPU is not a
# bug), which also lifts the too_slow health check from 1 s to 30 s for the first examples.
# Strategies stay cheap (a few ms per example); no health check is suppressed here.
# The parent is named: under a CI variable Hypothesis makes its own "ci" profile the default,
# which suppresses too_slow, so an implicit parent would make CI differ from a laptop. Examples
# are derandomized everywhere, so a failure on CI replays the same way here.
settings.register_profile(
    "canny",
    parent=settings.get_profile("default"),
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.load_profile("canny")


def pytest_report_header() -> list[str]:
    import sqlite3

    import anthropic

    return [f"anthropic {anthropic.__version__}, sqlite {sqlite3.sqlite_version}"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test starts with no canny/Anthropic settings and its own CANNY_HOME."""
    import os

    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "CANNY_", "CLAUDE_")):
            monkeypatch.delenv(name)
    home = tmp_path / "canny-home"
    home.mkdir()
    monkeypatch.setenv("CANNY_HOME", str(home))
    monkeypatch.setenv("CANNY_NO_KEYRING", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    import sys

    pricing = sys.modules.get("canny.pricing.cost")
    if pricing is not None:  # once-per-process warnings must not leak between tests
        pricing._WARNED.clear()
    return home


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        try:
            loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConnectionRefusedError(f"tests may not reach the network ({host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches anything but loopback (the real API included)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Any]:
    """One emulator for the whole session; tests isolate themselves with url_for(run=...)."""
    from canny.emulator import serve_in_thread

    with serve_in_thread() as emu:
        yield emu


@pytest.fixture
def canary_key() -> str:
    return CANARY_KEY


class MemoryLedger:
    """A ledger that keeps rows in a list (the contract suite covers real backends)."""

    location = "memory"

    def __init__(self) -> None:
        self.rows: list[Any] = []

    def record(self, record: Any) -> None:
        self.rows.append(record)

    def records(self, *, since: Any = None, until: Any = None) -> Iterator[Any]:
        return iter(list(self.rows))

    def close(self) -> None:
        return None


@pytest.fixture
def memory_ledger() -> MemoryLedger:
    return MemoryLedger()


class SleepRecorder:
    """An injectable sleep that records the delays instead of waiting (or waits, scaled)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeper() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def fast_retry(sleeper: SleepRecorder) -> Any:
    """A retry policy that records its delays (in ``sleeper``) instead of sleeping."""
    from canny.retry import RetryPolicy

    return RetryPolicy(sleep=sleeper, rng=lambda: 0.0, max_attempts=5)


@pytest.fixture
def run_id(request: pytest.FixtureRequest) -> str:
    """A run name for emulator.url_for that is unique to this test."""
    import re
    import uuid

    return re.sub(r"[^A-Za-z0-9_.-]", "-", request.node.name)[:90] + "-" + uuid.uuid4().hex[:8]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Any]:
    """A fresh SQLite ledger in the test's temp dir (files may define their own ``ledger``)."""
    from canny.ledger import open_ledger
    from canny.ledger.sqlite import SQLiteLedger

    opened = open_ledger(tmp_path / "ledger.db")
    assert isinstance(opened, SQLiteLedger)
    yield opened
    opened.close()
