"""`canny reconcile`: the ledger against the Usage and Cost Admin API the emulator serves
from the requests it answered; drift names calls made outside canny, exit code 9."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

from canny import reconcile as rec
from canny.cli import main
from canny.ledger import AttemptRecord, open_ledger
from canny.pricing import resolve_model
from canny.usage import Usage
from tests.conftest import CANARY_KEY

ADMIN_KEY = "sk-ant-admin01-CANARY-0123456789abcdefghijklmnop-TESTONLY"
FIXTURES = Path(__file__).parent / "fixtures" / "admin"
MODEL = "claude-sonnet-5-5"  # $2 input, $10 output per MTok


@pytest.fixture
def emu() -> Iterator[Any]:
    """A server of its own: the Admin API reports everything this server answered."""
    from canny.emulator import serve_in_thread

    with serve_in_thread() as handle:
        yield handle


def _canny_calls(emu: Any, ledger: str, prompts: list[str]) -> None:
    from canny.client import Client

    with Client(api_key=CANARY_KEY, base_url=emu.url_for(), ledger=ledger, model=MODEL, max_tokens=60) as client:
        for prompt in prompts:
            client.create(prompt)


def _run(*args: str, admin_key: str = ADMIN_KEY) -> Any:
    return CliRunner().invoke(main, ["reconcile", *args], env={"ANTHROPIC_ADMIN_KEY": admin_key})


def test_raw_sdk_calls_are_the_drift_and_named_as_outside_canny(emu: Any, tmp_path: Path) -> None:
    """3 calls via canny, 2 via the raw SDK: drift = the 2 raw calls' cost, cause named, exit 9, no key shown."""
    import anthropic

    ledger = str(tmp_path / "ledger.db")
    _canny_calls(emu, ledger, ["What is a ledger?", "Why reconcile?", "Name a budget."])
    raw = anthropic.Anthropic(api_key=CANARY_KEY, base_url=emu.base_url, max_retries=0)
    outside = [
        raw.messages.create(model=MODEL, max_tokens=60, messages=[{"role": "user", "content": text}])
        for text in ("Made without canny.", "Also made without canny, and a little longer.")
    ]
    raw.close()
    # hand-computed: tokens x $2 (input) and $10 (output) per million
    outside_cost = sum(
        (Decimal(m.usage.input_tokens) * 2 + Decimal(m.usage.output_tokens) * 10) / 1_000_000 for m in outside
    )
    rows = list(open_ledger(ledger).records())
    assert len(rows) == 3
    ledger_cost = sum((r.cost_usd or Decimal(0) for r in rows), Decimal(0))

    assert outside_cost > Decimal("0.0005")
    result = _run("--base-url", emu.base_url, "--json", "--ledger", ledger, "--tolerance", "0.0005")
    assert result.exit_code == 9, result.output
    report = json.loads(result.stdout)
    (row,) = report["rows"]
    assert (row["day"], row["model"]) == (datetime.now(UTC).date().isoformat(), MODEL)
    assert Decimal(report["ledger_cost_usd"]) == ledger_cost
    assert Decimal(report["provider_cost_usd"]) == ledger_cost + outside_cost
    assert Decimal(report["drift_usd"]) == outside_cost == Decimal(row["drift_usd"])
    assert row["causes"] == ["calls made outside canny"]
    assert row["token_drift"]["input"] == sum(m.usage.input_tokens for m in outside)
    assert row["token_drift"]["output"] == sum(m.usage.output_tokens for m in outside)
    assert row["ledger_tokens"]["input"] == sum(r.usage.input for r in rows)
    assert "over the tolerance" in result.stderr
    for text in (result.stdout, result.stderr):
        assert CANARY_KEY not in text
        assert ADMIN_KEY not in text
    for request in emu.requests():
        assert ADMIN_KEY not in json.dumps(dict(request.headers))


def test_calls_made_through_canny_reconcile_to_zero(emu: Any, tmp_path: Path) -> None:
    """Only canny's calls: both sides agree to the token and the dollar, exit 0; the table says so."""
    ledger = str(tmp_path / "ledger.db")
    _canny_calls(emu, ledger, ["One.", "Two, a little longer.", "Three."])
    result = _run("--base-url", emu.base_url, "--json", "--ledger", ledger, "--tolerance", "0")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["drift_usd"] == "0"
    assert Decimal(report["ledger_cost_usd"]) > 0
    (row,) = report["rows"]
    assert row["causes"] == []
    assert set(row["token_drift"].values()) == {0}
    table = _run("--base-url", emu.base_url, "--ledger", ledger)
    assert table.exit_code == 0, table.output
    head, line, total = table.stdout.splitlines()
    assert head.split()[:5] == ["day", "model", "ledger", "provider", "drift"]
    assert MODEL in line
    assert line.rstrip().endswith("-")
    assert total.startswith("total")


