"""The ledger as Datasette (or psql, or a spreadsheet) sees it: the views for the common
questions, what they mean (a Datasette ``metadata.json``), and the rates the
``cache_savings`` view prices with.

The views come from the migration ``ledger.0006_datasette_views``
(:mod:`canny.ledger.migrations`), so every ledger has them from its first open. Days are
UTC; ``*_pico`` columns are exact integer sums in 10^-12 USD, ``*_usd`` columns the same
amounts as numbers (SQLite: rounded to the micro-dollar). An unpriced attempt adds nothing
to a sum and is counted in ``unpriced_attempts`` instead: it is never shown as $0.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canny.ledger.migrations import Transaction
    from canny.pricing import PriceTable

__all__ = ["VIEWS", "metadata", "rate_rows", "write_rates"]

#: 10^-12 USD per token in 1 USD per million tokens.
_PICO_PER_TOKEN = Decimal(1_000_000)

_DAY = "The UTC day the attempt started (YYYY-MM-DD)."
_CALLS = "Distinct calls (retries of one call count once)."
_PICO = "Exact sum in pico-dollars (10^-12 USD)."
_UNPRICED = "Attempts of a model with no known price: not in the sums, never counted as $0."

#: view -> (description, {column: description}).
VIEWS: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "cost_per_day_model": (
        "What each model cost each day: calls, attempts, tokens per bucket and dollars.",
        {
            "day": _DAY,
            "calls": _CALLS,
            "attempts": "HTTP attempts, retries and failures included.",
            "input_tokens": "Uncached input tokens (canny's buckets are disjoint).",
            "cache_write_tokens": "Tokens written to the prompt cache (5-minute and 1-hour).",
            "cache_read_tokens": "Tokens read from the prompt cache.",
            "output_tokens": "Output tokens, thinking included.",
            "cost_pico": _PICO,
            "cost_usd": "The cost in US dollars.",
            "unpriced_attempts": _UNPRICED,
        },
    ),
    "failures": (
        "Every attempt that did not get an answer (error, interrupted, cancelled, budget_refused, lost).",
        {
            "started_at": "When the attempt started (UTC).",
            "outcome": "error: nothing shown; interrupted: broke after text was shown (billed); "
            "cancelled: the caller stopped; budget_refused: not sent; lost: the process died.",
            "status_code": "HTTP status (NULL when nothing came back).",
            "error_type": "The API's error type, or canny's exception name.",
            "request_id": "The API's request-id header: quote it to Anthropic support.",
            "cost_usd": "What the attempt was billed (exact decimal text; NULL: unpriced).",
        },
    ),
    "failures_per_day": (
        "Failed attempts per day, model, outcome and error type.",
        {"day": _DAY, "calls": _CALLS, "cost_pico": _PICO},
    ),
    "cache_savings": (
        "What prompt caching did per day and model: hit rate, and dollars saved against the same "
        "prompts uncached (at each model's base rates: batch, US-only inference and long-prompt "
        "rates are not applied; `canny report --savings` applies them).",
        {
            "day": _DAY,
            "attempts": "Attempts that read or wrote the cache.",
            "prompt_tokens": "All input tokens of those attempts: uncached, cache writes and cache reads.",
            "hit_rate": "cache_read_tokens / prompt_tokens.",
            "saved_pico": "reads x (input rate - read rate) - writes x (write rate - input rate), "
            "in pico-dollars; negative when writes cost more than reads saved.",
            "saved_usd": "saved_pico in US dollars.",
            "unpriced_attempts": "Attempts whose model has no rate in model_rates (not in the sums).",
        },
    ),
    "lost_attempts": (
        "Attempts whose process died before their row was written: the input usage the API "
        "reported, priced. Anthropic bills them; nothing else records them.",
        {
            "started_at": "When the attempt started (UTC).",
            "extra": "Notes, e.g. that input_tokens is a local estimate (non-streamed calls).",
        },
    ),
    "model_rates": (
        "Each model's base rates per token in pico-dollars, one row per dated price; written by "
        "`canny ledger datasette-metadata` from canny's price table.",
        {"effective_until_us": "When the next price took over (NULL: in force)."},
    ),
}

#: Tables Datasette need not show (canny's bookkeeping).
_HIDDEN = ("schema_migrations", "inflight", "attempt_tags", "budget_counters", "budget_reservations")


def metadata(database: str = "ledger") -> dict[str, Any]:
    """A Datasette ``metadata.json`` for a ledger opened as ``database`` (the file's stem)."""
    tables: dict[str, Any] = {
        name: {"description": text, "columns": dict(columns)} for name, (text, columns) in VIEWS.items()
    }
    tables["attempts"] = {"description": "One row per HTTP attempt: canny's ledger, as recorded."}
    tables["attempts_readable"] = {"description": "attempts with readable UTC times and dollars."}
    tables.update({name: {"hidden": True} for name in _HIDDEN})
    return {
        "title": "canny ledger",
        "description": "Every Claude API attempt canny made, with tokens and exact cost. See docs/observability.md.",
        "databases": {database: {"tables": tables}},
    }


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def rate_rows(table: PriceTable | None = None) -> list[tuple[Any, ...]]:
    """The ``model_rates`` rows of a price table (the default one when ``None``)."""
    from canny.pricing import default_table

    table = table or default_table()
    rows: list[tuple[Any, ...]] = []
    for model, entry in sorted(table.models.items()):
        priced = [row for row in entry.prices if row.kind == "priced" and row.rates is not None]
        starts = [row.effective_from for row in entry.prices]
        for row in priced:
            assert row.rates is not None
            later = [start for start in starts if start > row.effective_from]
            until = min(later) if later else None
            rates = row.rates.as_dict()
            pico = [int(rates[name] * _PICO_PER_TOKEN) for name in _RATE_NAMES]
            rows.append(
                (
                    model,
                    _us(
                        datetime(row.effective_from.year, row.effective_from.month, row.effective_from.day, tzinfo=UTC)
                    ),
                    None if until is None else _us(datetime(until.year, until.month, until.day, tzinfo=UTC)),
                    *pico,
                )
            )
    return rows


_RATE_NAMES = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output")
_INSERT_RATES = (
    "INSERT INTO model_rates (model, effective_from_us, effective_until_us, input_pico, cache_write_5m_pico, "
    "cache_write_1h_pico, cache_read_pico, output_pico) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def write_rates(tx: Transaction, table: PriceTable | None = None) -> int:
    """Replace ``model_rates`` with the rates of ``table``, in the open transaction; the row count."""
    rows = rate_rows(table)
    tx.execute("DELETE FROM model_rates")
    tx.executemany(_INSERT_RATES, rows)
    return len(rows)
