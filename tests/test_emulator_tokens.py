"""The emulator's token counting, answer text and prompt-cache accounting (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canny.emulator.cache import ROLE_TOKENS, PromptCache, prompt_blocks
from canny.emulator.tokens import (
    Directives,
    count_tokens,
    generate_text,
    parse_directives,
    split_deltas,
    truncate_to_tokens,
)
from canny.emulator.validation import ApiError, MessagesRequest, validate_messages


def test_count_tokens_is_about_four_characters_per_piece() -> None:
    """Words cost ceil(len/4) tokens, punctuation one each, whitespace nothing."""
    assert count_tokens("") == 0
    assert count_tokens("a") == 1
    assert count_tokens("Hello") == 2
    assert count_tokens("Hello, world!") == 2 + 1 + 2 + 1
    assert count_tokens("  \n\t ") == 0


@given(st.text(max_size=120), st.text(max_size=120))
@settings(max_examples=200, deadline=None)
def test_counts_add_up_across_whitespace(a: str, b: str) -> None:
    """Texts joined by whitespace count as the sum of their counts (so deltas add up)."""
    assert count_tokens(a + " " + b) == count_tokens(a) + count_tokens(b)


@given(st.text(max_size=200), st.integers(min_value=0, max_value=80))
@settings(max_examples=300, deadline=None)
def test_truncate_hits_the_limit_exactly(text: str, limit: int) -> None:
    """A cut prefix counts exactly min(limit, total) tokens."""
    cut = truncate_to_tokens(text, limit)
    assert text.startswith(cut)
    assert count_tokens(cut) == min(limit, count_tokens(text))


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_deltas_join_back_to_the_text(text: str) -> None:
    """Stream deltas concatenate to the full text, and their counts sum to its count."""
    deltas = split_deltas(text)
    assert "".join(deltas) == text
    assert sum(count_tokens(d) for d in deltas) == count_tokens(text)


def test_answers_are_deterministic_and_depend_on_the_prompt() -> None:
    """The same prompt always gets the same answer; another prompt gets another."""
    first = generate_text("What is a ledger?", Directives(), max_tokens=4096)
    assert first == generate_text("What is a ledger?", Directives(), max_tokens=4096)
    assert first != generate_text("What is a budget?", Directives(), max_tokens=4096)
    assert first.endswith(".")


def test_directives_shape_the_answer() -> None:
    """[[words=N]], [[tokens=N]] and [[say=...]] give exactly what they ask for."""
    prompt = "bench [[words=1000]]"
    words = generate_text(prompt, parse_directives(prompt), max_tokens=100_000)
    assert len(words.split()) == 1000
    prompt = "bench [[tokens=1000]]"
    assert count_tokens(generate_text(prompt, parse_directives(prompt), max_tokens=100_000)) == 1000
    prompt = "x [[tokens=1]]"
    assert count_tokens(generate_text(prompt, parse_directives(prompt), max_tokens=10)) == 1
    assert generate_text("[[say=Hi there.]]", parse_directives("[[say=Hi there.]]"), max_tokens=10) == "Hi there."
    assert parse_directives("a [[fault=refusal;category=bio]] b").fault == "refusal;category=bio"


def test_run_on_text_exceeds_the_limit() -> None:
    """run_on keeps talking past the natural end, so a cut at max_tokens is always possible."""
    text = generate_text("hi", Directives(), max_tokens=500, run_on=True)
    assert count_tokens(text) > 500


@pytest.mark.parametrize("value", ["0", "x", "-3", "999999999"])
def test_bad_word_counts_are_rejected(value: str) -> None:
    """[[words=N]] must be a whole number in range."""
    with pytest.raises(ValueError, match=r"\[\[words="):
        parse_directives(f"[[words={value}]]")


def _request(**body: Any) -> MessagesRequest:
    base: dict[str, Any] = {
        "model": "claude-opus-5-5",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    base.update(body)
    return validate_messages(base)


SYSTEM = [{"type": "text", "text": "You are terse. " * 40, "cache_control": {"type": "ephemeral"}}]


def test_input_tokens_cover_tools_system_and_messages() -> None:
    """Input tokens are the blocks' tokens plus a role marker per message."""
    tools = [{"name": "lookup", "description": "Find things", "input_schema": {"type": "object"}}]
    request = _request(system="Be brief.", tools=tools)
    blocks = prompt_blocks(request)
    assert len(blocks) == 3
    assert blocks[1].tokens == count_tokens("Be brief.")
    assert blocks[2].tokens == ROLE_TOKENS + count_tokens("Hi")


