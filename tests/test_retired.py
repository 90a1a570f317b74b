"""Retired models: warned about and sent (the server decides), a 404 that says "retired",
and dated prices for every retired Claude model so old ledgers and recordings are priced."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner

import canny
from canny import errors
from canny._sdk_errors import error_from_response, retirement
from canny.cli import main
from canny.errors import CannyWarning
from canny.pricing import UnpricedModelWarning, cost, known_models, resolve_model
from canny.retry import RetryPolicy
from canny.usage import Usage
from tests.conftest import CANARY_KEY, MemoryLedger

D = Decimal

#: No caching: 80,000 input + 4,000 output tokens (fits every retired model's context).
PLAIN = Usage(input=80_000, output=4_000)
#: With caching, where the model offered it: PLAIN + 10,000 5m cache writes + 20,000 cache reads.
CACHED = Usage(input=80_000, cache_write_5m=10_000, cache_read=20_000, output=4_000)

#: (id or alias as an old ledger holds it, the day of the call, usage, cost summed by hand at
#: the per-MTok rates of the official or quoted price for that day).
OLD_CALLS: list[tuple[str, date, Usage, str]] = [
    # 80k*0.25 + 10k*0.30 + 20k*0.03 + 4k*1.25 = 0.02 + 0.003 + 0.0006 + 0.005
    ("claude-3-haiku-20240307", date(2024, 9, 1), CACHED, "0.0286"),
    # 80k*3 + 4k*15 = 0.24 + 0.06
    ("claude-3-sonnet-20240229", date(2024, 4, 1), PLAIN, "0.30"),
    # 80k*15 + 10k*18.75 + 20k*1.50 + 4k*75 = 1.2 + 0.1875 + 0.03 + 0.3
    ("claude-3-opus-20240229", date(2024, 9, 1), CACHED, "1.7175"),
    ("claude-3-opus-latest", date(2025, 3, 1), CACHED, "1.7175"),
    # 80k*3 + 10k*3.75 + 20k*0.30 + 4k*15 = 0.24 + 0.0375 + 0.006 + 0.06
    ("claude-3-5-sonnet-20240620", date(2024, 9, 1), CACHED, "0.3435"),
    ("claude-3-5-sonnet-20241022", date(2025, 1, 15), CACHED, "0.3435"),
    ("claude-3-5-sonnet-latest", date(2025, 1, 15), CACHED, "0.3435"),
    ("claude-3-7-sonnet-20250219", date(2025, 6, 1), CACHED, "0.3435"),
    ("claude-3-7-sonnet-latest", date(2025, 6, 1), CACHED, "0.3435"),
    ("claude-sonnet-4-20250514", date(2025, 7, 1), CACHED, "0.3435"),
    # 80k*0.80 + 10k*1 + 20k*0.08 + 4k*4 = 0.064 + 0.01 + 0.0016 + 0.016
    ("claude-3-5-haiku-20241022", date(2025, 1, 15), CACHED, "0.0916"),
    ("claude-3-5-haiku-latest", date(2025, 1, 15), CACHED, "0.0916"),
    ("claude-opus-4-20250514", date(2025, 7, 1), CACHED, "1.7175"),
    ("claude-opus-4-1-20250805", date(2025, 9, 1), CACHED, "1.7175"),
    # 80k*8 + 4k*24 = 0.64 + 0.096
    ("claude-2.1", date(2024, 2, 1), PLAIN, "0.736"),
    ("claude-2.0", date(2024, 2, 1), PLAIN, "0.736"),
    ("claude-2", date(2024, 2, 1), PLAIN, "0.736"),
    # 80k*0.80 + 4k*2.40 = 0.064 + 0.0096
    ("claude-instant-1.2", date(2024, 2, 1), PLAIN, "0.0736"),
    ("claude-instant-1", date(2024, 2, 1), PLAIN, "0.0736"),
]


@pytest.fixture(autouse=True)
def _fresh_warnings() -> Iterator[None]:
    """Once-per-process model warnings start empty in every test."""
    import canny._client_base

    canny._client_base._warned_models.clear()
    yield
    canny._client_base._warned_models.clear()


@pytest.mark.parametrize(("model", "day", "usage", "expected"), OLD_CALLS)
def test_retired_model_prices_an_old_call_to_the_hand_computed_figure(
    model: str, day: date, usage: Usage, expected: str
) -> None:
    """Every retired Claude model (by id, dated id or alias) prices a call of its lifetime exactly."""
    assert cost(model, usage, at=day) == D(expected)


def test_retired_model_prices_an_api_usage_dict_from_a_recording() -> None:
    """A recorded usage object (5m and 1h writes broken down) prices on a retired model too."""
    usage = {
        "input_tokens": 1_200,
        "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
        "cache_read_input_tokens": 50_000,
        "output_tokens": 700,
    }
    # Sonnet 3.7: 1200*3 + 1000*3.75 + 2000*6 + 50000*0.30 + 700*15 = 3600+3750+12000+15000+10500 = 44,850
    assert cost("claude-3-7-sonnet-20250219", usage, at=date(2025, 8, 1)) == D("0.04485")


def test_every_retired_model_has_a_retirement_date_and_a_price_until_then() -> None:
    """Each model the table lists as retired says when, and is priced on its last day."""
    retired = [info for info in known_models() if info.status == "retired"]
    ids = {info.id for info in retired}
    expected = {
        "claude-opus-4-1", "claude-opus-4-0", "claude-sonnet-4-0", "claude-3-7-sonnet-20250219",
        "claude-3-5-haiku-20241022", "claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620",
        "claude-3-opus-20240229", "claude-3-sonnet-20240229", "claude-3-haiku-20240307",
        "claude-2.1", "claude-2.0", "claude-instant-1.2",
    }  # fmt: skip
    assert expected <= ids
    for info in retired:
        assert info.retires_at is not None, info.id
        if info.id == "claude-mythos-preview":  # a limited preview: no price was ever published
            continue
        assert cost(info.id, PLAIN, at=info.retires_at - timedelta(days=1)) is not None, info.id


def test_price_before_a_confirmed_figure_stays_unpriced() -> None:
    """Claude 2.0 before the 2023-11-21 price update is unpriced (None, warned), never $0."""
    with pytest.warns(UnpricedModelWarning, match="claude-2.0: no confirmed price on 2023-09-01"):
        assert cost("claude-2.0", PLAIN, at=date(2023, 9, 1)) is None
    assert resolve_model("claude-2") == "claude-2.0"


def test_check_model_warns_once_and_sends_a_retired_model() -> None:
    """A retired model resolves with one warning per process naming the date and a current model."""
    from canny.client import check_model

    day = date(2026, 12, 1)
    with pytest.warns(CannyWarning) as caught:
        resolved = [check_model(name, today=day) for name in ("claude-3-opus-latest", "claude-3-opus-20240229")]
    assert resolved == ["claude-3-opus-20240229", "claude-3-opus-20240229"]
    assert len(caught) == 1
    text = str(caught[0].message)
    assert "claude-3-opus-20240229 was retired on 2026-01-05; sending anyway" in text
    assert "use claude-opus-5-5 instead" in text


def test_retirement_names_the_newest_active_model_of_the_line() -> None:
    """The suggested replacement is the newest active model of the same line; none for a line-less model."""
    found = retirement("claude-3-haiku-20240307", today=date(2026, 12, 1))
    assert found is not None and (found.retired_on, found.use) == (date(2026, 4, 20), "claude-haiku-5-5")
    old = retirement("claude-instant-1.2", today=date(2026, 12, 1))
    assert old is not None and old.use is None and "canny models" in old.advice
    assert retirement("claude-sonnet-5-5", today=date(2026, 12, 1)) is None
    assert retirement("claude-sonnet-4-5", today=date(2026, 11, 29)) is None  # retires the next day


def test_404_for_a_retired_model_says_retired_and_what_to_use() -> None:
    """The API's 404 not_found_error `model: X` for a retired X names the date and a current model."""
    body = {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-3-5-sonnet-20240620"}}
    err = error_from_response(404, body, {"request-id": "req_1"})
    assert isinstance(err, errors.RequestRejected)
    assert err.message.startswith("claude-3-5-sonnet-20240620 was retired on 2025-10-28")
    assert "404 not_found_error" in err.message
    assert err.hint.startswith("use claude-sonnet-5-5 instead")
    assert (err.status_code, err.error_type, err.request_id) == (404, "not_found_error", "req_1")
    unknown = {"type": "error", "error": {"type": "not_found_error", "message": "model: claude-nonesuch"}}
    plain = error_from_response(404, unknown, {})
    assert "retired" not in plain.message and plain.message == "not found (404 not_found_error): model: claude-nonesuch"


def _call(client: canny.Client, *, streamed: bool) -> Any:
    if streamed:
        with client.stream("hello", model="claude-3-haiku-20240307") as stream:
            return stream.final()
    return client.create("hello", model="claude-3-haiku-20240307")


@pytest.mark.parametrize("streamed", [False, True])
def test_client_sends_a_retired_model_and_the_404_says_retired(
    emulator: Any, memory_ledger: MemoryLedger, run_id: str, streamed: bool
) -> None:
    """Client warns, sends (the emulator sees the request) and raises RequestRejected saying retired."""
    base = emulator.url_for("ok", run=run_id)
    client = canny.Client(api_key=CANARY_KEY, base_url=base, ledger=memory_ledger, retry=RetryPolicy())
    warned = pytest.warns(CannyWarning, match="was retired on 2026-04-20; sending anyway")
    with client, warned, pytest.raises(errors.RequestRejected) as caught:
        _call(client, streamed=streamed)
    assert "claude-3-haiku-20240307 was retired on 2026-04-20" in caught.value.message
    sent = [r for r in emulator.requests(run_id) if r.path.endswith("/v1/messages")]
    assert [(r.status, r.body["model"]) for r in sent] == [(404, "claude-3-haiku-20240307")]  # sent once
    assert [row.outcome for row in memory_ledger.rows] == ["error"]


def test_cli_ask_retired_model_warns_sends_and_says_retired(emulator: Any, run_id: str) -> None:
    """`canny ask -m <retired>`: a warning, the request reaches the server, one line saying retired, exit 8."""
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": emulator.url_for("ok", run=run_id)}
    result = CliRunner().invoke(main, ["ask", "-m", "claude-3-5-haiku-latest", "hello"], env=env)
    assert result.exit_code == 8, result.stderr
    assert "canny: warning: claude-3-5-haiku-20241022 was retired on 2026-02-19; sending anyway" in result.stderr
    errors_ = [line for line in result.stderr.splitlines() if line.startswith("canny:") and "warning" not in line]
    assert len(errors_) == 1 and "was retired on 2026-02-19" in errors_[0], result.stderr
    assert "use claude-haiku-5-5 instead" in result.stderr
    assert [r.body["model"] for r in emulator.requests(run_id) if r.path.endswith("/v1/messages")] == [
        "claude-3-5-haiku-20241022"
    ]
    assert CANARY_KEY not in result.stderr + result.stdout


def test_cli_ask_model_past_its_date_still_served_answers(emulator: Any, run_id: str) -> None:
    """A model past the table's retirement date that the server still serves answers normally, with a warning."""
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": emulator.url_for("ok", run=run_id)}
    result = CliRunner().invoke(main, ["ask", "-m", "claude-sonnet-4-5", "--no-stream", "--json", "hello"], env=env)
    assert result.exit_code == 0, result.stderr
    assert "claude-sonnet-4-5 was retired on 2026-11-30; sending anyway" in result.stderr
    assert json.loads(result.stdout)["text"]
