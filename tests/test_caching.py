"""Prompt caching: where apply_cache puts breakpoints, and what caching does end to end
(the emulator's prefix cache, the ledger, the budget worst case and `canny report --savings`)."""

from __future__ import annotations

import asyncio
import copy
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from canny import errors
from canny.caching import (
    DEFAULT_MIN_CACHEABLE_TOKENS,
    MAX_BREAKPOINTS,
    apply_cache,
    estimate_tokens,
    min_cacheable_tokens,
)
from canny.cli import main
from canny.client import AsyncClient, Client
from canny.pricing import rates, worst_case_cost
from tests.conftest import CANARY_KEY, MemoryLedger

FIVE = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
MODEL = "claude-sonnet-5-5"  # minimum cacheable length 512 tokens


def words(tokens: int) -> str:
    """Text whose low estimate (UTF-8 bytes / 4) is about ``tokens``."""
    return "abc " * tokens


LONG = words(600)  # over 512, under 1,024
SHORT = words(50)


def _request(**extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "tools": [
            {"name": "lookup", "description": "Look a word up.", "input_schema": {"type": "object"}},
            {"name": "search", "description": LONG, "input_schema": {"type": "object"}},
        ],
        "system": "You are terse. " + LONG,
        "messages": [
            {"role": "user", "content": "First question. " + LONG},
            {"role": "assistant", "content": [{"type": "text", "text": "First answer."}]},
            {"role": "user", "content": "Second question?"},
        ],
    }
    body.update(extra)
    return body


def _markers(body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(where, cache_control) for every marked block, in cache order."""
    found: list[tuple[str, Any]] = []
    for i, tool in enumerate(body.get("tools", [])):
        if tool.get("cache_control"):
            found.append((f"tools[{i}]", tool["cache_control"]))
    system = body.get("system")
    if isinstance(system, list):
        for i, block in enumerate(system):
            if block.get("cache_control"):
                found.append((f"system[{i}]", block["cache_control"]))
    for i, message in enumerate(body["messages"]):
        content = message["content"]
        if isinstance(content, list):
            for j, block in enumerate(content):
                if isinstance(block, dict) and block.get("cache_control"):
                    found.append((f"messages[{i}][{j}]", block["cache_control"]))
    return found


# --- placement ------------------------------------------------------------------------


def test_auto_marks_last_tool_system_and_the_turn_before_the_last_user_turn() -> None:
    """Tools, the (string) system prompt and the message before the final user turn each get a 5m marker."""
    out = apply_cache(_request(), model=MODEL)
    assert _markers(out) == [("tools[1]", FIVE), ("system[0]", FIVE), ("messages[1][0]", FIVE)]
    assert out["system"][0]["text"].startswith("You are terse.")
    assert out["messages"][2]["content"] == "Second question?"  # the new turn is never written


def test_one_hour_ttl_marks_with_ttl() -> None:
    """ttl='1h' puts {"type": "ephemeral", "ttl": "1h"} on every marker."""
    out = apply_cache(_request(), model=MODEL, ttl="1h")
    assert [marker for _, marker in _markers(out)] == [HOUR, HOUR, HOUR]


def test_prefixes_below_the_minimum_are_not_marked() -> None:
    """Each marker needs the whole prefix up to it to reach the model's minimum."""
    body = _request(tools=[{"name": "t", "description": "short", "input_schema": {}}], system=SHORT)
    body["messages"][0]["content"] = SHORT
    assert _markers(apply_cache(body, model=MODEL)) == []
    body["messages"][1]["content"] = [{"type": "text", "text": LONG}]  # the conversation makes it long enough
    assert [where for where, _ in _markers(apply_cache(body, model=MODEL))] == ["messages[1][0]"]


def test_thresholds_follow_the_model() -> None:
    """About 600 tokens of prefix is cacheable on Sonnet 5.5 (512), not on Sonnet 4.6 (1,024) or Haiku 4.5 (4,096)."""
    body = _request(tools=[], messages=[{"role": "user", "content": "hi"}], system=LONG)
    assert _markers(apply_cache(body, model="claude-sonnet-5-5")) == [("system[0]", FIVE)]
    assert _markers(apply_cache(body, model="claude-sonnet-4-6")) == []
    assert _markers(apply_cache(body, model="claude-haiku-4-5")) == []
    assert _markers(apply_cache({**body, "system": words(1100)}, model="claude-sonnet-4-6")) == [("system[0]", FIVE)]
    assert _markers(apply_cache({**body, "system": words(1100)}, model="claude-haiku-4-5")) == []


def test_minimums_resolve_aliases_and_default_for_unknown_models() -> None:
    """Aliases and dated ids find their model's minimum; unknown models get 1,024."""
    assert min_cacheable_tokens("sonnet") == 512
    assert min_cacheable_tokens("claude-haiku-4-5-20251001") == 4096
    assert min_cacheable_tokens("claude-opus-4-7") == 2048
    assert min_cacheable_tokens("in-house-model") == DEFAULT_MIN_CACHEABLE_TOKENS == 1024


def test_estimate_is_low_and_ignores_base64_and_thinking() -> None:
    """bytes / 4 for text; base64 image data and thinking blocks count nothing."""
    assert estimate_tokens("abcd" * 100) == 100
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100_000}}
    assert estimate_tokens(image) < 30
    assert estimate_tokens({"type": "thinking", "thinking": "x" * 10_000, "signature": "s"}) == 0


