"""The per-call hot path: the meter reads usage without decoding content events (and
still bills exactly), the price table is cached yet sees an edited file, and a budget set elsewhere applies."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from canny import budget, streaming
from canny.config import load_settings
from canny.ledger import open_ledger
from canny.meter import meter
from canny.pricing import default_table
from canny.streaming import ServerSentEvent
from tests.conftest import CANARY_KEY, MemoryLedger

FIXTURES = Path(__file__).parent / "fixtures"
ASK: dict[str, Any] = {"model": "claude-opus-4-8", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]}


def _events(body: bytes) -> list[bytes]:
    """The body as one chunk per event, as the API sends it."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event.strip()]


def _metered(chunks: list[bytes], ledger: MemoryLedger, **options: Any) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        headers = {"content-type": "text/event-stream", "request-id": "req_hot"}
        return httpx2.Response(200, headers=headers, content=iter(chunks))

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    sdk = anthropic.Anthropic(api_key=CANARY_KEY, base_url="http://127.0.0.1:9", http_client=http, max_retries=0)
    return meter(sdk, ledger=ledger, **options)


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the events the meter decodes (JSON-parses)."""
    import canny.meter as meter_module

    names: list[str] = []
    real = streaming.event_payload

    def counting(event: ServerSentEvent) -> dict[str, Any]:
        names.append(event.event)
        return real(event)

    monkeypatch.setattr(meter_module, "event_payload", counting)
    return names


@pytest.mark.parametrize("split", [True, False], ids=["event-per-chunk", "one-chunk"])
def test_meter_skips_content_events_and_bills_web_search_exactly(split: bool, decoded: list[str]) -> None:
    """Content events after the first text are not decoded; the web-search stream's row is exact."""
    body = (FIXTURES / "web_search_opus48.sse").read_bytes()
    ledger = MemoryLedger()
    with _metered(_events(body) if split else [body], ledger).messages.stream(**ASK) as stream:
        stream.until_done()
    [row] = ledger.rows
    assert (row.usage.input, row.usage.output, row.usage.web_search_requests) == (10682, 510, 1)
    assert (row.outcome, row.stop_reason, row.model) == ("ok", "end_turn", "claude-opus-4-8")
    # Opus 4.8: $5 / MTok input, $25 / MTok output, $10 per 1,000 searches.
    assert row.cost_usd == Decimal("10682") * 5 / 10**6 + Decimal("510") * 25 / 10**6 + Decimal("0.01")
    assert decoded.count("content_block_delta") == 1  # the first text only: its time is first_token_at
    assert {"message_start", "message_delta", "message_stop"} <= set(decoded)
    assert row.first_token_at is not None


def test_meter_skipping_keeps_cache_tokens_exact(decoded: list[str]) -> None:
    """A 1-hour cache write and a cache read are billed from message_start / message_delta as before."""
    body = (FIXTURES / "cache_1h_sonnet46.sse").read_bytes()
    ledger = MemoryLedger()
    ask = {**ASK, "model": "claude-sonnet-4-6"}
    with _metered(_events(body), ledger).messages.stream(**ask) as stream:
        stream.until_done()
    [row] = ledger.rows
    assert (row.usage.input, row.usage.cache_read, row.usage.cache_write_1h, row.usage.output) == (
        1204,
        38912,
        856,
        534,
    )
    # Sonnet 4.6: $3 input, $15 output, $0.30 cache read, $6 1-hour cache write, per MTok.
    expected = (Decimal(1204) * 3 + Decimal(534) * 15 + Decimal(38912) * Decimal("0.3") + Decimal(856) * 6) / 10**6
    assert row.cost_usd == expected


