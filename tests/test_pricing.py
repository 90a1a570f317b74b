"""Prices and cost: hand-computed vectors against the official rates, modifiers, layering.

Every expected figure below was worked out by hand from the rates in
shared/reference/anthropic-api.md §1 (USD per million tokens) and is written as a literal;
none is computed by the code under test.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal as D
from pathlib import Path
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canny.cli._exit_codes import exit_code_for
from canny.errors import ConfigError, ResponseWarning
from canny.pricing import (
    UnpricedModelWarning,
    cost,
    format_usd,
    known_models,
    load_table,
    model_info,
    price_version,
    rates,
    resolve_model,
    to_micros,
    worst_case_cost,
)
from canny.pricing.table import RATED
from canny.usage import IterationUsage, Usage

_cost_module = importlib.import_module("canny.pricing.cost")

AT = date(2026, 11, 20)

#: Official per-MTok rates (input, 5m write, 1h write, cache read, output), typed from the reference,
#: then the hand-summed cost of MIXED: 1,000 input + 2,000 5m writes + 3,000 1h writes + 40,000 reads
#: + 500 output. E.g. Sonnet 4.6: 1000*3 + 2000*3.75 + 3000*6 + 40000*0.30 + 500*15 = 48,000 → $0.048.
REFERENCE: dict[str, tuple[str, str, str, str, str, str]] = {
    "claude-fable-5-2": ("8", "10", "16", "0.20", "40", "0.104"),  # 8000 + 20000 + 48000 + 8000 + 20000
    "claude-fable-5-1": ("10", "12.50", "20", "0.25", "50", "0.13"),  # 10000 + 25000 + 60000 + 10000 + 25000
    "claude-mythos-5-1": ("10", "12.50", "20", "0.25", "50", "0.13"),
    "claude-fable-5": ("10", "12.50", "20", "1", "50", "0.16"),  # 10000 + 25000 + 60000 + 40000 + 25000
    "claude-mythos-5": ("10", "12.50", "20", "1", "50", "0.16"),
    "claude-opus-5-5": ("4", "5", "8", "0.20", "20", "0.056"),  # 4000 + 10000 + 24000 + 8000 + 10000
    "claude-opus-5": ("5", "6.25", "10", "0.50", "25", "0.08"),  # 5000 + 12500 + 30000 + 20000 + 12500
    "claude-opus-4-8": ("5", "6.25", "10", "0.50", "25", "0.08"),
    "claude-opus-4-7": ("5", "6.25", "10", "0.50", "25", "0.08"),
    "claude-opus-4-6": ("5", "6.25", "10", "0.50", "25", "0.08"),
    "claude-opus-4-5": ("5", "6.25", "10", "0.50", "25", "0.08"),
    "claude-opus-4-1": ("15", "18.75", "30", "1.50", "75", "0.24"),  # 15000 + 37500 + 90000 + 60000 + 37500
    "claude-opus-4-0": ("15", "18.75", "30", "1.50", "75", "0.24"),
    "claude-sonnet-5-5": ("2", "2.50", "4", "0.10", "10", "0.028"),  # 2000 + 5000 + 12000 + 4000 + 5000
    "claude-sonnet-5": ("2", "2.50", "4", "0.20", "10", "0.032"),  # 2000 + 5000 + 12000 + 8000 + 5000
    "claude-sonnet-4-6": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-sonnet-4-5": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-sonnet-4-0": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-haiku-5-5": ("0.10", "0.125", "0.20", "0.01", "0.50", "0.0016"),  # 100+250+600+400+250, low band
    "claude-haiku-4-5": ("1", "1.25", "2", "0.10", "5", "0.016"),  # 1000 + 2500 + 6000 + 4000 + 2500
    "claude-3-5-haiku-20241022": ("0.80", "1", "1.60", "0.08", "4", "0.0128"),  # 800 + 2000 + 4800 + 3200 + 2000
    "claude-3-7-sonnet-20250219": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-3-5-sonnet-20241022": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-3-opus-20240229": ("15", "18.75", "30", "1.50", "75", "0.24"),
    "claude-3-haiku-20240307": ("0.25", "0.30", "0.50", "0.03", "1.25", "0.004175"),  # 250 + 600 + 1500 + 1200 + 625
    "claude-3-5-sonnet-20240620": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-3-sonnet-20240229": ("3", "3.75", "6", "0.30", "15", "0.048"),
    "claude-2.1": ("8", "10", "16", "0.80", "24", "0.12"),  # 8000 + 20000 + 48000 + 32000 + 12000
    "claude-2.0": ("8", "10", "16", "0.80", "24", "0.12"),
    "claude-instant-1.2": ("0.80", "1", "1.60", "0.08", "2.40", "0.012"),  # 800 + 2000 + 4800 + 3200 + 1200
}
MIXED = Usage(input=1_000, cache_write_5m=2_000, cache_write_1h=3_000, cache_read=40_000, output=500)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No user price file leaks in, and every test sees fresh unpriced warnings."""
    monkeypatch.setenv("CANNY_HOME", str(tmp_path / "home"))
    _cost_module._WARNED.clear()
    yield
    _cost_module._WARNED.clear()


