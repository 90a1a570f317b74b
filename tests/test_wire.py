"""The wire corpus: real recorded API exchanges (tests/wire/*.json, sources in
tests/wire/README.md) replayed byte for byte through every canny path.

Each recording runs through ``canny.Client.stream`` (SSE bodies and error bodies),
``canny.Client.create`` (JSON bodies and error bodies), ``canny.meter`` around a plain
``anthropic.Anthropic`` client, and ``canny replay``. The HTTP side is an
``httpx2.MockTransport`` that answers every request with the recorded status, headers and
body, in small chunks. Expected text, usage buckets and cost were worked out by hand from
the recording and src/canny/pricing/prices.toml; each case file shows the working
(``expect.cost_working``) and the rates used (``expect.rates``).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from click.testing import CliRunner

import canny
from canny import errors
from canny.cli import main
from canny.retry import RetryPolicy
from tests.conftest import CANARY_KEY, MemoryLedger

WIRE = Path(__file__).parent / "wire"
CASES: dict[str, dict[str, Any]] = {
    path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(WIRE.glob("*.json"))
}
STREAMS = [k for k, c in CASES.items() if c["kind"] == "stream"]
BODIES = [k for k, c in CASES.items() if c["kind"] == "json"]
ERRORS = [k for k, c in CASES.items() if c["kind"] == "error"]
BUCKETS = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "web_search_requests")
BASE_URL = "http://127.0.0.1:9"
ATTEMPTS = 2

#: The canny error each recorded HTTP status implies, and whether canny retries it.
STATUS_ERROR: dict[int, tuple[type[errors.APIError], bool]] = {
    400: (errors.RequestRejected, False),
    401: (errors.AuthenticationError, False),
    403: (errors.AuthenticationError, False),
    404: (errors.RequestRejected, False),
    413: (errors.RequestRejected, False),
    429: (errors.RateLimited, True),
    500: (errors.ServerError, True),
    529: (errors.Overloaded, True),
}
#: A model to ask for when the recording names none (error bodies).
FALLBACK_MODEL = "claude-sonnet-4-6"


class _Chunks(httpx2.SyncByteStream):
    """The recorded body in 61-byte pieces, so the SSE decoder sees split lines."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        for i in range(0, len(self.data), 61):
            yield self.data[i : i + 61]


def _transport(case: dict[str, Any], seen: list[httpx2.Request]) -> httpx2.MockTransport:
    body = case["body"].encode("utf-8")

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(case["status"], headers=case["headers"], stream=_Chunks(body))

    return httpx2.MockTransport(handler)


def _model(case: dict[str, Any]) -> str:
    return str(case["expect"]["model"] or FALLBACK_MODEL)


def _outcome(case: dict[str, Any]) -> str:
    stop = case["expect"]["stop_reason"]
    return {"refusal": "refused", "max_tokens": "max_tokens"}.get(stop, "ok")


def _buckets(usage: Any) -> dict[str, int]:
    got = usage.buckets() if hasattr(usage, "buckets") else usage
    return {b: got[b] for b in BUCKETS}


def _expected_buckets(case: dict[str, Any]) -> dict[str, int]:
    return {b: case["expect"]["usage"][b] for b in BUCKETS}


def _row_buckets(row: Any) -> dict[str, int]:
    assert row.usage.iterations == ()  # a row keeps the bucket totals alone
    return {b: getattr(row.usage, b) for b in BUCKETS}


def _interrupted(case: dict[str, Any]) -> bool:
    """A 200 stream that broke (cut, or an in-band error) after text was shown."""
    return case["kind"] == "stream" and not case["expect"]["complete"]


def _client(case: dict[str, Any], ledger: Path, seen: list[httpx2.Request]) -> canny.Client:
    return canny.Client(
        api_key=CANARY_KEY,
        base_url=BASE_URL,
        ledger=ledger,
        retry=RetryPolicy(max_attempts=ATTEMPTS, sleep=lambda _s: None, rng=lambda: 0.0),
        http_client=httpx2.Client(transport=_transport(case, seen)),
    )


def _rows(path: Path) -> list[Any]:
    from canny.ledger import open_ledger

    ledger = open_ledger(path)
    try:
        return sorted(ledger.records(), key=lambda r: r.attempt)
    finally:
        ledger.close()


def _no_key(path: Path, *texts: str) -> None:
    for text in texts:
        assert CANARY_KEY not in text
    for file in path.parent.glob(path.name + "*"):
        assert CANARY_KEY.encode() not in file.read_bytes()


def _check_error_rows(case: dict[str, Any], rows: list[Any], *, attempts: int) -> None:
    status = case["status"]
    assert [(r.outcome, r.status_code, r.error_type) for r in rows] == [
        ("error", status, case["expect"]["error_type"])
    ] * attempts
    for row in rows:  # nothing was billed: no usage in an error body
        assert _row_buckets(row) == dict.fromkeys(BUCKETS, 0)
        assert row.cost_usd in (None, Decimal(0))