def test_off_returns_an_unchanged_copy() -> None:
    """mode='off' gives a new dict equal to the input, with nothing marked."""
    body = _request()
    out = apply_cache(body, model=MODEL, mode="off")
    assert out == body
    assert out is not body


def test_the_callers_objects_are_never_modified() -> None:
    """The input dict, its lists, messages and blocks are exactly as they were after marking."""
    body = _request(system=[{"type": "text", "text": LONG}])
    before = copy.deepcopy(body)
    out = apply_cache(body, model=MODEL, ttl="1h")
    assert body == before
    assert out["system"] is not body["system"]
    assert out["messages"][1] is not body["messages"][1]
    assert out["messages"][0] is body["messages"][0]  # untouched parts are shared, not copied


def test_thinking_and_empty_text_blocks_are_skipped() -> None:
    """The marker goes on the last block that can carry one: never thinking, never empty text."""
    body = _request(system=[{"type": "text", "text": LONG}, {"type": "text", "text": ""}])
    body["messages"][1]["content"] = [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}},
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
    ]
    out = apply_cache(body, model=MODEL)
    assert [where for where, _ in _markers(out)] == ["tools[1]", "system[0]", "messages[1][1]"]
    only_thinking = [{"type": "redacted_thinking", "data": "opaque"}]
    body["messages"][1]["content"] = only_thinking
    assert [where for where, _ in _markers(apply_cache(body, model=MODEL))] == ["tools[1]", "system[0]"]


def test_existing_breakpoints_are_kept_and_counted() -> None:
    """A block the caller marked is left alone, and caller markers count towards the 4."""
    body = _request(system=[{"type": "text", "text": LONG, "cache_control": HOUR}])
    out = apply_cache(body, model=MODEL, ttl="1h")
    assert _markers(out) == [("tools[1]", HOUR), ("system[0]", HOUR), ("messages[1][0]", HOUR)]
    body["messages"][0]["content"] = [
        {"type": "text", "text": "a", "cache_control": HOUR},
        {"type": "text", "text": LONG, "cache_control": HOUR},
    ]
    body["messages"][2]["content"] = [{"type": "text", "text": "b", "cache_control": HOUR}]
    out = apply_cache(body, model=MODEL, ttl="1h")  # four already: nothing added
    assert len(_markers(out)) == MAX_BREAKPOINTS
    assert out["tools"] == body["tools"]