# --------------------------------------------------------------------------- the vectors


#: Haiku 5.5 over 100,000 prompt tokens: a million prompt tokens are always in this band.
HAIKU_HIGH = ("0.50", "0.625", "1", "0.05", "2.50")


@pytest.mark.parametrize("bucket", RATED)
@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_every_model_every_bucket(model: str, bucket: str) -> None:
    """A million tokens in one bucket cost exactly that bucket's official rate."""
    row = HAIKU_HIGH if model == "claude-haiku-5-5" and bucket != "output" else REFERENCE[model]
    expected = D(row[RATED.index(bucket)])
    assert cost(model, Usage(**{bucket: 1_000_000}), at=AT) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("model", sorted(REFERENCE))
def test_mixed_vector_per_model(model: str) -> None:
    """All five buckets at once, summed by hand."""
    assert cost(model, MIXED, at=AT) == D(REFERENCE[model][5])


def test_table_lists_every_reference_model() -> None:
    """The table covers the whole lineup, priced or explicitly unpriced."""
    ids = {info.id for info in known_models()}
    assert set(REFERENCE) | {"claude-mythos-5-2", "claude-mythos-preview"} == ids


def test_batch_halves_every_bucket() -> None:
    """Batch: 0.056 / 2 and 0.004175 / 2."""
    assert cost("claude-opus-5-5", MIXED, batch=True, at=AT) == D("0.028")
    assert cost("claude-3-haiku-20240307", MIXED, batch=True, at=AT) == D("0.0020875")


def test_inference_geo_us_is_ten_percent_on_every_bucket() -> None:
    """US-only inference: 0.048 × 1.1, and with batch 0.056 × 1.1 × 0.5."""
    assert cost("claude-sonnet-4-6", MIXED, inference_geo="us", at=AT) == D("0.0528")
    assert cost("claude-opus-5-5", MIXED, inference_geo="us", batch=True, at=AT) == D("0.0308")
    assert cost("claude-sonnet-4-6", MIXED, inference_geo="global", at=AT) == D("0.048")


@pytest.mark.parametrize(
    "model", ["claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5", "claude-3-opus-20240229"]
)
def test_inference_geo_us_rejected_before_claude_4_6(model: str) -> None:
    """The API answers 400 for inference_geo on pre-4.6 models, so canny raises ValueError."""
    with pytest.raises(ValueError, match="inference_geo"):
        cost(model, MIXED, inference_geo="us", at=AT)
    assert cost(model, MIXED, inference_geo="global", at=AT) is not None


def test_bad_modifier_values_raise() -> None:
    """Only the API's own values are accepted."""
    with pytest.raises(ValueError, match="inference_geo"):
        cost("claude-sonnet-4-6", MIXED, inference_geo="eu", at=AT)
    with pytest.raises(ValueError, match="speed"):
        cost("claude-opus-5", MIXED, speed="turbo", at=AT)


def test_fast_mode_rates() -> None:
    """Fast: Opus 5 at $10/$50 with cache multipliers on top; Opus 5.5 at $8/$40, hits $0.40."""
    # 1000*10 + 2000*12.50 + 3000*20 + 40000*1 + 500*50 = 160,000
    assert cost("claude-opus-5", MIXED, speed="fast", at=AT) == D("0.16")
    # 1000*8 + 2000*10 + 3000*16 + 40000*0.40 + 500*40 = 112,000
    assert cost("claude-opus-5-5", MIXED, speed="fast", at=AT) == D("0.112")
    assert cost("claude-opus-5", MIXED, speed="fast", inference_geo="us", at=AT) == D("0.176")
    assert cost("claude-opus-5", MIXED, speed="standard", at=AT) == D("0.08")


