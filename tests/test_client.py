"""Client behaviour beyond faults: models, budgets per call, text storage, cancellation."""

from __future__ import annotations

import asyncio
import pickle
from datetime import date
from typing import Any

import pytest

from canny import errors
from canny.cli._exit_codes import exit_code_for
from canny.client import AsyncClient, Client, check_model
from canny.errors import CannyWarning
from tests.conftest import CANARY_KEY, MemoryLedger


def test_aliases_resolve() -> None:
    """Short aliases resolve through the price table."""
    assert check_model("sonnet") == "claude-sonnet-5-5"
    assert check_model("haiku") == "claude-haiku-5-5"


def test_retiring_model_warns_and_retired_model_warns_and_resolves() -> None:
    """Before its retirement date a model warns; on and after it, it warns again and is still sent."""
    import canny._client_base

    canny._client_base._warned_models.clear()
    with pytest.warns(CannyWarning, match="retires on 2026-11-30"):
        assert check_model("claude-sonnet-4-5", today=date(2026, 11, 25)) == "claude-sonnet-4-5"
    with pytest.warns(CannyWarning, match="retired on 2026-11-30; sending anyway"):
        assert check_model("claude-sonnet-4-5", today=date(2026, 12, 1)) == "claude-sonnet-4-5"


def _client(emulator: Any, ledger: MemoryLedger, **kwargs: Any) -> Client:
    return Client(
        api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=ledger, model="claude-sonnet-5-5", **kwargs
    )


