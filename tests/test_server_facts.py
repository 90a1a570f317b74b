"""What the server sends is a fact: unexpected values in a response never fail a call,
never drop a ledger row, and are priced from what is known (issue 8, item 1).

The bodies here are shaped like the real recordings that report
``usage.inference_geo: "not_available"`` (Sonnet 4 / 4.5 / Fable 5.1 cassettes; the
recordings themselves are in ``tests/wire/``), on a current model so that nothing but the
reported value is unusual.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from canny.cli import main
from tests.conftest import CANARY_KEY

MODEL = "claude-sonnet-4-6"


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _stream(
    *,
    usage_extra: dict[str, Any] | None = None,
    stop_reason: str = "end_turn",
    text: str = "Facts are facts.",
    block_type: str = "text",
    stop_details: dict[str, Any] | None = None,
) -> bytes:
    start_usage = {"input_tokens": 1200, "output_tokens": 1, "inference_geo": "not_available", **(usage_extra or {})}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01Facts",
                "type": "message",
                "role": "assistant",
                "model": MODEL,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        }
    ]
    if block_type != "text":
        events += [
            {"type": "content_block_start", "index": 0, "content_block": {"type": block_type, "payload": 1}},
            {"type": "content_block_stop", "index": 0},
        ]
    index = 0 if block_type == "text" else 1
    if text:
        events += [
            {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": text}},
            {"type": "content_block_stop", "index": index},
        ]
    delta: dict[str, Any] = {"stop_reason": stop_reason, "stop_sequence": None}
    if stop_details is not None:
        delta["stop_details"] = stop_details
    events += [
        {"type": "message_delta", "delta": delta, "usage": {"output_tokens": 40, **(usage_extra or {})}},
        {"type": "message_stop"},
    ]
    return _sse(*events)


def _json_body(**kwargs: Any) -> bytes:
    from canny.streaming import parse_body

    message = parse_body(_stream(**kwargs)).final_message()
    extra = kwargs.get("usage_extra") or {}
    message["usage"] = {"input_tokens": 1200, "output_tokens": 40, "inference_geo": "not_available", **extra}
    return json.dumps(message).encode()


class _Serve(BaseHTTPRequestHandler):
    sse: bytes = b""
    json_body: bytes = b""
    posts: list[dict[str, Any]]

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        self.posts.append(request)
        streamed = bool(request.get("stream"))
        body = self.sse if streamed else self.json_body
        self.send_response(200)
        self.send_header("content-type", "text/event-stream" if streamed else "application/json")
        self.send_header("request-id", "req_011CFacts")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(**kwargs: Any) -> tuple[str, list[dict[str, Any]]]:
        posts: list[dict[str, Any]] = []
        attrs = {"sse": _stream(**kwargs), "json_body": _json_body(**kwargs), "posts": posts}
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Serve,), attrs))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", posts

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _ask(base: str, *args: str) -> Result:
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base}
    return CliRunner().invoke(main, ["ask", "hi", "--model", MODEL, *args], env=env)


def _rows(home: Path) -> list[Any]:
    from canny.config import default_ledger
    from canny.ledger import open_ledger

    ledger = open_ledger(default_ledger())
    try:
        return list(ledger.records())
    finally:
        ledger.close()


def _expected(input_tokens: int = 1200, output: int = 40) -> Decimal:
    # Sonnet 4.6 list rates: $3 input, $15 output per million tokens.
    return (Decimal(input_tokens) * 3 + Decimal(output) * 15) / 1_000_000


def test_ask_streams_prices_and_records_not_available(serve: Any, clean_env: Path) -> None:
    """`inference_geo: not_available` is priced at list rates: exit 0, one ok row with the exact cost."""
    base, _ = serve()
    result = _ask(base)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.count("Facts are facts.") == 1
    (row,) = _rows(clean_env)
    assert row.outcome == "ok"
    assert row.cost_usd == _expected()
    assert row.inference_geo == "not_available"


def test_ask_no_stream_json_prints_the_answer(serve: Any, clean_env: Path) -> None:
    """`--no-stream --json` prints the JSON result for a not_available response, and records it."""
    base, _ = serve()
    result = _ask(base, "--no-stream", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert Decimal(str(payload["cost_usd"])) == _expected()
    assert [r.outcome for r in _rows(clean_env)] == ["ok"]


def test_refusal_with_not_available_exits_5_and_is_billed(serve: Any, clean_env: Path) -> None:
    """A refusal reporting not_available exits 5 (not 2) and is billed as its usage reports."""
    details = {"type": "refusal", "category": "cyber", "explanation": "declined"}
    base, _ = serve(stop_reason="refusal", text="", stop_details=details)
    result = _ask(base)
    assert result.exit_code == 5, result.stderr
    (row,) = _rows(clean_env)
    assert (row.outcome, row.refusal_category) == ("refused", "cyber")
    assert row.cost_usd == _expected()


def test_budget_reservation_is_settled_not_held(serve: Any, clean_env: Path) -> None:
    """With a daily budget set, the reservation of a not_available call is settled at its real cost."""
    from canny import budget
    from canny.config import default_ledger
    from canny.ledger import open_ledger

    runner = CliRunner()
    assert runner.invoke(main, ["budget", "set", "--day", "5"]).exit_code == 0
    base, _ = serve()
    assert _ask(base).exit_code == 0
    ledger = open_ledger(default_ledger())
    try:
        held, _, _ = budget.reservations_in_flight(ledger)
        (status,) = budget.budget_status(ledger)
    finally:
        ledger.close()
    assert held == 0
    assert (status.spent, status.reserved) == (_expected(), Decimal(0))


@pytest.mark.parametrize("stream", [True, False])
def test_client_records_unexpected_values_as_sent(serve: Any, clean_env: Path, stream: bool) -> None:
    """An unknown stop_reason, block type and count: the call succeeds, the row says unpriced, warned once."""
    import warnings

    import canny
    from canny.errors import ResponseWarning

    base, _ = serve(usage_extra={"quantum_tokens": 9}, stop_reason="daydream", block_type="hologram")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with canny.Client(api_key=CANARY_KEY, base_url=base, model=MODEL) as client:
            if stream:
                with client.stream("hi") as s:
                    text = "".join(s)
                assert s.result is not None
                result = s.result
            else:
                result = client.create("hi")
                text = result.text
    assert text == "Facts are facts."
    assert result.outcome == "ok"
    assert result.stop_reason == "daydream"
    assert result.cost is None
    kinds = [str(w.message) for w in caught if issubclass(w.category, ResponseWarning)]
    assert any("quantum_tokens" in k for k in kinds)
    assert any("daydream" in k for k in kinds)
    (row,) = _rows(clean_env)
    assert (row.outcome, row.stop_reason, row.cost_usd) == ("ok", "daydream", None)
    assert row.usage.input == 1200


def test_meter_records_not_available(serve: Any, clean_env: Path) -> None:
    """canny.meter on a plain SDK client writes the row for a not_available response, no warning."""
    import warnings

    import anthropic

    import canny

    base, _ = serve()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdk = canny.meter(anthropic.Anthropic(api_key=CANARY_KEY, base_url=base, max_retries=0))
        message = sdk.messages.create(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
        with sdk.messages.stream(model=MODEL, max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as stream:
            streamed = stream.get_final_text()
    assert message.content[0].text == streamed == "Facts are facts."  # type: ignore[union-attr]
    rows = _rows(clean_env)
    assert [r.outcome for r in rows] == ["ok", "ok"]
    assert [r.cost_usd for r in rows] == [_expected(), _expected()]


def test_replay_and_ask_give_the_same_figure(serve: Any, clean_env: Path, tmp_path: Path) -> None:
    """`canny replay` of the bytes `canny ask` received prices them exactly as the ask's row."""
    details = {"type": "refusal", "category": "cyber", "explanation": "declined"}
    body = _stream(stop_reason="refusal", text="", stop_details=details)
    path = tmp_path / "refusal.sse"
    path.write_bytes(body)
    base, _ = serve(stop_reason="refusal", text="", stop_details=details)
    assert _ask(base).exit_code == 5
    (row,) = _rows(clean_env)
    replayed = CliRunner().invoke(main, ["replay", str(path), "--json"])
    assert replayed.exit_code == 0, replayed.stderr
    assert Decimal(json.loads(replayed.stdout)["cost_usd"]) == row.cost_usd == _expected()