def test_fast_mode_on_opus_4_8_until_removal() -> None:
    """Opus 4.8 fast is $10/$50 until 2026-11-30, then the API rejects it."""
    assert cost("claude-opus-4-8", MIXED, speed="fast", at=date(2026, 11, 29)) == D("0.16")
    with pytest.raises(ValueError, match="not available"):
        cost("claude-opus-4-8", MIXED, speed="fast", at=date(2026, 11, 30))


def test_fast_mode_invalid_combinations() -> None:
    """Fast in a batch, or on a model without fast mode, is rejected like the API does."""
    with pytest.raises(ValueError, match="Batch"):
        cost("claude-opus-5", MIXED, speed="fast", batch=True, at=AT)
    with pytest.raises(ValueError, match="fast mode"):
        cost("claude-sonnet-5-5", MIXED, speed="fast", at=AT)
    with pytest.raises(ValueError, match="not available"):
        cost("claude-opus-4-7", MIXED, speed="fast", at=AT)


def test_fast_mode_billed_standard_on_opus_4_6() -> None:
    """Opus 4.6 accepts speed=fast but bills standard (0.08); its early fast price is unknown."""
    assert cost("claude-opus-4-6", MIXED, speed="fast", at=date(2026, 10, 1)) == D("0.08")
    with pytest.warns(UnpricedModelWarning, match="claude-opus-4-6"):
        assert cost("claude-opus-4-6", MIXED, speed="fast", at=date(2026, 3, 1)) is None


def test_fast_mode_unconfirmed_is_unpriced() -> None:
    """Fable 5.2 has fast mode at an UNCONFIRMED price: unpriced, with a warning."""
    with pytest.warns(UnpricedModelWarning, match="fast mode"):
        assert cost("claude-fable-5-2", MIXED, speed="fast", at=AT) is None


def test_haiku_5_5_band_boundary() -> None:
    """A prompt of exactly 100,000 tokens is low band; 100,001 bills every token high."""
    low = Usage(input=60_000, cache_read=40_000, output=1_000)
    # 60000*0.10 + 40000*0.01 + 1000*0.50 = 6,900
    assert cost("haiku", low, at=AT) == D("0.0069")
    high = Usage(input=60_001, cache_read=40_000, output=1_000)
    # 60001*0.50 + 40000*0.05 + 1000*2.50 = 34,500.5
    assert cost("haiku", high, at=AT) == D("0.0345005")
    assert cost("haiku", high, batch=True, at=AT) == D("0.01725025")


def test_haiku_5_5_band_counts_cache_writes() -> None:
    """Writes are part of the prompt: 50,000 + 30,000 + 20,001 = 100,001 tokens, high band."""
    usage = Usage(input=50_000, cache_write_5m=30_000, cache_write_1h=20_001)
    # 50000*0.50 + 30000*0.625 + 20001*1 = 63,751
    assert cost("claude-haiku-5-5", usage, at=AT) == D("0.063751")


def test_sonnet_4_5_long_context_until_2026_04_30() -> None:
    """Over 200,000 prompt tokens billed all tokens at $6/$22.50 until the beta ended."""
    over = Usage(input=150_000, cache_read=50_001, output=2_000)
    # 150000*6 + 50001*0.60 + 2000*22.50 = 975,000.6
    assert cost("claude-sonnet-4-5", over, at=date(2026, 4, 29)) == D("0.9750006")
    # 150000*3 + 50001*0.30 + 2000*15 = 495,000.3
    assert cost("claude-sonnet-4-5", over, at=date(2026, 4, 30)) == D("0.4950003")
    exact = Usage(input=150_000, cache_read=50_000, output=2_000)
    assert cost("claude-sonnet-4-5", exact, at=date(2026, 4, 29)) == D("0.495")
    assert cost("claude-sonnet-4-20250514", over, at=date(2025, 9, 1)) == D("0.9750006")


def test_sonnet_5_5_cache_read_cut_on_2026_10_07() -> None:
    """A million cache reads: $0.20 until 2026-10-07, $0.10 from then."""
    reads = Usage(cache_read=1_000_000)
    assert cost("claude-sonnet-5-5", reads, at=date(2026, 10, 6)) == D("0.20")
    assert cost("claude-sonnet-5-5", reads, at=date(2026, 10, 7)) == D("0.10")
    assert cost("claude-sonnet-5-5", reads, at=datetime(2026, 10, 6, 23, 59, tzinfo=UTC)) == D("0.20")


