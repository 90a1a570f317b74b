"""SDK behaviour canny relies on, pinned by tests (the SDK's internals move between releases)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from canny import errors
from canny.client import Client
from canny.config import Timeouts
from tests.conftest import CANARY_KEY, MemoryLedger


def _client(emulator: Any, plan: str, run_id: str, timeouts: Timeouts, ledger: MemoryLedger) -> Client:
    base_url = emulator.url_for(plan, run=run_id)
    return Client(api_key=CANARY_KEY, base_url=base_url, ledger=ledger, timeouts=timeouts, model="sonnet")


def test_sdk_client_never_retries(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """canny builds the SDK with max_retries=0: one HTTP request per canny attempt, even on a 529."""
    client = _client(emulator, "overloaded", run_id, Timeouts(), memory_ledger)
    assert client._sdk().max_retries == 0
    from canny.retry import RetryPolicy

    client.retry_policy = RetryPolicy(max_attempts=1)
    with client, pytest.raises(errors.Overloaded):
        client.create("hi")
    assert len(emulator.requests(run=run_id)) == 1


def test_slow_headers_within_first_event_are_not_cut(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """Waiting for headers is bounded by first_event, not by the shorter idle gap."""
    timeouts = Timeouts(connect=2, first_event=5, idle=0.2, total=30)
    with _client(emulator, "stall_headers;seconds=0.6", run_id, timeouts, memory_ledger) as client:
        result = client.stream("hi").final()
    assert (result.outcome, result.attempts) == ("ok", 1)


def test_idle_gap_applies_to_the_body(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """Once headers arrived, the read timeout is the idle gap: a 10 s stall is cut in well under 2 s."""
    timeouts = Timeouts(connect=2, first_event=30, idle=0.3, total=60)
    client = _client(emulator, "stall;after=1;seconds=10", run_id, timeouts, memory_ledger)
    started = time.monotonic()
    with client, pytest.raises(errors.StreamInterrupted) as info:
        client.stream("hi").final()
    assert time.monotonic() - started < 2.0
    assert isinstance(info.value.__cause__, errors.TimeoutError)
    assert info.value.__cause__.phase == "idle"


def test_total_timeout_cuts_a_trickling_stream(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A stream that never goes idle but runs past `total` is cut by the total timeout."""
    timeouts = Timeouts(connect=2, first_event=5, idle=5, total=0.5)
    client = _client(emulator, "slow;seconds=0.05", run_id, timeouts, memory_ledger)
    with client, pytest.raises(errors.StreamInterrupted) as info:
        client.stream("A long story [[words=400]]").final()
    assert isinstance(info.value.__cause__, errors.TimeoutError)
    assert info.value.__cause__.phase == "total"