def test_a_top_level_cache_control_uses_a_slot() -> None:
    """Automatic caching (top-level cache_control) counts as a breakpoint at the end."""
    body = _request(cache_control=FIVE)
    body["messages"][2]["content"] = [
        {"type": "text", "text": "x", "cache_control": FIVE},
        {"type": "text", "text": "y", "cache_control": FIVE},
    ]
    out = apply_cache(body, model=MODEL)
    assert [where for where, _ in _markers(out)] == ["tools[1]", "messages[2][0]", "messages[2][1]"]


def test_never_a_5m_marker_before_a_callers_1h_one() -> None:
    """With the caller's 1h marker late in the prompt, 5m markers before it are not added."""
    body = _request()
    body["messages"][2]["content"] = [{"type": "text", "text": "Second question?", "cache_control": HOUR}]
    assert [where for where, _ in _markers(apply_cache(body, model=MODEL))] == ["messages[2][0]"]
    assert len(_markers(apply_cache(body, model=MODEL, ttl="1h"))) == 4


def test_never_a_1h_marker_after_a_callers_5m_one() -> None:
    """With the caller's 5m marker on the system prompt, 1h goes on the tools only (before it)."""
    body = _request(system=[{"type": "text", "text": LONG, "cache_control": FIVE}])
    out = apply_cache(body, model=MODEL, ttl="1h")
    assert _markers(out) == [("tools[1]", HOUR), ("system[0]", FIVE)]


def test_bad_mode_or_ttl_is_a_config_error() -> None:
    """Anything but auto/off and 5m/1h is refused with a ConfigError (exit 2)."""
    with pytest.raises(errors.ConfigError, match="cache must be"):
        apply_cache(_request(), model=MODEL, mode="on")
    with pytest.raises(errors.ConfigError, match="cache_ttl must be"):
        apply_cache(_request(), model=MODEL, ttl="10m")


_block = st.one_of(
    st.builds(lambda n: {"type": "text", "text": words(n)}, st.integers(0, 700)),
    st.just({"type": "text", "text": ""}),
    st.just({"type": "thinking", "thinking": "t", "signature": "s"}),
    st.builds(lambda ttl: {"type": "text", "text": "m", "cache_control": {"type": "ephemeral", "ttl": ttl}},
              st.sampled_from(["5m", "1h"])),
)  # fmt: skip
_message = st.builds(
    lambda role, blocks: {"role": role, "content": blocks},
    st.sampled_from(["user", "assistant"]),
    st.lists(_block, min_size=1, max_size=4),
)


def _in_order(markers: list[tuple[str, Any]]) -> bool:
    """No 1h breakpoint after a 5m one."""
    ttls = [marker.get("ttl", "5m") for _, marker in markers]
    return "5m" not in ttls or "1h" not in ttls[ttls.index("5m") :]


@given(
    system=st.one_of(st.none(), st.builds(words, st.integers(0, 800)), st.lists(_block, max_size=3)),
    messages=st.lists(_message, min_size=1, max_size=6),
    tools=st.lists(st.builds(lambda n: {"name": "t", "description": words(n)}, st.integers(0, 400)), max_size=3),
    ttl=st.sampled_from(["5m", "1h"]),
)
@settings(max_examples=200, deadline=None)
def test_any_request_keeps_the_api_rules(system: Any, messages: Any, tools: Any, ttl: Any) -> None:
    """For any request: input untouched, caller markers kept, at most 4 in all, 1h before 5m kept."""
    body: dict[str, Any] = {"model": MODEL, "messages": messages, "tools": tools}
    if system is not None:
        body["system"] = system
    before = copy.deepcopy(body)
    out = apply_cache(body, model=MODEL, ttl=ttl)
    assert body == before
    had, got = _markers(body), _markers(out)
    assert all(marker in got for marker in had)
    assert len(got) <= max(MAX_BREAKPOINTS, len(had))
    if len(had) >= MAX_BREAKPOINTS:
        assert got == had
    added = [marker for where, marker in got if (where, marker) not in had]
    assert all(marker == (HOUR if ttl == "1h" else FIVE) for marker in added)
    if _in_order(had):
        assert _in_order(got)