def test_iterations_each_at_their_own_model() -> None:
    """Opus 5.5 then a Sonnet 5.5 fallback: 14,000 + 14,000; the top-level figures are ignored."""
    usage = {
        "input_tokens": 3_000,
        "output_tokens": 1_500,
        "iterations": [
            {"type": "message", "model": "claude-opus-5-5", "input_tokens": 1_000, "output_tokens": 500},
            {"type": "fallback_message", "model": "claude-sonnet-5-5", "input_tokens": 2_000, "output_tokens": 1_000},
        ],
    }
    assert cost("claude-opus-5-5", usage, at=AT) == D("0.028")


def test_iteration_without_model_uses_the_call_model() -> None:
    """No model on an iteration: the call's Opus 5.5 (14,000) plus Haiku 4.5 (1,000 + 500)."""
    usage = Usage(
        iterations=(
            IterationUsage(model=None, usage=Usage(input=1_000, output=500)),
            IterationUsage(model="claude-haiku-4-5-20251001", usage=Usage(input=1_000, output=100)),
        )
    )
    assert cost("opus", usage, at=AT) == D("0.0155")


def test_haiku_band_is_per_iteration() -> None:
    """Two 60,000-token iterations stay low band although together they pass 100,000."""
    one = Usage(input=60_000, output=1_000)
    usage = Usage(iterations=(IterationUsage("claude-haiku-5-5", one), IterationUsage("claude-haiku-5-5", one)))
    assert cost("claude-haiku-5-5", usage, at=AT) == D("0.013")  # 2 × (6000 + 500)


def test_sum_of_usages_with_and_without_iterations() -> None:
    """Adding a plain usage to one with iterations keeps its tokens: 0.0155 + 0.003 (Opus 5.5 input)."""
    plain = Usage(input=750)  # 750 × 4 = 3,000
    with_iterations = Usage(
        iterations=(
            IterationUsage(model=None, usage=Usage(input=1_000, output=500)),
            IterationUsage(model="claude-haiku-4-5", usage=Usage(input=1_000, output=100)),
        )
    )
    assert cost("opus", plain + with_iterations, at=AT) == D("0.0185")
    assert cost("opus", with_iterations + plain, at=AT) == D("0.0185")


def test_unpriced_iteration_makes_the_call_unpriced() -> None:
    """One iteration on an unknown model: the whole cost is None, never a partial sum."""
    usage = Usage(
        iterations=(
            IterationUsage("claude-opus-5-5", Usage(input=1_000)),
            IterationUsage("claude-mystery-9", Usage(input=1_000)),
        )
    )
    with pytest.warns(UnpricedModelWarning, match="claude-mystery-9"):
        assert cost("claude-opus-5-5", usage, at=AT) is None


def test_one_hour_and_five_minute_writes() -> None:
    """1h writes at 2x input, 5m at 1.25x; a total without breakdown is all 5m."""
    split = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_creation_input_tokens": 3_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 2_000},
    }
    assert cost("claude-sonnet-4-6", split, at=AT) == D("0.01575")  # 1000*3.75 + 2000*6
    bare = {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 3_000}
    assert cost("claude-sonnet-4-6", bare, at=AT) == D("0.01125")  # 3000*3.75


def test_web_search_fee() -> None:
    """$0.01 per search on top of tokens, outside the batch and geo factors; fetch is free."""
    usage = {"input_tokens": 1_000, "output_tokens": 0, "server_tool_use": {"web_search_requests": 3}}
    assert cost("claude-sonnet-4-6", usage, at=AT) == D("0.033")  # 0.003 + 0.03
    assert cost("claude-sonnet-4-6", usage, batch=True, at=AT) == D("0.0315")  # 0.0015 + 0.03
    assert cost("claude-sonnet-4-6", usage, inference_geo="us", at=AT) == D("0.0333")
    fetch = Usage(input=1_000, web_fetch_requests=5, code_execution_requests=2)
    assert cost("claude-sonnet-4-6", fetch, at=AT) == D("0.003")


def test_unknown_model_is_unpriced_and_warned_once() -> None:
    """Unknown model: None, never 0, and one warning per process."""
    with pytest.warns(UnpricedModelWarning, match="claude-unknown-1"):
        assert cost("claude-unknown-1", MIXED, at=AT) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cost("claude-unknown-1", MIXED, at=AT) is None


