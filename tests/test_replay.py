"""`canny replay`, `canny cost` and `canny.cost` agree with each other and with hand-computed
official-rate costs on recorded streams."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

import canny
from canny.cli import main
from tests.test_pricing import REFERENCE

FIXTURES = Path(__file__).parent / "fixtures"

# (fixture, model, text, stop_reason, complete, usage buckets, hand-computed cost)
CASES = [
    # Opus 4.8: 25 x $5 + 15 x $25 per MTok.
    ("basic_padded.sse", "claude-opus-4-8", "Hello!", "end_turn", True, (25, 15, 0, 0, 0), "0.0005"),
    # The same stream without message_stop: same bill, but not complete.
    ("no_message_stop.sse", "claude-opus-4-8", "Hello!", "end_turn", False, (25, 15, 0, 0, 0), "0.0005"),
    # Cut after the first delta: message_start usage only (output placeholder 1).
    # Opus 4.8, cut before message_delta: output estimated as ceil(len("Hello") / 4) = 2 (message_start said 1).
    ("truncated.sse", "claude-opus-4-8", "Hello", None, False, (25, 2, 0, 0, 0), "0.000175"),
    # Sonnet 4.6: 1204 x $3 + 856 x $6 (1h write) + 38,912 x $0.30 + 534 x $15.
    (
        "cache_1h_sonnet46.sse",
        "claude-sonnet-4-6",
        "Cached answer.",
        "end_turn",
        True,
        (1204, 534, 38912, 0, 856),
        "0.0284316",
    ),
    # Opus 4.8 with web search: input grows to 10,682 in message_delta; 510 x $25; one search $0.01.
    (
        "web_search_opus48.sse",
        "claude-opus-4-8",
        "I'll check the current weather. It is sunny.",
        "end_turn",
        True,
        (10682, 510, 0, 0, 0),
        "0.07616",
    ),
    # Haiku 4.5, in-band error after a delta: 40 x $1 + 2 x $5 (output estimated: ceil(7 / 4)); incomplete.
    ("error_midstream.sse", "claude-haiku-4-5", "Partial", None, False, (40, 2, 0, 0, 0), "0.00005"),
    # Sonnet 5.5 refusal after partial output (billed): 120 x $2 + 4 x $10.
    ("refusal_partial.sse", "claude-sonnet-5-5", "Here is how", "refusal", True, (120, 4, 0, 0, 0), "0.00028"),
    # Haiku 4.5 JSON body: 2048 x $1 + 148 x $1.25 + 100 x $2 + 1800 x $0.10 + 503 x $5.
    (
        "message_haiku45.json",
        "claude-haiku-4-5-20251001",
        "Four.",
        "end_turn",
        True,
        (2048, 503, 1800, 148, 100),
        "0.005128",
    ),
]


@pytest.mark.parametrize(("fixture", "model", "text", "stop", "complete", "buckets", "expected"), CASES)
def test_replay_matches_hand_computed_cost(
    fixture: str,
    model: str,
    text: str,
    stop: str | None,
    complete: bool,
    buckets: tuple[int, int, int, int, int],
    expected: str,
) -> None:
    """replay --json gives the text, stop reason, completeness, buckets and the exact cost."""
    result = CliRunner().invoke(main, ["replay", str(FIXTURES / fixture), "--json", "--at", "2026-11-24"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["model"] == model
    assert data["text"] == text
    assert data["stop_reason"] == stop
    assert data["complete"] is complete
    usage = data["usage"]
    optional = {"server_tool_use", "error", "output_tokens_estimated"}
    assert set(data) - optional == {"model", "text", "stop_reason", "complete", "usage", "cost_usd"}
    assert ("output_tokens_estimated" in data) is (fixture in {"truncated.sse", "error_midstream.sse"})
    assert set(usage) == {
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_5m_tokens",
        "cache_write_1h_tokens",
    }
    assert (
        usage["input_tokens"],
        usage["output_tokens"],
        usage["cache_read_input_tokens"],
        usage["cache_write_5m_tokens"],
        usage["cache_write_1h_tokens"],
    ) == buckets
    assert data["cost_usd"] == expected


@pytest.mark.parametrize(("fixture", "model", "expected"), [(c[0], c[1], c[6]) for c in CASES])
def test_cost_function_and_command_agree_with_replay(fixture: str, model: str, expected: str) -> None:
    """canny.cost and `canny cost` price the replayed (billed) usage to the same micro-dollar."""
    from canny.streaming import parse_body

    acc = parse_body((FIXTURES / fixture).read_bytes())
    api_usage = acc.billed_usage()[0].to_api()
    assert canny.cost(model, api_usage, at=date(2026, 11, 24)) == Decimal(expected)
    out = CliRunner().invoke(main, ["cost", "--model", model, "--usage", json.dumps(api_usage), "--at", "2026-11-24"])
    assert out.exit_code == 0, out.output
    assert out.stdout.strip() == expected


def test_human_replay_flags_incomplete_streams() -> None:
    """Without --json, replay prints the text and says why a stream is incomplete."""
    result = CliRunner().invoke(main, ["replay", str(FIXTURES / "error_midstream.sse")])
    assert result.exit_code == 0
    assert "Partial" in result.stdout
    assert "INCOMPLETE (in-band error: overloaded_error)" in result.stderr
    missing = CliRunner().invoke(main, ["replay", str(FIXTURES / "no_message_stop.sse")])
    assert "(no message_stop)" in missing.stderr


def test_replay_of_garbage_is_a_clean_error(tmp_path: Path) -> None:
    """A file that is neither SSE nor JSON is a one-line error, not a traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(main, ["replay", str(bad)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def _json_body(model: str, usage: dict[str, object]) -> str:
    return json.dumps(
        {
            "id": "msg_x",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "ok"}],
            "stop_reason": "end_turn",
            "usage": usage,
        }
    )


MIXED_API = {
    "input_tokens": 1_000,
    "cache_creation_input_tokens": 5_000,
    "cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 3_000},
    "cache_read_input_tokens": 40_000,
    "output_tokens": 500,
}


@pytest.mark.parametrize("batch", [False, True], ids=["standard", "batch"])
@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_cost_command_and_replay_agree_for_every_model(model: str, batch: bool, tmp_path: Path) -> None:
    """For every model, canny.cost, `canny cost` and `canny replay` give the hand-computed figure."""
    expected = Decimal(REFERENCE[model][5]) / (2 if batch else 1)
    assert canny.cost(model, MIXED_API, batch=batch, at=date(2026, 11, 20)) == expected
    flags = ["--batch"] if batch else []
    out = CliRunner().invoke(
        main, ["cost", "--model", model, "--usage", json.dumps(MIXED_API), "--at", "2026-11-20", *flags]
    )
    assert Decimal(out.stdout.strip()) == expected
    body = tmp_path / "response.json"
    body.write_text(_json_body(model, MIXED_API), encoding="utf-8")
    replayed = CliRunner().invoke(main, ["replay", str(body), "--json", "--at", "2026-11-20", *flags])
    assert Decimal(json.loads(replayed.stdout)["cost_usd"]) == expected