# --- end to end against the emulator --------------------------------------------------

SYSTEM = "You answer questions about the house rules. " + " ".join(
    f"Rule {i}: be kind to guest {i}." for i in range(200)
)


def _client(emulator: Any, run_id: str, ledger: Any, **kwargs: Any) -> Client:
    return Client(
        api_key=CANARY_KEY, base_url=emulator.url_for("ok", "ok", run=run_id), ledger=ledger, model=MODEL, **kwargs
    )


def test_second_call_reads_what_the_first_wrote(emulator: Any, run_id: str, memory_ledger: MemoryLedger) -> None:
    """cache='auto' with a long system prompt: call 1 writes 5m entries, call 2 reads them and costs less."""
    with _client(emulator, run_id, memory_ledger) as client:
        first = client.create("What about pets?", system=SYSTEM, max_tokens=50, cache="auto")
        second = client.create("What about pets?", system=SYSTEM, max_tokens=50, cache="auto")
    assert first.usage.cache_write_5m > 0
    assert first.usage.cache_read == 0
    assert second.usage.cache_read == first.usage.cache_write_5m
    assert second.usage.cache_write_5m == 0
    assert first.cost is not None and second.cost is not None
    assert second.cost < first.cost
    sent = emulator.requests(run=run_id)[0].body
    assert sent["system"][-1]["cache_control"] == FIVE
    rows = memory_ledger.rows
    assert [r.usage.cache_write_5m > 0 for r in rows] == [True, False]
    assert [r.usage.cache_read > 0 for r in rows] == [False, True]


def test_one_hour_writes_are_priced_at_twice_input(emulator: Any, run_id: str) -> None:
    """cache_ttl='1h' writes 1h tokens, billed at the 1h write rate, 2x the input rate."""
    with _client(emulator, run_id, False) as client:
        result = client.create("Pets?", system=SYSTEM, max_tokens=50, cache="auto", cache_ttl="1h")
    usage = result.usage
    assert usage.cache_write_1h > 0
    assert usage.cache_write_5m == 0
    found = rates(MODEL)
    assert found is not None
    assert found.cache_write_1h == 2 * found.input
    expected = usage.input * found.input + usage.cache_write_1h * found.cache_write_1h + usage.output * found.output
    assert result.cost == expected.scaleb(-6)


def test_cache_off_by_default_sends_no_marker(emulator: Any, run_id: str) -> None:
    """Without cache= (and no config) nothing is marked and nothing is written."""
    with _client(emulator, run_id, False) as client:
        result = client.create("Pets?", system=SYSTEM, max_tokens=50)
    assert result.usage.cache_write_5m == result.usage.cache_write_1h == 0
    assert "cache_control" not in json.dumps(emulator.requests(run=run_id)[0].body)


def test_config_turns_caching_on(emulator: Any, run_id: str, clean_env: Path) -> None:
    """cache = "auto" and cache_ttl = "1h" in config.toml apply to calls that do not say."""
    (clean_env / "config.toml").write_text('cache = "auto"\ncache_ttl = "1h"\n', encoding="utf-8")
    with _client(emulator, run_id, False) as client:
        assert client.create("Pets?", system=SYSTEM, max_tokens=50).usage.cache_write_1h > 0
        assert client.create("Pets?", system=SYSTEM, max_tokens=50, cache="off").usage.cache_read == 0


def test_bad_cache_setting_in_config_is_an_error(clean_env: Path) -> None:
    """An unknown cache value in config.toml names the key."""
    from canny.config import load_settings

    (clean_env / "config.toml").write_text('cache = "always"\n', encoding="utf-8")
    with pytest.raises(errors.ConfigError, match=r"config\.cache must be 'auto' or 'off'"):
        load_settings()