@pytest.mark.parametrize("model", ["claude-mythos-5-2", "claude-mythos-preview"])
def test_unconfirmed_models_are_unpriced(model: str) -> None:
    """No invented number: Mythos 5.2 and Mythos Preview come out unpriced."""
    with pytest.warns(UnpricedModelWarning, match="no confirmed price"):
        assert cost(model, MIXED, at=AT) is None


def test_before_release_is_unpriced() -> None:
    """No row is in force before a model's first row."""
    with pytest.warns(UnpricedModelWarning):
        assert cost("claude-opus-5-5", MIXED, at=date(2026, 1, 1)) is None


def test_usage_shapes() -> None:
    """SDK object, API dict and canny bucket dict all price the same; the SDK's geo applies."""
    sdk = anthropic.types.Usage(input_tokens=1_000, output_tokens=100, inference_geo="us")
    assert cost("claude-sonnet-4-6", sdk, at=AT) == D("0.00495")  # (3000 + 1500) × 1.1
    assert cost("claude-sonnet-4-6", {"input": 1_000, "output": 100}, at=AT) == D("0.0045")
    assert cost("claude-sonnet-4-6", None, at=AT) == D(0)
    tier = {"input_tokens": 1_000, "output_tokens": 100, "service_tier": "batch"}
    assert cost("claude-sonnet-4-6", tier, at=AT) == D("0.00225")
    old = {"input_tokens": 1_000, "output_tokens": 100, "inference_geo": "us"}
    assert cost("claude-sonnet-4-5", old, at=AT) == D("0.0045")  # reported, but cannot apply


def test_reported_speed_wins_over_the_request() -> None:
    """Opus 5: a fast request that ran standard bills 0.0075; a reported fast run bills 0.015."""
    ran_standard = {"input_tokens": 1_000, "output_tokens": 100, "speed": "standard"}
    assert cost("claude-opus-5", ran_standard, speed="fast", at=AT) == D("0.0075")  # 5000 + 2500
    ran_fast = anthropic.types.Usage(input_tokens=1_000, output_tokens=100, speed="fast")
    assert cost("claude-opus-5", ran_fast, at=AT) == D("0.015")  # 10000 + 5000


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": "100"},
        {"input_tokens": -1},
        {"input_tokens": 1.5},
        {"cache_creation": {"ephemeral_1h_input_tokens": "9"}},
        {"iterations": [{"input_tokens": True}]},
        {"input": -5},
        Usage(output=-1),
    ],
)
def test_bad_counts_raise(usage: Any) -> None:
    """Counts that would silently read as 0 (or go negative) are errors, not $0."""
    with pytest.raises(ValueError, match="non-negative integer"):
        cost("claude-sonnet-4-6", usage, at=AT)


def test_costs_are_exact_decimals() -> None:
    """One token of Haiku 5.5 cache read is $0.00000001 exactly, not a float."""
    result = cost("claude-haiku-5-5", Usage(cache_read=1), at=AT)
    assert result == D("0.00000001")
    assert isinstance(result, D)


# --------------------------------------------------------------------------- other API


def test_resolution_of_aliases_and_dated_ids() -> None:
    """Short, -latest and dated aliases resolve; unknown names come back unchanged."""
    assert resolve_model("opus") == "claude-opus-5-5"
    assert resolve_model("sonnet") == "claude-sonnet-5-5"
    assert resolve_model("haiku") == "claude-haiku-5-5"
    assert resolve_model("fable") == "claude-fable-5-2"
    assert resolve_model("claude-sonnet-4-5-20250929") == "claude-sonnet-4-5"
    assert resolve_model("claude-3-5-haiku-latest") == "claude-3-5-haiku-20241022"
    assert resolve_model("Claude-Opus-4-20250514") == "claude-opus-4-0"
    assert resolve_model("gpt-9") == "gpt-9"
    assert cost("claude-sonnet-4-5-20250929", MIXED, at=AT) == D("0.048")


