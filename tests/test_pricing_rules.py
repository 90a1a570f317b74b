"""The pricing rules, each named: THE rule for which price row applies
(:func:`canny.pricing.rates.applicable_rates`), and cost = the sum over usage buckets."""

from __future__ import annotations

import random
import warnings
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from canny.errors import InvalidModifierError
from canny.ledger import AttemptRecord, ReportQuery, open_ledger
from canny.pricing import (
    Basis,
    applicable_rates,
    basis_of,
    cache_saving_rates,
    cost,
    default_table,
    rates,
)
from canny.usage import TOKEN_BUCKETS, IterationUsage, Usage

TABLE = default_table()
MODELS = sorted(TABLE.models)
#: Counts near every long-prompt threshold of the table, and a few plain ones.
_EDGES = sorted(
    {0, 1, 1000}
    | {
        t + d
        for e in TABLE.models.values()
        for r in (*e.prices, *e.fast)
        if r.long_prompt_threshold
        for t in (r.long_prompt_threshold,)
        for d in (-1, 0, 1)
    }
)
counts = st.one_of(st.sampled_from(_EDGES), st.integers(0, 2_000_000))
days = st.dates(min_value=date(2023, 1, 1), max_value=date(2027, 12, 31))
SAVING_BUCKETS = ("cache_read", "cache_write_5m", "cache_write_1h")
SAVINGS = cache_saving_rates(TABLE)


def _record(model: str, day: date, batch: bool, geo: bool, fast: bool, usage: Usage, n: int = 0) -> AttemptRecord:
    start = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    return AttemptRecord(
        call_id=f"c{n}",
        attempt=1,
        started_at=start,
        ended_at=start + timedelta(seconds=1),
        model=model,
        outcome="ok",
        cost_usd=Decimal(1),
        batch=batch,
        inference_geo="us" if geo else None,
        speed="fast" if fast else None,
        project=f"p{n}",
        usage=usage,
    )


def _expected_saving(model: str, basis: Basis, usage: Usage) -> Decimal:
    """The saving straight from the one rule: Σ cache tokens × (input rate − bucket rate)."""
    found = applicable_rates(TABLE, model, basis)
    if found is None or not any(getattr(usage, name) for name in SAVING_BUCKETS):
        return Decimal(0)
    return sum(
        (getattr(usage, name) * (found.input - getattr(found, name)) for name in SAVING_BUCKETS), Decimal(0)
    ).scaleb(-6)


prompt_usage = st.builds(Usage, input=counts, cache_write_5m=counts, cache_write_1h=counts, cache_read=counts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    day=days,
    batch=st.booleans(),
    geo=st.booleans(),
    fast=st.booleans(),
    usage=prompt_usage,
    output=counts,
)
def test_applicable_rates_is_the_one_rule_cost_and_savings_agree(
    model: str, day: date, batch: bool, geo: bool, fast: bool, usage: Usage, output: int
) -> None:
    """applicable_rates decides the row: cost() and the savings tree of reports/ledger give what it gives."""
    usage = replace(usage, output=output)
    record = _record(model, day, batch, geo, fast, usage)
    basis = basis_of(record)
    assert basis == Basis(day, batch, geo, fast, usage.prompt_tokens)
    found = applicable_rates(TABLE, model, basis)
    # cost (formerly pricing._select): what the server reported is priced by the same rule
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        priced = cost(
            model,
            usage,
            batch=batch,
            reported={"inference_geo": "us" if geo else None, "speed": "fast" if fast else None},
            at=day,
            table=TABLE,
        )
    assert priced == (None if found is None else found.cost(usage))
    # the savings tree (formerly reports._model_shape + ledger.RateSplit.pick)
    savings = SAVINGS
    assert savings.to_usd(savings.saving_units(record)) == _expected_saving(model, basis, usage)


