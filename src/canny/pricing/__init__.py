"""Exact cost of a Claude call, from a dated price table.

::

    cost = Σ over buckets  tokens × rate per MTok / 1,000,000      (per iteration, at its model)
           × 1.1 when inference_geo="us" (Claude 4.6 and later)
           × 0.5 for the Batch API
         + $0.01 × web searches

The package, one concept per module:

- :mod:`canny.pricing.table`: ``prices.toml`` (shipped here, plus the user's file), loaded,
  validated and layered; the dated rows of each model.
- :mod:`canny.pricing.rates`: THE rule for which price row applies,
  :func:`applicable_rates`, and the checked :func:`rates`.
- :mod:`canny.pricing.cost`: :func:`cost`, :func:`worst_case_cost`, the modifiers the server
  reports, and money helpers (:func:`format_usd`, :func:`to_micros`).
- :mod:`canny.pricing.savings`: what prompt caching saved, as trees a ledger evaluates.

Everything is :class:`~decimal.Decimal`. ``None`` means *unpriced*, never $0, with one
:class:`UnpricedModelWarning` per model per process. The table is loaded on first use,
never at ``import canny``.
"""

from __future__ import annotations

from canny.errors import InvalidModifierError, UnpricedModelWarning
from canny.pricing.cost import (
    cost,
    format_usd,
    known_usage_fields,
    reported_modifiers,
    to_micros,
    unknown_usage_fields,
    warn_unexpected,
    worst_case_cost,
)
from canny.pricing.rates import Basis, Rates, applicable_rates, rates
from canny.pricing.savings import (
    CacheSavingRates,
    CacheWeights,
    RateSplit,
    RateTree,
    SplitTest,
    basis_of,
    cache_saving_rates,
)
from canny.pricing.table import (
    ModelEntry,
    ModelInfo,
    PriceRow,
    PriceTable,
    default_table,
    known_models,
    load_table,
    model_info,
    price_version,
    resolve_model,
    row_at,
    suggest_models,
    user_price_file,
    utc_day,
)

__all__ = [
    "Basis",
    "CacheSavingRates",
    "CacheWeights",
    "InvalidModifierError",
    "ModelEntry",
    "ModelInfo",
    "PriceRow",
    "PriceTable",
    "RateSplit",
    "RateTree",
    "Rates",
    "SplitTest",
    "UnpricedModelWarning",
    "applicable_rates",
    "basis_of",
    "cache_saving_rates",
    "cost",
    "default_table",
    "format_usd",
    "known_models",
    "known_usage_fields",
    "load_table",
    "model_info",
    "price_version",
    "rates",
    "reported_modifiers",
    "resolve_model",
    "row_at",
    "suggest_models",
    "to_micros",
    "unknown_usage_fields",
    "user_price_file",
    "utc_day",
    "warn_unexpected",
    "worst_case_cost",
]