def test_model_info_lifecycle() -> None:
    """Retirement and deprecation dates from the reference."""
    sonnet = model_info("claude-sonnet-4-5-20250929")
    assert sonnet is not None
    assert (sonnet.deprecated_at, sonnet.retires_at) == (date(2026, 9, 30), date(2026, 11, 30))
    assert not sonnet.is_retired(date(2026, 11, 29))
    assert sonnet.is_retired(date(2026, 11, 30))
    retires = {m.id: m.retires_at for m in known_models()}
    assert retires["claude-mythos-preview"] == date(2026, 6, 30)
    assert retires["claude-opus-4-0"] == retires["claude-sonnet-4-0"] == date(2026, 6, 15)
    assert retires["claude-opus-4-1"] == date(2026, 8, 5)
    haiku = model_info("haiku")
    assert haiku is not None
    assert (haiku.display_name, haiku.line, haiku.inference_geo) == ("Claude Haiku 5.5", "haiku", True)
    assert model_info("nope") is None


def test_rates_with_modifiers() -> None:
    """rates() returns per-MTok figures with batch and geo applied: 3 × 1.1 × 0.5 = 1.65."""
    found = rates("claude-sonnet-4-6", at=AT, batch=True, inference_geo="us")
    assert found is not None
    assert (found.input, found.cache_read, found.output) == (D("1.65"), D("0.165"), D("8.25"))
    assert found.factor == D("0.55")
    high = rates("claude-haiku-5-5", at=AT, prompt_tokens=100_001)
    assert high is not None
    assert (high.band, high.output) == ("long_prompt", D("2.50"))
    fable = rates("fable", at=AT)
    assert fable is not None
    assert fable.confidence == "third-party"
    assert rates("claude-unknown-2", at=AT) is None


def test_worst_case_cost() -> None:
    """Input at the input (or cache-write) rate plus max_tokens at the output rate."""
    assert worst_case_cost("claude-sonnet-4-6", input_tokens=10_000, max_tokens=1_000, at=AT) == D("0.045")
    one_hour = worst_case_cost("claude-sonnet-4-6", input_tokens=10_000, max_tokens=1_000, cache_ttl="1h", at=AT)
    assert one_hour == D("0.075")  # 10000*6 + 1000*15
    # Haiku 5.5: 99,000 + 2,000 read = 101,000 → high band: 49500 + 100 + 2500
    high = worst_case_cost("haiku", input_tokens=99_000, cache_read_tokens=2_000, max_tokens=1_000, at=AT)
    assert high == D("0.0521")
    low = worst_case_cost("haiku", input_tokens=98_000, cache_read_tokens=2_000, max_tokens=1_000, at=AT)
    assert low == D("0.01032")  # 9800 + 20 + 500
    with pytest.raises(ValueError, match="Batch"):
        worst_case_cost("claude-opus-5", input_tokens=1, max_tokens=1, speed="fast", batch=True, at=AT)
    with pytest.warns(UnpricedModelWarning):
        assert worst_case_cost("claude-unknown-3", input_tokens=1, max_tokens=1, at=AT) is None


@pytest.mark.parametrize("geo", ["not_available", "global", None])
def test_reported_geo_other_than_us_bills_list_rates(geo: str | None) -> None:
    """usage.inference_geo 'not_available' (as recorded for Sonnet 4/4.5) prices at list rates, no error."""
    usage = {"input_tokens": 1_000_000, "output_tokens": 0, "inference_geo": geo}
    assert cost("claude-sonnet-4-6", usage, at=AT) == cost("claude-sonnet-4-6", Usage(input=1_000_000), at=AT)


def test_reported_geo_us_wins_over_the_request() -> None:
    """What the server reports it did is billed: a reported 'us' bills 1.1x even if the request said nothing."""
    plain = cost("claude-sonnet-4-6", Usage(input=1_000_000), at=AT)
    assert plain is not None
    reported = cost("claude-sonnet-4-6", Usage(input=1_000_000), reported={"inference_geo": "us"}, at=AT)
    assert reported == plain * D("1.1")


@pytest.mark.parametrize(
    "reported",
    [
        {"inference_geo": "eu"},
        {"speed": "warp"},
        {"service_tier": "flex"},
        {"input_tokens": 5, "audio_input_tokens": 12},
        {"input_tokens": 5, "cache_creation": {"ephemeral_24h_input_tokens": 7}},
        {"input_tokens": -5},
        {"output_tokens": float("inf")},
        {"input_tokens": 10**400},
        {"cache_creation": {"ephemeral_5m_input_tokens": "12"}},
    ],
)
def test_unknown_reported_parts_are_unpriced_and_warned_once(reported: dict[str, object]) -> None:
    """A reported value canny cannot price makes the cost unpriced (never $0, never an error), warned once."""
    from canny.errors import ResponseWarning

    with pytest.warns(ResponseWarning, match="recorded as sent"):
        assert cost("claude-sonnet-4-6", Usage(input=10), reported=reported, at=AT) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cost("claude-sonnet-4-6", Usage(input=10), reported=reported, at=AT) is None


