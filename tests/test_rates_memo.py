"""The rates memo of a price table gives the same answer as working the rule out afresh."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from canny.pricing.rates import Basis, applicable_rates
from canny.pricing.table import default_table

TABLE = default_table()
MODELS = sorted(TABLE.models)


@given(
    model=st.sampled_from(MODELS),
    days=st.integers(min_value=-800, max_value=800),
    batch=st.booleans(),
    geo_us=st.booleans(),
    fast=st.booleans(),
    prompt=st.integers(min_value=0, max_value=2_000_000),
)
def test_memoised_rates_match_rates_worked_out_afresh(
    model: str, days: int, batch: bool, geo_us: bool, fast: bool, prompt: int
) -> None:
    """For any model, day, modifiers and prompt length, the memo answers as a table without one."""
    basis = Basis(
        day=date(2026, 1, 1) + timedelta(days=days), batch=batch, geo_us=geo_us, fast=fast, prompt_tokens=prompt
    )
    remembered = applicable_rates(TABLE, model, basis)  # fills the memo or reads it
    fresh = applicable_rates(replace(TABLE, memo={}), model, basis)
    assert remembered == fresh
    assert applicable_rates(TABLE, model, basis) == fresh  # from the memo this time


def test_the_prompt_length_picks_the_band_after_the_memo() -> None:
    """One memo entry serves both sides of a long-prompt threshold."""
    table = replace(TABLE, memo={})
    for model in MODELS:
        entry = table.entry(model)
        assert entry is not None
        row = entry.prices[-1] if entry.prices else None
        if row is None or row.long_prompt_threshold is None or row.long_prompt is None:
            continue
        day = row.effective_from
        short = applicable_rates(table, model, Basis(day=day, prompt_tokens=row.long_prompt_threshold))
        long = applicable_rates(table, model, Basis(day=day, prompt_tokens=row.long_prompt_threshold + 1))
        assert short is not None and long is not None
        assert (short.band, long.band) == ("standard", "long_prompt")
        assert long.input > short.input
        return
    raise AssertionError("no model with a long-prompt band in the shipped table")
