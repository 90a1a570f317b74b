"""One cost rule: `canny ask` (the Client), `canny.meter`, `canny replay` and `canny cost`
give the same figure for the same bytes (issue 8, item 9), for random usage."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx2
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import canny
from canny.cli import main
from tests.conftest import CANARY_KEY, MemoryLedger

_counts = st.integers(min_value=0, max_value=2_000_000)


@st.composite
def _responses(draw: st.DrawFn) -> dict[str, Any]:
    """A response's model, stop reason, and usage object as the API could report it."""
    w5, w1h = draw(_counts), draw(_counts)
    usage: dict[str, Any] = {
        "input_tokens": draw(_counts),
        "output_tokens": draw(st.integers(min_value=1, max_value=64_000)),
        "cache_read_input_tokens": draw(_counts),
        "cache_creation_input_tokens": w5 + w1h,
        "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1h},
    }
    geo = draw(st.sampled_from([None, "global", "us", "not_available"]))
    if geo is not None:
        usage["inference_geo"] = geo
    if draw(st.booleans()):
        usage["server_tool_use"] = {"web_search_requests": draw(st.integers(0, 5)), "web_fetch_requests": 0}
    return {
        "model": draw(st.sampled_from(["claude-sonnet-4-6", "claude-opus-4-6", "claude-haiku-4-5", "claude-opus-4-8"])),
        "stop_reason": draw(st.sampled_from(["end_turn", "refusal", "max_tokens", "tool_use"])),
        "usage": usage,
    }


def _sse(response: dict[str, Any]) -> bytes:
    usage: dict[str, Any] = response["usage"]
    start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {"output_tokens": 1}
    events: list[dict[str, Any]] = [
        {
            "type": "message_start",
            "message": {
                "id": "msg_01Rule",
                "type": "message",
                "role": "assistant",
                "model": response["model"],
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": response["stop_reason"]}, "usage": usage},
        {"type": "message_stop"},
    ]
    return b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)


def _json(response: dict[str, Any]) -> bytes:
    body = {
        "id": "msg_01Rule",
        "type": "message",
        "role": "assistant",
        "model": response["model"],
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": response["stop_reason"],
        "stop_sequence": None,
        "usage": response["usage"],
    }
    return json.dumps(body).encode()


def _transport(response: dict[str, Any]) -> httpx2.MockTransport:
    def handler(request: httpx2.Request) -> httpx2.Response:
        streamed = bool(json.loads(request.content).get("stream"))
        content = _sse(response) if streamed else _json(response)
        kind = "text/event-stream" if streamed else "application/json"
        return httpx2.Response(200, headers={"content-type": kind, "request-id": "req_rule"}, content=content)

    return httpx2.MockTransport(handler)


def _client_costs(response: dict[str, Any]) -> list[Decimal | None]:
    ledger = MemoryLedger()
    http = httpx2.Client(transport=_transport(response))
    with canny.Client(
        api_key=CANARY_KEY, base_url="http://127.0.0.1:9", model=response["model"], ledger=ledger, http_client=http
    ) as client:
        with client.stream("hi") as stream:
            "".join(stream)
        assert stream.result is not None
        streamed = stream.result.cost
        created = client.create("hi").cost
    assert [r.cost_usd for r in ledger.rows] == [streamed, created]
    return [streamed, created]


def _meter_costs(response: dict[str, Any]) -> list[Decimal | None]:
    ledger = MemoryLedger()
    http = httpx2.Client(transport=_transport(response))
    messages = [{"role": "user", "content": "hi"}]
    ask: dict[str, Any] = {"model": response["model"], "max_tokens": 64, "messages": messages}
    with anthropic.Anthropic(api_key=CANARY_KEY, base_url="http://127.0.0.1:9", http_client=http) as sdk:
        metered = canny.meter(sdk, ledger=ledger)
        metered.messages.create(**ask)
        with metered.messages.stream(**ask) as stream:
            stream.get_final_message()
    return [r.cost_usd for r in ledger.rows]


def _cli_costs(response: dict[str, Any], tmp: Path) -> list[Decimal | None]:
    runner = CliRunner()
    figures: list[Decimal | None] = []
    for name, body in (("r.sse", _sse(response)), ("r.json", _json(response))):
        path = tmp / name
        path.write_bytes(body)
        out = runner.invoke(main, ["replay", str(path), "--json"])
        assert out.exit_code == 0, out.stderr
        value = json.loads(out.stdout)["cost_usd"]
        figures.append(None if value is None else Decimal(value))
    out = runner.invoke(main, ["cost", "--usage", _json(response).decode()])
    assert out.exit_code == 0, out.stderr
    text = out.stdout.strip()
    figures.append(None if text == "unpriced" else Decimal(text))
    return figures


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_responses())
def test_every_path_prices_the_same_bytes_alike(tmp_path: Path, response: dict[str, Any]) -> None:
    """Client stream/create, meter create/stream, replay (SSE and JSON) and `canny cost` agree to the digit."""
    from canny.pricing import cost

    expected = cost(response["model"], response["usage"])
    figures = [*_client_costs(response), *_meter_costs(response), *_cli_costs(response, tmp_path)]
    assert figures == [expected] * 7
    if response["stop_reason"] == "refusal":
        assert expected is not None and expected > 0  # what the usage reports is billed


def test_reported_us_geo_is_billed_on_every_path(tmp_path: Path) -> None:
    """A response reporting inference_geo 'us' on Sonnet 4.6 costs 1.1x list on every path."""
    response: dict[str, Any] = {
        "model": "claude-sonnet-4-6",
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1_000_000, "output_tokens": 1_000_000, "inference_geo": "us"},
    }
    expected = (Decimal(3) + Decimal(15)) * Decimal("1.1")
    figures = [*_client_costs(response), *_meter_costs(response), *_cli_costs(response, tmp_path)]
    assert figures == [expected] * 7