def test_unknown_non_count_usage_field_is_only_warned() -> None:
    """An unknown usage field that is not a count is warned about once and does not change the price."""
    from canny.errors import ResponseWarning

    with pytest.warns(ResponseWarning, match="unknown field usage.tier_note"):
        got = cost("claude-sonnet-4-6", {"input_tokens": 1000, "output_tokens": 0, "tier_note": "x"}, at=AT)
    assert got == cost("claude-sonnet-4-6", Usage(input=1000), at=AT)


def test_reported_parts_are_read_in_their_order_whatever_came_before() -> None:
    """Unpriceable parts come in the usage object's order; a usage of the same shape is judged by its own values."""
    from canny.pricing.cost import reported_modifiers

    shape = ("mystery_tokens", "input_tokens", "cache_creation", "tier_note", "odd_requests")
    with pytest.warns(ResponseWarning):
        first = reported_modifiers(dict(zip(shape, (3, -1, {"ephemeral_9m_input_tokens": 4}, "x", 0), strict=True)))
    assert first.unknown == (
        "usage.mystery_tokens 3",
        "usage.input_tokens -1",
        "usage.cache_creation.ephemeral_9m_input_tokens 4",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResponseWarning)  # warned once already
        second = reported_modifiers(dict(zip(shape, (0, 7, {"ephemeral_9m_input_tokens": 0}, "y", 2), strict=True)))
    assert second.unknown == ("usage.odd_requests 2",)


def test_invalid_requested_modifier_still_raises() -> None:
    """What the caller asks for is validated: an unknown requested inference_geo is a ValueError."""
    with pytest.raises(ValueError, match="inference_geo"):
        cost("claude-sonnet-4-6", Usage(input=10), inference_geo="not_available", at=AT)


def test_to_micros_rounds_half_even() -> None:
    """Micro-dollars, half to even."""
    assert to_micros(D("0.000075")) == 75
    assert to_micros(D("0.0000005")) == 0
    assert to_micros(D("0.0000015")) == 2
    assert to_micros(D("1.2345675")) == 1_234_568


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, "unpriced"),
        (D("0.0101"), "$0.0101"),
        (D("0.01234567"), "$0.0123"),
        (D("0.000075"), "$0.000075"),
        (D("0.0000753"), "$0.000075"),
        (D("0.005"), "$0.0050"),
        (D("0.00000001"), "$0.00000001"),
        (D(0), "$0.0000"),
        (D("12.5"), "$12.5000"),
        (D("-0.02"), "-$0.0200"),
        (D("1E+3"), "$1000.0000"),
    ],
)
def test_format_usd(amount: D | None, text: str) -> None:
    """Four decimals, more significant digits below a cent, never scientific notation."""
    assert format_usd(amount) == text


# --------------------------------------------------------------------------- layering

USER_ROWS = """
version = "acme-2026-10"

[[models.sonnet.prices]]
effective_from = 2026-10-01
input = "1.50"
cache_write_5m = "1.875"
cache_write_1h = "3"
cache_read = "0.05"
output = "7.50"
source = "Acme agreement"

[models.acme-proxy-model]
display_name = "Acme proxy"
aliases = ["acme"]

[[models.acme-proxy-model.prices]]
effective_from = "2026-01-01"
input = "1"
cache_write_5m = "1"
cache_write_1h = "1"
cache_read = "1"
output = "1"
"""


def test_user_file_overrides_from_its_date(tmp_path: Path) -> None:
    """Negotiated rows win from their effective_from on, even over later shipped rows."""
    path = tmp_path / "prices.toml"
    path.write_text(USER_ROWS, encoding="utf-8")
    table = load_table([path])
    # 1000*1.50 + 2000*1.875 + 3000*3 + 40000*0.05 + 500*7.50 = 20,000
    assert cost("claude-sonnet-5-5", MIXED, at=AT, table=table) == D("0.02")
    assert cost("claude-sonnet-5-5", MIXED, at=date(2026, 9, 30), table=table) == D("0.032")
    assert cost("acme", Usage(input=1_000_000), at=AT, table=table) == D(1)
    assert price_version(table=table) == "2026-11-24+acme-2026-10"
    found = rates("sonnet", at=AT, table=table)
    assert found is not None
    assert (found.confidence, found.source) == ("negotiated", "Acme agreement")