def _check_answer(case: dict[str, Any], result: Any, text: str, rows: list[Any], *, streamed: bool) -> None:
    exp = case["expect"]
    assert text == exp["text"]  # shown exactly once
    assert result.text == exp["text"]
    assert result.stop_reason == exp["stop_reason"]
    assert result.outcome == _outcome(case)
    assert _buckets(result.usage) == _expected_buckets(case)
    assert result.cost == Decimal(exp["cost_usd"])
    [row] = rows
    assert (row.outcome, row.streamed, row.model) == (_outcome(case), streamed, result.model)
    assert _row_buckets(row) == _expected_buckets(case)
    assert row.cost_usd == Decimal(exp["cost_usd"])


@pytest.fixture(autouse=True)
def _retired_models_warn_once(request: pytest.FixtureRequest) -> Iterator[None]:
    """A client call to a model that has since retired warns (and is sent); nothing else warns."""
    import canny._client_base
    from canny.pricing import model_info, resolve_model

    canny._client_base._warned_models.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    params = getattr(request.node, "callspec", None)
    name = params.params.get("name") if params is not None else None
    retired = 0
    if name is not None and request.node.name.startswith(("test_client_stream", "test_client_create")):
        info = model_info(resolve_model(_model(CASES[name])))
        retired = int(info is not None and info.is_retired(datetime.now(UTC).date()))
    messages = [str(w.message) for w in caught]
    assert all(issubclass(w.category, errors.CannyWarning) and "was retired on" in str(w.message) for w in caught), (
        messages
    )
    assert len(caught) == retired, messages


# --------------------------------------------------------------------------- the corpus


def test_corpus_is_large_and_sourced() -> None:
    """At least 30 recordings, each naming where it came from, and every one listed in the README."""
    assert len(CASES) >= 30
    readme = (WIRE / "README.md").read_text(encoding="utf-8")
    for name, case in CASES.items():
        source = case["source"]
        assert source.get("url") or (source.get("repository") and source.get("path") and source.get("commit"))
        assert f"`{name}`" in readme
        assert "sk-ant-" not in case["body"]


# --------------------------------------------------------------------------- Client.stream


@pytest.mark.parametrize("name", STREAMS + ERRORS)
def test_client_stream(name: str, tmp_path: Path) -> None:
    """Client.stream shows the recorded text once, bills the hand-computed cost, writes the right row."""
    case = CASES[name]
    db = tmp_path / "ledger.db"
    seen: list[httpx2.Request] = []
    chunks: list[str] = []
    client = _client(case, db, seen)
    with client:
        if case["kind"] == "error":
            kind, retried = STATUS_ERROR[case["status"]]
            with pytest.raises(kind) as info, client.stream("hi", model=_model(case), max_tokens=64) as stream:
                chunks.extend(stream)
            assert info.value.status_code == case["status"]
            assert info.value.error_type == case["expect"]["error_type"]
            attempts = ATTEMPTS if retried else 1
            assert len(seen) == attempts
            _check_error_rows(case, _rows(db), attempts=attempts)
            _no_key(db, str(info.value), repr(info.value))
            return
        if _interrupted(case):
            with (
                pytest.raises(errors.StreamInterrupted) as broke,
                client.stream("hi", model=_model(case), max_tokens=64) as stream,
            ):
                chunks.extend(stream)
            result = broke.value.result
            assert result is not None
            assert "".join(chunks) == result.text == case["expect"]["text"]
            assert _buckets(result.usage) == _expected_buckets(case)
            assert result.cost == Decimal(case["expect"]["cost_usd"])
            [row] = _rows(db)
            assert row.outcome == "interrupted"
            assert _row_buckets(row) == _expected_buckets(case)
            assert row.cost_usd == Decimal(case["expect"]["cost_usd"])
            assert len(seen) == 1  # not re-sent: the text would repeat
            _no_key(db, str(broke.value))
            return
        with client.stream("hi", model=_model(case), max_tokens=64) as stream:
            chunks.extend(stream)
        assert stream.result is not None
        _check_answer(case, stream.result, "".join(chunks), _rows(db), streamed=True)
        assert len(seen) == 1
        _no_key(db, json.dumps(stream.result.to_json()))


# --------------------------------------------------------------------------- Client.create


@pytest.mark.parametrize("name", BODIES + ERRORS)
def test_client_create(name: str, tmp_path: Path) -> None:
    """Client.create returns the recorded answer with the hand-computed cost, or the implied canny error."""
    case = CASES[name]
    db = tmp_path / "ledger.db"
    seen: list[httpx2.Request] = []
    with _client(case, db, seen) as client:
        if case["kind"] == "error":
            kind, retried = STATUS_ERROR[case["status"]]
            with pytest.raises(kind) as info:
                client.create("hi", model=_model(case), max_tokens=64)
            attempts = ATTEMPTS if retried else 1
            assert len(seen) == attempts
            _check_error_rows(case, _rows(db), attempts=attempts)
            _no_key(db, str(info.value))
            return
        result = client.create("hi", model=_model(case), max_tokens=64)
    _check_answer(case, result, result.text, _rows(db), streamed=False)
    assert len(seen) == 1
    _no_key(db, json.dumps(result.to_json()))