def test_cache_write_then_read() -> None:
    """A marked prefix is written on first use, read on the next identical prefix."""
    cache = PromptCache()
    blocks = prompt_blocks(_request(system=SYSTEM))
    prefix = blocks[0].tokens
    first = cache.charge(blocks)
    assert (first.cache_write_5m, first.cache_write_1h, first.cache_read) == (prefix, 0, 0)
    assert first.input_tokens == blocks[1].tokens
    second = cache.charge(prompt_blocks(_request(system=SYSTEM, messages=[{"role": "user", "content": "Other"}])))
    assert (second.cache_creation, second.cache_read) == (0, prefix)
    assert first.total == sum(b.tokens for b in blocks)


def test_cache_entries_expire_after_their_ttl() -> None:
    """A 5-minute entry is gone after five minutes; reading refreshes it."""
    now = [0.0]
    cache = PromptCache(clock=lambda: now[0])
    blocks = prompt_blocks(_request(system=SYSTEM))
    cache.charge(blocks)
    now[0] = 299.0
    assert cache.charge(blocks).cache_read > 0
    now[0] = 299.0 + 301.0
    assert cache.charge(blocks).cache_read == 0


def test_one_hour_then_five_minute_breakpoints_split_the_writes() -> None:
    """With a 1h and a later 5m breakpoint, writes split between the two TTL buckets."""
    system = [
        {"type": "text", "text": "Long stable rules. " * 30, "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "text", "text": "Session notes. " * 20, "cache_control": {"type": "ephemeral"}},
    ]
    blocks = prompt_blocks(_request(system=system))
    usage = PromptCache().charge(blocks)
    assert usage.cache_write_1h == blocks[0].tokens
    assert usage.cache_write_5m == blocks[1].tokens
    assert usage.input_tokens == blocks[2].tokens


def test_top_level_cache_control_marks_the_last_block() -> None:
    """Automatic caching puts the breakpoint on the last block: everything is written."""
    blocks = prompt_blocks(_request(cache_control={"type": "ephemeral", "ttl": "1h"}))
    usage = PromptCache().charge(blocks)
    assert (usage.input_tokens, usage.cache_write_1h) == (0, sum(b.tokens for b in blocks))


def test_cache_lookback_finds_an_earlier_prefix() -> None:
    """A growing conversation reads the earlier breakpoint's prefix and writes only the new part."""
    cache = PromptCache()
    auto = {"type": "ephemeral"}
    turn1 = [{"role": "user", "content": "First question, fairly long."}]
    first = cache.charge(prompt_blocks(_request(messages=turn1, cache_control=auto)))
    turn2 = [*turn1, {"role": "assistant", "content": "An answer."}, {"role": "user", "content": "More?"}]
    blocks = prompt_blocks(_request(messages=turn2, cache_control=auto, model="claude-opus-5-5"))
    second = cache.charge(blocks)
    assert second.cache_read == first.cache_write_5m
    assert second.cache_write_5m == blocks[1].tokens + blocks[2].tokens


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}] * 5}, "maximum of 4"),
        (
            {
                "system": [
                    {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
                    {"type": "text", "text": "b", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                ]
            },
            "must not come after",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}]}
                ],
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
            "differs from the ttl",
        ),
    ],
)
def test_cache_control_misuse_is_a_400(body: dict[str, Any], needle: str) -> None:
    """Too many breakpoints, 1h after 5m, or a conflicting top-level TTL are API errors."""
    with pytest.raises(ApiError, match=needle) as info:
        prompt_blocks(_request(**body))
    assert info.value.status == 400
