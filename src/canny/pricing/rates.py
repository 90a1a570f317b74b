"""Which price row applies to a request: THE rule, :func:`applicable_rates`.

A request is priced at the row of its model in force on its UTC day, in fast mode when it
asked for (or the server reported) ``speed="fast"`` and the model has fast rows (never in a
batch), in the long-prompt band when its prompt (input + cache writes + cache reads) is
over the row's threshold, and scaled by the Batch API and US-only inference
(``inference_geo="us"``, Claude 4.6 and later) modifiers. What decides it besides the model
is a :class:`Basis`. :func:`canny.pricing.cost` prices each iteration with it, and the
savings trees that reports and the ledger evaluate (:mod:`canny.pricing.savings`) are
built by asking it, so there is no second copy of the rule.

:func:`rates` is the checked, public way in: it also raises
:class:`~canny.errors.InvalidModifierError` for a combination the API rejects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    localcontext,
)

from canny.errors import InvalidModifierError
from canny.pricing.table import RATED, ModelEntry, PriceTable, RateSet, default_table, row_at, utc_day
from canny.usage import Usage

__all__ = ["EXACT", "Basis", "Rates", "applicable_rates", "check_modifiers", "geo_is_us", "rates", "speed_is_fast"]

#: Arithmetic context for money: wide enough for any real bill, and rounding is an error.
EXACT = Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
_ONE = Decimal(1)


@dataclass(frozen=True, slots=True)
class Rates:
    """The per-MTok rates that apply to one request, modifiers included.

    ``factor`` is the product of the modifiers already applied to the five rates (batch,
    data residency); ``band`` is ``standard`` or ``long_prompt``; ``speed`` is how the
    request is billed (``fast`` or ``standard``).
    """

    model: str
    input: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    output: Decimal
    effective_from: date
    source: str = ""
    confidence: str = "official"
    note: str = ""
    band: str = "standard"
    speed: str = "standard"
    factor: Decimal = _ONE

    def cost(self, usage: Usage) -> Decimal:
        """Exact token cost of ``usage``'s own buckets at these rates (no fees, no iterations)."""
        with localcontext(EXACT):
            total = sum((Decimal(getattr(usage, name)) * getattr(self, name) for name in RATED), Decimal(0))
            return total.scaleb(-6)


@dataclass(frozen=True, slots=True)
class Basis:
    """What decides the price row of a request besides its model: its UTC ``day``, whether
    it is a ``batch``, US-only inference (``geo_us``), fast mode (``fast``), and its prompt
    length (input + cache writes + cache reads) for models priced by prompt length."""

    day: date
    batch: bool = False
    geo_us: bool = False
    fast: bool = False
    prompt_tokens: int = 0


def applicable_rates(table: PriceTable, model: str, basis: Basis) -> Rates | None:
    """THE rule for which price row applies: the rates for ``model`` on ``basis``, or
    ``None`` when unpriced. Modifiers that cannot apply to the model are dropped (US-only
    inference on a model without it; fast mode in a batch or on a model without fast rows;
    fast mode withdrawn or billed as standard that day: the standard row). Never raises:
    callers that must reject what the API rejects check with :func:`check_modifiers`.

    The answer for a model, day and modifiers is worked out once per table (both prompt
    length bands) and kept in the table's memo; the prompt length then picks the band."""
    key = ("rates", model, basis.day, basis.batch, basis.geo_us, basis.fast)
    memo = table.memo
    bands = memo.get(key)
    if bands is None:
        if len(memo) > _MEMO_LIMIT:
            memo.clear()
        bands = memo[key] = _bands(table, model, basis)
    if bands is None:
        return None
    standard, threshold, long_prompt = bands
    if long_prompt is not None and threshold is not None and basis.prompt_tokens > threshold:
        return long_prompt
    return standard


#: Entries a table's memo holds before it starts again.
_MEMO_LIMIT = 4096