def test_the_admin_api_wants_an_admin_key(emu: Any, tmp_path: Path) -> None:
    """No key: 401; an ordinary API key: 403; the CLI turns either into one line and exit code 3."""
    url = emu.base_url + "/v1/organizations/cost_report?starting_at=2026-11-01T00:00:00Z"
    assert httpx2.get(url).status_code == 401
    denied = httpx2.get(url, headers={"x-api-key": CANARY_KEY})
    assert (denied.status_code, denied.json()["error"]["type"]) == (403, "permission_error")
    assert httpx2.get(url, headers={"x-api-key": ADMIN_KEY}).status_code == 200
    result = _run("--base-url", emu.base_url, "--ledger", str(tmp_path / "l.db"), admin_key=CANARY_KEY)
    assert result.exit_code == 3
    (line,) = result.stderr.strip().splitlines()
    assert "403 permission_error" in line
    assert CANARY_KEY not in result.output
    missing = _run("--base-url", emu.base_url, "--ledger", str(tmp_path / "l.db"), admin_key="")
    assert missing.exit_code == 2
    assert "ANTHROPIC_ADMIN_KEY" in missing.stderr


def test_reports_are_read_page_by_page(emu: Any, tmp_path: Path) -> None:
    """40 days are two pages of daily buckets (31 at most each): both are read, for both reports."""
    ledger = open_ledger(tmp_path / "ledger.db")
    today = datetime.now(UTC).date()
    result = rec.reconcile(
        ledger, since=today - timedelta(days=39), until=today + timedelta(days=1), admin_key=ADMIN_KEY,
        base_url=emu.base_url,
    )  # fmt: skip
    assert result.rows == ()
    paths = [r.path for r in emu.requests()]
    assert paths.count("/v1/organizations/usage_report/messages") == 2
    assert paths.count("/v1/organizations/cost_report") == 2
    pages = [r for r in emu.requests() if r.path.endswith("cost_report")]
    assert pages[0].status == pages[1].status == 200


def _transport(usage: dict[str, Any], cost: dict[str, Any]) -> httpx2.MockTransport:
    def answer(request: httpx2.Request) -> httpx2.Response:
        body = cost if request.url.path.endswith("cost_report") else usage
        return httpx2.Response(200, json=body)

    return httpx2.MockTransport(answer)


def test_the_documented_response_shapes_are_read_in_cents() -> None:
    """The API reference's examples: "123.78912" cents is $1.2378912, the cache split and searches kept."""
    usage = json.loads((FIXTURES / "usage_report_messages.json").read_text(encoding="utf-8"))
    cost = json.loads((FIXTURES / "cost_report.json").read_text(encoding="utf-8"))
    sides = rec.fetch_provider(
        rec.resolve_admin_key(ADMIN_KEY), date(2025, 8, 1), date(2025, 8, 2), transport=_transport(usage, cost)
    )
    (side,) = sides.values()
    assert list(sides) == [(date(2025, 8, 1), resolve_model("claude-sonnet-4-20250514"))]
    assert side.cost == Decimal("1.2378912")
    assert side.tokens == Usage(1500, 500, 1000, 200, 500, 10)


def _row(outcome: Any, cost: str | None, output: int, model: str = MODEL) -> AttemptRecord:
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    return AttemptRecord(
        call_id=f"c-{outcome}-{model}", attempt=1, started_at=at, ended_at=at, model=model, outcome=outcome,
        usage=Usage(input=1000, output=output), cost_usd=None if cost is None else Decimal(cost),
    )  # fmt: skip


def _provider(model: str, output: int, cents: str) -> tuple[dict[str, Any], dict[str, Any]]:
    bucket = {"starting_at": "2026-11-20T00:00:00Z", "ending_at": "2026-11-21T00:00:00Z"}
    usage = {"uncached_input_tokens": 1000, "output_tokens": output, "model": model}
    cost = {"amount": cents, "cost_type": "tokens", "model": model, "currency": "USD"}
    return (
        {"data": [{**bucket, "results": [usage]}], "has_more": False, "next_page": None},
        {"data": [{**bucket, "results": [cost]}], "has_more": False, "next_page": None},
    )


@pytest.mark.parametrize(
    ("record", "provider", "cause"),
    [
        # same tokens, billed $0.0070 against the ledger's $0.0060: the price changed
        (_row("ok", "0.006", 400), _provider(MODEL, 400, "0.7"), "price changes"),
        # the ledger could not price it: its $0 side is not a $0 cost
        (_row("ok", None, 400, "claude-unknown-9"), _provider("claude-unknown-9", 400, "0.5"), "unpriced models"),
        # a lost attempt is on the ledger with its input only: the output billed is missing
        (_row("lost", "0.002", 0), _provider(MODEL, 400, "0.6"), "lost attempts"),
    ],
)
def test_each_cause_is_named(
    tmp_path: Path, record: AttemptRecord, provider: tuple[dict[str, Any], dict[str, Any]], cause: str
) -> None:
    """Price changes, unpriced models and lost attempts are each told apart from calls outside canny."""
    ledger = open_ledger(tmp_path / "ledger.db")
    ledger.record(record)
    result = rec.reconcile(
        ledger, since=date(2026, 11, 20), until=date(2026, 11, 21), admin_key=ADMIN_KEY,
        transport=_transport(*provider),
    )  # fmt: skip
    (row,) = result.rows
    assert row.causes == (cause,)
    assert row.drift_usd == Decimal(provider[1]["data"][0]["results"][0]["amount"]) / 100 - (
        record.cost_usd or Decimal(0)
    )