def test_budget_worst_case_uses_the_write_rate(emulator: Any, run_id: str) -> None:
    """A call marked for caching reserves its input at the cache-write rate (a hit cannot be promised)."""
    common: dict[str, Any] = {"stream": False, "system": SYSTEM, "model": None, "max_tokens": 50, "project": None,
                              "tags": None, "session_id": None, "max_cost": None, "params": {}}  # fmt: skip
    with _client(emulator, run_id, False) as client:
        cached = client._spec("Pets?", **common, cache="auto", cache_ttl="1h")
        plain = client._spec("Pets?", **common)
    tokens = cached.estimated_input_tokens()
    assert cached.cache_ttl == "1h"
    assert cached.worst_case() == worst_case_cost(MODEL, input_tokens=tokens, max_tokens=50, cache_ttl="1h")
    plain_worst, cached_worst = plain.worst_case(), cached.worst_case()
    assert plain_worst is not None and cached_worst is not None
    assert cached_worst > plain_worst


def test_async_stream_and_session_cache_too(emulator: Any, run_id: str) -> None:
    """AsyncClient.stream and a session's create pass cache= through: the second call reads."""

    async def go() -> tuple[int, int]:
        client = AsyncClient(api_key=CANARY_KEY, base_url=emulator.url_for(run=run_id), ledger=False, model=MODEL)
        async with client:
            async with client.stream("Pets?", system=SYSTEM, max_tokens=50, cache="auto") as stream:
                first = await stream.final()
            async with client.session(max_cost="1") as session:
                second = await session.create("Pets?", system=SYSTEM, max_tokens=50, cache="auto")
        return first.usage.cache_write_5m, second.usage.cache_read

    written, read = asyncio.run(go())
    assert written > 0
    assert read == written


def test_ask_cache_flags_reach_the_request(emulator: Any, run_id: str) -> None:
    """`canny ask --cache auto --cache-ttl 1h` marks the system prompt and writes a 1h entry."""
    url = emulator.url_for(run=run_id)
    env = {"ANTHROPIC_API_KEY": CANARY_KEY}
    args = ["ask", "--base-url", url, "-s", SYSTEM, "--cache", "auto", "--cache-ttl", "1h", "--json", "Pets?"]
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["usage"]["cache_write_1h"] > 0
    assert emulator.requests(run=run_id)[0].body["system"][-1]["cache_control"] == HOUR


def test_report_savings_is_positive_after_a_read(emulator: Any, run_id: str, clean_env: Path) -> None:
    """After a write and a read, `canny report --savings --json` shows a positive saved_usd, exact."""
    path = clean_env / "ledger.db"
    with _client(emulator, run_id, path) as client:
        first = client.create("Pets?", system=SYSTEM, max_tokens=50, cache="auto")
        second = client.create("Pets?", system=SYSTEM, max_tokens=50, cache="auto")
    result = CliRunner().invoke(main, ["report", "--by", "model", "--savings", "--json", "--ledger", str(path)])
    assert result.exit_code == 0, result.stderr
    total = json.loads(result.stdout)[-1]
    found = rates(MODEL)
    assert found is not None
    written, read = first.usage.cache_write_5m, second.usage.cache_read
    expected = (read * (found.input - found.cache_read) - written * (found.cache_write_5m - found.input)).scaleb(-6)
    assert expected > 0
    assert Decimal(total["saved_usd"]) == expected
    plain = CliRunner().invoke(main, ["report", "--json", "--ledger", str(path)])
    assert "saved_usd" not in json.loads(plain.stdout)[-1]
    table = CliRunner().invoke(main, ["report", "--savings", "--ledger", str(path)]).stdout
    assert table.splitlines()[0].split()[-1] == "saved"
    page = clean_env / "report.html"
    CliRunner().invoke(main, ["report", "--savings", "--html", str(page), "--ledger", str(path)])
    assert "saved by caching" in page.read_text(encoding="utf-8")