def _bands(table: PriceTable, model: str, basis: Basis) -> tuple[Rates, int | None, Rates | None] | None:
    """The standard rates, the long-prompt threshold and the long-prompt rates that apply
    to ``model`` on ``basis`` (its prompt length aside), or ``None`` when unpriced."""
    entry = table.entry(model)
    if entry is None:
        return None
    info = entry.info
    geo_us = basis.geo_us and info.inference_geo
    row = None
    if basis.fast and not basis.batch and entry.fast:
        fast_row = row_at(entry.fast, basis.day)
        if fast_row is None:
            return None
        if fast_row.kind in ("priced", "unpriced"):
            row = fast_row
    billed_fast = row is not None
    if row is None:
        row = row_at(entry.prices, basis.day)
    if row is None or row.rates is None:
        return None
    with localcontext(EXACT):
        factor = _ONE
        if geo_us:
            factor *= table.inference_geo_us
        if basis.batch:
            factor *= table.batch

    def rates(rate_set: RateSet, band: str) -> Rates:
        with localcontext(EXACT):
            scaled = {name: value * factor for name, value in rate_set.as_dict().items()}
        return Rates(
            model=info.id,
            **scaled,
            effective_from=row.effective_from,
            source=row.source,
            confidence=row.confidence,
            note=row.note,
            band=band,
            speed="fast" if billed_fast else "standard",
            factor=factor,
        )

    threshold = row.long_prompt_threshold
    long_prompt = None
    if row.long_prompt is not None and threshold is not None:
        long_prompt = rates(row.long_prompt, "long_prompt")
    return rates(row.rates, "standard"), threshold, long_prompt


# --------------------------------------------------------------------------- modifiers


def _asked(setting: str, value: str | None, off: str, on: str) -> bool:
    """A two-valued request setting: ``on`` or not (``None`` is ``off``); else invalid."""
    if value is None or value == off:
        return False
    if value == on:
        return True
    raise InvalidModifierError(f"{setting} must be {off!r} or {on!r}, not {value!r}")


def geo_is_us(value: str | None) -> bool:
    """``inference_geo`` as asked for: ``us`` or not; anything else is invalid."""
    return _asked("inference_geo", value, "global", "us")


def speed_is_fast(value: str | None) -> bool:
    """``speed`` as asked for: ``fast`` or not; anything else is invalid."""
    return _asked("speed", value, "standard", "fast")


def check_modifiers(entry: ModelEntry, day: date, *, batch: bool, geo_us: bool, fast: bool) -> None:
    """Raise InvalidModifierError for a combination the API rejects for this model on this day."""
    model = entry.info.id
    if fast and batch:
        raise InvalidModifierError("fast mode is not available in the Batch API (speed='fast' with batch=True)")
    if geo_us and not entry.info.inference_geo:
        raise InvalidModifierError(
            f"{model} does not accept inference_geo (only Claude 4.6 and later models do; the API answers 400)"
        )
    if fast:
        if not entry.fast:
            raise InvalidModifierError(f"{model} does not offer fast mode (speed='fast')")
        row = row_at(entry.fast, day)
        if row is not None and row.kind == "unavailable":
            raise InvalidModifierError(f"{model}: fast mode is not available on {day}: {row.note}".rstrip(": "))


def rates(
    model: str,
    *,
    at: datetime | date | None = None,
    batch: bool = False,
    inference_geo: str | None = None,
    speed: str | None = None,
    prompt_tokens: int = 0,
    table: PriceTable | None = None,
) -> Rates | None:
    """The per-MTok rates in force for ``model`` at ``at`` (default now), modifiers applied.

    ``prompt_tokens`` (input + cache writes + cache reads) picks the band for models priced
    by prompt length. ``None`` when unpriced; :class:`ValueError` for a combination the API
    rejects. Emits no warning: use it to inspect or to check a request before sending.
    """
    tbl = table or default_table()
    day = utc_day(at)
    geo_us, fast = geo_is_us(inference_geo), speed_is_fast(speed)
    entry = tbl.entry(model)
    if entry is None:
        return None
    check_modifiers(entry, day, batch=batch, geo_us=geo_us, fast=fast)
    basis = Basis(day=day, batch=batch, geo_us=geo_us, fast=fast, prompt_tokens=prompt_tokens)
    return applicable_rates(tbl, model, basis)