# --------------------------------------------------------------------------- canny.meter


def _sdk(case: dict[str, Any], seen: list[httpx2.Request]) -> anthropic.Anthropic:
    http = httpx2.Client(transport=_transport(case, seen))
    return anthropic.Anthropic(api_key=CANARY_KEY, base_url=BASE_URL, max_retries=0, http_client=http)


def _meter_rows_match(case: dict[str, Any], rows: list[Any], *, outcome: str) -> None:
    [row] = rows
    assert row.outcome == outcome
    assert _row_buckets(row) == _expected_buckets(case)
    assert row.cost_usd == Decimal(case["expect"]["cost_usd"])
    assert CANARY_KEY not in repr(row)


@pytest.mark.parametrize("name", STREAMS + BODIES + ERRORS)
def test_meter(name: str, memory_ledger: MemoryLedger) -> None:
    """A metered plain SDK call gives the SDK's own answer and one row with the hand-computed cost."""
    case = CASES[name]
    seen: list[httpx2.Request] = []
    ask: dict[str, Any] = {"model": _model(case), "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}
    with _sdk(case, seen) as sdk:
        client = canny.meter(sdk, ledger=memory_ledger)
        if case["kind"] == "error":
            with pytest.raises(anthropic.APIStatusError) as info:
                client.messages.create(**ask)
            assert info.value.status_code == case["status"]
            assert CANARY_KEY not in str(info.value)
            assert len(seen) == 1
            _check_error_rows(case, memory_ledger.rows, attempts=1)
            return
        if case["kind"] == "json":
            message = client.messages.create(**ask)
            text = "".join(b.text for b in message.content if b.type == "text")
            assert text == case["expect"]["text"]
            _meter_rows_match(case, memory_ledger.rows, outcome=_outcome(case))
            return
        chunks: list[str] = []
        failure: anthropic.APIError | None = None
        try:
            for event in client.messages.create(**ask, stream=True):
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    chunks.append(event.delta.text)
        except anthropic.APIError as exc:  # the SDK's own in-band error
            failure = exc
    assert "".join(chunks) == case["expect"]["text"]
    assert (failure is not None) == (case["expect"]["error_type"] is not None)
    outcome = "interrupted" if _interrupted(case) else _outcome(case)
    _meter_rows_match(case, memory_ledger.rows, outcome=outcome)


# --------------------------------------------------------------------------- canny replay


@pytest.mark.parametrize("name", list(CASES))
def test_replay(name: str, tmp_path: Path) -> None:
    """`canny replay --json` reads the recorded bytes and reports the hand-computed text, usage and cost."""
    case = CASES[name]
    path = tmp_path / f"{name}.body"
    path.write_bytes(case["body"].encode("utf-8"))
    result = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    exp = case["expect"]
    assert data["text"] == exp["text"]
    assert data["stop_reason"] == exp["stop_reason"]
    assert data["complete"] == exp["complete"]
    if exp["error_type"] is not None:
        assert data["error"]["type"] == exp["error_type"]
    if exp["model"] is None:
        assert data["cost_usd"] is None
        return
    usage = data["usage"]
    assert {
        "input": usage["input_tokens"],
        "cache_write_5m": usage["cache_write_5m_tokens"],
        "cache_write_1h": usage["cache_write_1h_tokens"],
        "cache_read": usage["cache_read_input_tokens"],
        "output": usage["output_tokens"],
        "web_search_requests": data.get("server_tool_use", {}).get("web_search_requests", 0),
    } == _expected_buckets(case)
    assert data["cost_usd"] is not None
    assert Decimal(data["cost_usd"]) == Decimal(exp["cost_usd"])


# --------------------------------------------------------------------------- emulator


@pytest.mark.parametrize(
    ("model", "geo"),
    [
        ("claude-sonnet-4-5", "not_available"),
        ("claude-haiku-4-5", "not_available"),
        ("claude-fable-5-1", "not_available"),
        ("claude-sonnet-4-6", "global"),
        ("claude-opus-4-8", "global"),
        ("claude-fable-5", "global"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_emulator_reports_inference_geo_as_recorded(
    emulator: Any, run_id: str, model: str, geo: str, stream: bool
) -> None:
    """The emulator's usage.inference_geo matches what recordings of that model show."""
    body = {"model": model, "max_tokens": 32, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"x-api-key": CANARY_KEY, "anthropic-version": "2023-06-01"}
    response = httpx2.post(emulator.url_for(run=run_id) + "/v1/messages", json=body, headers=headers)
    assert response.status_code == 200, response.text
    if stream:
        start = next(json.loads(line[5:]) for line in response.text.splitlines() if '"message_start"' in line)
        usage = start["message"]["usage"]
    else:
        usage = response.json()["usage"]
    assert usage["inference_geo"] == geo