@pytest.mark.parametrize("log_content", [False, True], ids=["skipping", "every-event-decoded"])
def test_a_cut_stream_is_billed_the_same_with_or_without_skipping(log_content: bool) -> None:
    """A stream cut after skipped deltas replays them: the estimate from the text shown is unchanged."""
    body = (FIXTURES / "web_search_opus48.sse").read_bytes()
    chunks = [c for c in _events(body) if not c.startswith((b"event: message_delta", b"event: message_stop"))]
    ledger = MemoryLedger()
    with _metered(chunks, ledger, log_content=log_content).messages.stream(**ASK) as stream:
        stream.until_done()
    [row] = ledger.rows
    shown = stream.current_message_snapshot.content
    text = "".join(block.text for block in shown if block.type == "text")
    assert row.outcome == "interrupted"
    assert row.usage.output == max(3, -(-len(text) // 4))
    assert row.extra.get("output_tokens", "").startswith("estimated")


def test_an_edited_price_file_is_picked_up_on_the_next_call(tmp_path: Path) -> None:
    """The default table is cached, yet a price file added, edited or removed shows at once."""
    home = Path(os.environ["CANNY_HOME"])
    shipped = default_table()
    assert default_table() is shipped  # cached: not rebuilt
    prices = home / "prices.toml"
    prices.write_text('version = "acme-1"\n', encoding="utf-8")
    assert default_table().version.endswith("acme-1")
    prices.write_text('version = "acme-22"\n', encoding="utf-8")
    assert default_table().version.endswith("acme-22")
    prices.unlink()
    assert default_table() is shipped


def test_a_budget_set_by_another_process_is_seen_on_the_next_call(tmp_path: Path) -> None:
    """Budget limits set from another process apply to this process's next call."""
    path = tmp_path / "ledger.db"
    settings = load_settings()
    ledger = open_ledger(path)
    try:
        assert budget.guard_for(ledger, settings) is None
        code = (
            "import sys; from canny import budget; from canny.ledger import open_ledger\n"
            "with open_ledger(sys.argv[1]) as db: budget.set_budget(db, period='day', limit='2.5')\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=dict(os.environ))
        guard = budget.guard_for(ledger, settings)
        assert guard is not None
        [line] = budget.budget_status(ledger)
        assert line.budget.limit == Decimal("2.5")
    finally:
        ledger.close()


@pytest.fixture
def limit_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per read of the stored budget limits."""
    from canny.budget import store

    reads: list[int] = []
    real = store.read_limits

    def counting(ledger: Any) -> list[store.LimitRow]:
        reads.append(1)
        return real(ledger)

    monkeypatch.setattr(store, "read_limits", counting)
    return reads


def test_limits_are_read_once_yet_a_write_by_another_connection_is_seen(tmp_path: Path, limit_reads: list[int]) -> None:
    """Unchanged limits are not read again; a row committed by a plain sqlite3 connection is seen next call."""
    import sqlite3

    path = tmp_path / "ledger.db"
    settings = load_settings()
    with closing(open_ledger(path)) as ledger:
        assert budget.guard_for(ledger, settings) is None
        assert budget.guard_for(ledger, settings) is None
        assert len(limit_reads) == 1  # the second call trusted the unchanged file
        other = sqlite3.connect(path, isolation_level=None)
        other.execute(
            "INSERT INTO budget_limits (period, project, tag, key_fingerprint, limit_usd, time_zone, updated_at_us) "
            "VALUES ('day', '', '', '', '0.75', 'UTC', 0)"
        )
        other.close()
        guard = budget.guard_for(ledger, settings)
        assert guard is not None
        assert [b.limit for b in guard.budgets] == [Decimal("0.75")]
        assert len(limit_reads) == 2


def test_a_budget_set_or_removed_through_the_same_ledger_is_seen_at_once(
    tmp_path: Path, limit_reads: list[int]
) -> None:
    """This process's own writes (on the very connection that is checked) invalidate the cached limits."""
    settings = load_settings()
    with closing(open_ledger(tmp_path / "ledger.db")) as ledger:
        assert budget.guard_for(ledger, settings) is None
        budget.set_budget(ledger, period="month", limit="3")
        guard = budget.guard_for(ledger, settings)
        assert guard is not None
        assert [b.limit for b in guard.budgets] == [Decimal("3")]
        budget.remove_budgets(ledger)
        assert budget.guard_for(ledger, settings) is None
        assert len(limit_reads) == 3


def test_a_budget_set_by_another_process_refuses_the_clients_next_call(
    tmp_path: Path, emulator: Any, run_id: str
) -> None:
    """A zero budget set from another process between two calls refuses the second call."""
    from canny import Client
    from canny.errors import BudgetExceeded

    path = tmp_path / "ledger.db"
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for(run=run_id), ledger=path, max_tokens=20) as client:
        assert client.create("hi [[tokens=2]]").outcome == "ok"
        code = (
            "import sys; from canny import budget; from canny.ledger import open_ledger\n"
            "with open_ledger(sys.argv[1]) as db: budget.set_budget(db, period='day', limit='0')\n"
        )
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=dict(os.environ))
        with pytest.raises(BudgetExceeded):
            client.create("hi again")
    with closing(open_ledger(path)) as ledger:
        assert sorted(r.outcome for r in ledger.records()) == ["budget_refused", "ok"]


class _NoChangeCheck:
    """A budget-capable ledger without ``change_stamp`` (as the PostgreSQL one): limits expire by time."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.location = inner.location

    def transaction(self, *, write: bool = True) -> Any:
        return self.inner.transaction(write=write)

    def sweep_lost_in(self, tx: Any, now_us: int, *, everything: bool = False) -> int:
        return int(self.inner.sweep_lost_in(tx, now_us, everything=everything))


def test_limits_without_a_change_check_are_trusted_for_at_most_the_ttl(
    tmp_path: Path, limit_reads: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ledger with no cheap change check rereads its limits once LIMITS_TTL has passed."""
    import sqlite3

    from canny.budget import limits

    clock = [1000.0]
    monkeypatch.setattr(limits, "monotonic", lambda: clock[0])
    path = tmp_path / "ledger.db"
    settings = load_settings()
    with closing(open_ledger(path)) as inner:
        ledger = _NoChangeCheck(inner)
        assert budget.guard_for(ledger, settings) is None  # type: ignore[arg-type]
        other = sqlite3.connect(path, isolation_level=None)
        other.execute(
            "INSERT INTO budget_limits (period, project, tag, key_fingerprint, limit_usd, time_zone, updated_at_us) "
            "VALUES ('day', '', '', '', '1.25', 'UTC', 0)"
        )
        other.close()
        assert budget.guard_for(ledger, settings) is None  # type: ignore[arg-type]
        assert len(limit_reads) == 1
        clock[0] += limits.LIMITS_TTL
        guard = budget.guard_for(ledger, settings)  # type: ignore[arg-type]
        assert guard is not None
        assert [b.limit for b in guard.budgets] == [Decimal("1.25")]