def test_max_cost_lowers_max_tokens(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A max_cost that cannot afford max_tokens lowers it (with a warning) instead of refusing."""
    with _client(emulator, memory_ledger) as client, pytest.warns(CannyWarning, match="max_tokens lowered"):
        result = client.create("hello [[words=400]]", max_tokens=4000, max_cost="0.005")
    assert result.cost is not None and result.cost <= 0.005
    assert result.usage.output < 4000


def test_max_cost_refusal_is_a_budget_refused_row(emulator: Any, memory_ledger: MemoryLedger, run_id: str) -> None:
    """A call that cannot fit its max_cost is refused before sending and recorded as budget_refused."""
    client = Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok", run=run_id), ledger=memory_ledger)
    with client, pytest.raises(errors.BudgetExceeded) as info:
        client.create("hello", max_cost="0.00000001")
    assert exit_code_for(info.value) == 4
    assert [row.outcome for row in memory_ledger.rows] == ["budget_refused"]
    assert emulator.requests(run=run_id) == []


def test_log_content_is_opt_in(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Prompt and answer text are stored only with log_content=True; a hash always."""
    with _client(emulator, memory_ledger) as client:
        client.create("secret prompt text")
    with _client(emulator, memory_ledger, log_content=True) as client:
        client.create("secret prompt text")
    hidden, shown = memory_ledger.rows
    assert hidden.prompt_text is None and hidden.response_text is None
    assert shown.prompt_text is not None and "secret prompt text" in shown.prompt_text
    assert shown.response_text
    assert hidden.prompt_hash == shown.prompt_hash


def test_closing_a_stream_early_records_cancelled(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Leaving the stream before its end records the attempt as cancelled, with partial usage."""
    with _client(emulator, memory_ledger) as client, client.stream("hello [[words=300]]") as stream:
        next(iter(stream))
    (row,) = memory_ledger.rows
    assert row.outcome == "cancelled"
    assert row.usage.input > 0


def test_tags_and_project_reach_the_ledger(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Client-level defaults and per-call overrides of project and tags are recorded."""
    with _client(emulator, memory_ledger, project="acme", tags=["a"]) as client:
        client.create("one")
        client.create("two", project="other", tags=["b", "c"])
    expected = [("acme", ("a", "offline")), ("other", ("b", "c", "offline"))]  # the emulator answered: offline
    assert [(r.project, r.tags) for r in memory_ledger.rows] == expected


def test_async_create(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """AsyncClient.create returns the same result shape and writes the same rows."""

    async def go() -> Any:
        async with AsyncClient(
            api_key=CANARY_KEY, base_url=emulator.url_for("overloaded", "ok"), ledger=memory_ledger
        ) as client:
            return await client.create("hello")

    result = asyncio.run(go())
    assert (result.outcome, result.attempts) == ("ok", 2)
    assert len(memory_ledger.rows) == 2


def test_errors_carry_no_key_even_pickled(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """An API error's text, repr, cause chain and pickle never contain the key."""
    import traceback

    client = Client(api_key=CANARY_KEY, base_url=emulator.url_for("bad_key"), ledger=memory_ledger)
    with client, pytest.raises(errors.AuthenticationError) as info:
        client.create("hello")
    err = info.value
    assert CANARY_KEY not in str(err) + repr(err)
    assert CANARY_KEY.encode() not in pickle.dumps(err)
    assert CANARY_KEY not in "".join(traceback.format_exception(err))
    assert CANARY_KEY not in repr(memory_ledger.rows)


def test_missing_key_error() -> None:
    """No key anywhere: MissingKeyError naming the ways to set one."""
    with pytest.raises(errors.MissingKeyError) as info:
        Client(ledger=False).create("hi")
    assert "canny key set" in info.value.hint
    assert exit_code_for(info.value) == 2


def test_offline_client_needs_no_key(memory_ledger: MemoryLedger) -> None:
    """Client(offline=True) answers from an embedded emulator it starts and stops itself."""
    with Client(offline=True, ledger=memory_ledger) as client:
        result = client.create("hello")
    assert result.outcome == "ok"
    assert result.text


def test_explicit_arguments_win_over_given_settings() -> None:
    """Client(settings=..., model=..., max_tokens=...) applies the explicit arguments."""
    from canny.config import load_settings

    client = Client(settings=load_settings(), model="haiku", max_tokens=77, ledger=False)
    assert (client.settings.model, client.settings.max_tokens) == ("haiku", 77)


def test_max_cost_with_an_unpriced_model_refuses(memory_ledger: MemoryLedger) -> None:
    """A per-call max_cost cannot be checked against a model with no price: refused, not waved through."""
    from canny.pricing import UnpricedModelWarning

    client = Client(api_key=CANARY_KEY, base_url="http://127.0.0.1:9", ledger=memory_ledger, model="claude-future-9")
    with client, pytest.warns(UnpricedModelWarning), pytest.raises(errors.BudgetExceeded, match="no known price"):
        client.create("hello", max_cost="1")
    assert [row.outcome for row in memory_ledger.rows] == ["budget_refused"]


def test_one_client_shared_by_threads(emulator: Any, tmp_path: Any) -> None:
    """Eight threads sharing one client (ledger opened lazily) lose and double no ledger row."""
    from concurrent.futures import ThreadPoolExecutor

    from canny.ledger import open_ledger

    path = tmp_path / "shared.db"
    client = Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=path, model="claude-sonnet-5-5")
    with client, ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: client.create(f"question {i}", max_tokens=50), range(40)))
    assert all(r.ok for r in results)
    ledger = open_ledger(path)
    rows = list(ledger.records())
    ledger.close()
    assert len(rows) == 40
    assert len({r.call_id for r in rows}) == 40


def test_call_signature_gives_every_create_and_stream_the_keywords_of_call_keywords() -> None:
    """create and stream on clients and sessions all take exactly call_keywords' parameters (one signature)."""
    import inspect

    from canny._client_base import call_keywords
    from canny.session import AsyncSession, Session

    expected = ["self", *inspect.signature(call_keywords).parameters]
    for cls in (Client, AsyncClient, Session, AsyncSession):
        for name in ("create", "stream"):
            assert list(inspect.signature(getattr(cls, name)).parameters) == expected, (cls, name)