def test_user_file_from_canny_home_is_layered_and_reloaded(tmp_path: Path) -> None:
    """$CANNY_HOME/prices.toml is picked up by default and re-read when it changes."""
    home = Path(os.environ["CANNY_HOME"])
    home.mkdir()
    path = home / "prices.toml"
    path.write_text(USER_ROWS, encoding="utf-8")
    assert cost("claude-sonnet-5-5", MIXED, at=AT) == D("0.02")
    path.write_text(USER_ROWS.replace('input = "1.50"', 'input = "2.50"'), encoding="utf-8")
    os.utime(path, ns=(1, 1))
    assert cost("claude-sonnet-5-5", MIXED, at=AT) == D("0.021")  # + 1000 × 1.00
    assert price_version().endswith("+acme-2026-10")


def test_user_file_without_version_gets_a_content_hash(tmp_path: Path) -> None:
    """Ledger rows can still tell two unversioned user files apart."""
    path = tmp_path / "p.toml"
    path.write_text(USER_ROWS.replace('version = "acme-2026-10"', ""), encoding="utf-8")
    assert price_version(table=load_table([path])).startswith("2026-11-24+local-")


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (USER_ROWS.replace('input = "1.50"', "input = 1.50"), "models.sonnet.prices[0].input"),
        (USER_ROWS.replace('input = "1.50"', 'inptu = "1.50"'), "models.sonnet.prices[0].inptu"),
        (USER_ROWS.replace('input = "1.50"', 'input = "cheap"'), "models.sonnet.prices[0].input"),
        (USER_ROWS.replace('output = "7.50"\n', ""), "models.sonnet.prices[0].output"),
        (USER_ROWS.replace("2026-10-01", '"last year"'), "models.sonnet.prices[0].effective_from"),
        (USER_ROWS.replace('input = "1.50"', 'input = "-1"'), "models.sonnet.prices[0].input"),
        ("[models.x]\nprices = 3\n", "models.x.prices"),
        ("[modifiers]\nbatch = '0.1'\n", "modifiers"),
        ("models = [", "invalid TOML"),
    ],
)
def test_malformed_user_file_is_a_config_error(tmp_path: Path, text: str, key: str) -> None:
    """A bad price file names the file and the key; nothing is guessed."""
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_table([path])
    assert str(path) in info.value.message
    assert key in info.value.message
    assert exit_code_for(info.value) == 2


def test_malformed_user_file_in_canny_home_surfaces_on_cost() -> None:
    """The default table refuses a broken user file instead of silently ignoring it."""
    home = Path(os.environ["CANNY_HOME"])
    home.mkdir()
    (home / "prices.toml").write_text("[models.sonnet]\ncolour = 'red'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"models\.sonnet\.colour"):
        cost("sonnet", MIXED, at=AT)


def test_missing_extra_file_is_a_config_error(tmp_path: Path) -> None:
    """An explicit extra file that does not exist is an error."""
    with pytest.raises(ConfigError, match="cannot read"):
        load_table([tmp_path / "absent.toml"])


# --------------------------------------------------------------------------- properties

_FLAT = [m for m in sorted(REFERENCE) if m != "claude-haiku-5-5"]
_counts = st.integers(min_value=0, max_value=10**9)
_usages = st.builds(
    Usage,
    input=_counts,
    cache_write_5m=_counts,
    cache_write_1h=_counts,
    cache_read=_counts,
    output=_counts,
    web_search_requests=st.integers(min_value=0, max_value=1_000),
)


@settings(max_examples=200, deadline=None)
@given(model=st.sampled_from(_FLAT), a=_usages, b=_usages, batch=st.booleans())
def test_cost_is_additive_and_never_negative(model: str, a: Usage, b: Usage, batch: bool) -> None:
    """For models without prompt bands, cost(a + b) == cost(a) + cost(b), all ≥ 0."""
    one, two, both = (cost(model, u, batch=batch, at=AT) for u in (a, b, a + b))
    assert one is not None
    assert two is not None
    assert both is not None
    assert one >= 0
    assert two >= 0
    assert one + two == both