def test_savings_in_sql_agree_with_the_one_rule(tmp_path: Path) -> None:
    """The ledger's SQL walk of the savings tree gives, per attempt, what applicable_rates gives."""
    rng = random.Random(13)
    records, expected = [], {}
    for n in range(300):
        model = rng.choice(MODELS)
        day = date(2023, 1, 1) + timedelta(days=rng.randrange(5 * 365))
        batch, geo, fast = rng.random() < 0.3, rng.random() < 0.3, rng.random() < 0.3
        counts: dict[str, Any] = {n: rng.choice([*_EDGES, rng.randrange(2000000)]) for n in (*SAVING_BUCKETS, "input")}
        usage = Usage(**counts)
        record = _record(model, day, batch, geo, fast, usage, n)
        records.append(record)
        expected[f"p{n}"] = _expected_saving(model, basis_of(record), usage)
    ledger = open_ledger(tmp_path / "ledger.db")
    try:
        ledger.record_many(records)  # type: ignore[attr-defined]
        groups, _ = ledger.aggregate(ReportQuery("project", savings=cache_saving_rates(TABLE)))  # type: ignore[attr-defined]
    finally:
        ledger.close()
    assert {g.key: g.saved_usd for g in groups} == expected


iteration = st.builds(
    IterationUsage,
    model=st.one_of(st.none(), st.sampled_from(MODELS)),
    usage=st.builds(
        Usage, input=counts, cache_write_5m=counts, cache_write_1h=counts, cache_read=counts, output=counts
    ),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    model=st.sampled_from(MODELS),
    day=days,
    batch=st.booleans(),
    geo=st.booleans(),
    fast=st.booleans(),
    own=st.builds(Usage, input=counts, cache_write_5m=counts, cache_write_1h=counts, cache_read=counts, output=counts),
    iterations=st.lists(iteration, max_size=3),
    searches=st.integers(0, 50),
    fetches=st.integers(0, 5),
)
def test_cost_is_the_sum_over_buckets_of_tokens_times_rates(
    model: str,
    day: date,
    batch: bool,
    geo: bool,
    fast: bool,
    own: Usage,
    iterations: list[IterationUsage],
    searches: int,
    fetches: int,
) -> None:
    """cost == Σ over parts and token buckets of tokens × rate (from rates()) × modifiers + search fees, exactly."""
    entry = TABLE.entry(model)
    assert entry is not None
    assume(not (geo and not entry.info.inference_geo))
    speed, region = ("fast" if fast else None), ("us" if geo else None)
    try:
        rates(model, at=day, batch=batch, inference_geo=region, speed=speed, table=TABLE)
    except InvalidModifierError:
        assume(False)
    usage = (
        Usage(web_search_requests=searches, web_fetch_requests=fetches, iterations=tuple(iterations))
        if iterations
        else replace(own, web_search_requests=searches, web_fetch_requests=fetches)
    )
    parts = [(it.model or model, it.usage) for it in iterations] or [(model, own)]
    expected: Decimal | None = Decimal(0)
    for name, part in parts:
        part_entry = TABLE.entry(name)
        assert part_entry is not None
        try:  # a request modifier the iteration's model cannot take is dropped for it
            plain = rates(name, at=day, speed=speed, prompt_tokens=part.prompt_tokens, table=TABLE)
        except InvalidModifierError:
            plain = rates(name, at=day, prompt_tokens=part.prompt_tokens, table=TABLE)
        if plain is None:
            expected = None
            break
        factor = (TABLE.batch if batch else 1) * (
            TABLE.inference_geo_us if geo and part_entry.info.inference_geo else 1
        )
        assert expected is not None
        expected += sum(
            (Decimal(getattr(part, b.name)) * getattr(plain, b.name) * factor for b in TOKEN_BUCKETS), Decimal(0)
        ).scaleb(-6)
    if expected is not None and searches:
        fee = TABLE.web_search_fee(day)
        expected = None if fee is None else expected + fee * searches
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = cost(model, usage, batch=batch, inference_geo=region, speed=speed, at=day, table=TABLE)
    assert got == expected
