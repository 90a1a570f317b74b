"""Exact cost of a Claude call, from a dated price table.

::

    cost = Σ over buckets  tokens × rate per MTok / 1,000,000      (per iteration, at its model)
           × 1.1 when inference_geo="us" (Claude 4.6 and later)
           × 0.5 for the Batch API
         + $0.01 × web searches

The rates of each part come from THE rule for which price row applies,
:func:`canny.pricing.rates.applicable_rates`. Everything is :class:`~decimal.Decimal`,
computed in a context that traps on any rounding, so a cost is the exact product of
integer tokens and decimal rates. ``None`` means
*unpriced*: the model is unknown, or the table has no confirmed figure for that date or
mode. It is never 0, and it comes with one :class:`UnpricedModelWarning` per model per
process.

Modifier combinations the API itself rejects raise :class:`InvalidModifierError`, a
:class:`ValueError` and a :class:`~canny.errors.ConfigError` (``inference_geo="us"``
on a model before Claude 4.6, ``speed="fast"`` on a model without fast mode or after it was
removed, fast mode in a batch), so a caller can check a request with :func:`rates` or
:func:`worst_case_cost` before sending it. Modifiers read from the API's own usage object
(``usage.inference_geo``, ``usage.speed``, ``usage.service_tier == "batch"``) are applied
where they can apply and never raise: they describe what the server did, so a reported
``speed`` wins over the requested one, and ``"us"`` on either side bills US-only inference.

The table is ``canny/pricing/prices.toml`` plus, when present, ``$CANNY_HOME/prices.toml``
(or the user config dir's ``canny/prices.toml`` when ``CANNY_HOME`` is unset). It is
loaded on first use, never at ``import canny``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, Inexact, localcontext
from typing import Any

from canny.errors import InvalidModifierError, UnpricedModelWarning
from canny.pricing.rates import EXACT, Basis, applicable_rates, check_modifiers, geo_is_us, rates, speed_is_fast
from canny.pricing.table import PriceTable, default_table, row_at, utc_day
from canny.usage import API_COUNTS, API_NESTED, MAX_COUNT, Usage, usage_from_api, valid_count

__all__ = [
    "cost",
    "format_usd",
    "known_usage_fields",
    "reported_modifiers",
    "to_micros",
    "unknown_usage_fields",
    "warn_unexpected",
    "worst_case_cost",
]

_ONE = Decimal(1)
_CENT = Decimal("0.01")
_CANNY_COUNTS = tuple(f.name for f in fields(Usage) if f.name != "iterations")


# --------------------------------------------------------------------------- usage input


#: Values the API reports in ``usage`` and what they mean for the price. A value not listed
#: is recorded as sent, warned about once, and makes the cost unpriced (it might change it).
_REPORTED_GEO = {"global": False, "not_available": False, "us": True}
_REPORTED_SPEED = {"standard": False, "fast": True}
#: Priority Tier burns down a commitment at list rates; ``batch`` is half price.
_REPORTED_TIER = {"standard": False, "priority": False, "batch": True}
#: Usage fields that are neither counts nor modifiers: nothing to price.
_USAGE_FIELDS = frozenset({*API_COUNTS, *API_NESTED, "iterations", "inference_geo", "speed", "service_tier"})
_NESTED_COUNTS = {
    **API_NESTED,
    # A breakdown of output_tokens (thinking is output), not a bucket of its own.
    "output_tokens_details": frozenset({"thinking_tokens"}),
}
_ITERATION_FIELDS = frozenset({*_USAGE_FIELDS, "model", "type"})


@dataclass(frozen=True, slots=True)
class _Carried:
    """Modifiers the API reported in the usage object itself (``None``: not reported), and
    what in it canny could not price (``unknown``: empty when everything is understood)."""

    geo_us: bool | None = None
    fast: bool | None = None
    batch: bool = False
    unknown: tuple[str, ...] = ()


def warn_unexpected(what: str) -> None:
    """One :class:`~canny.errors.ResponseWarning` per unexpected field/value per process."""
    from canny.errors import ResponseWarning

    key = f"response:{what}"
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(f"the API sent {what}; recorded as sent", ResponseWarning, stacklevel=4)


def reported_modifiers(reported: Mapping[str, Any] | Any) -> _Carried:
    """Read what the server says it did (``inference_geo``, ``speed``, ``service_tier``) and
    flag anything in a usage object that canny cannot price. Never raises: a response is a fact."""
    unknown: list[str] = []
    if reported is None:
        return _Carried()

    def lookup(name: str, table: Mapping[str, bool]) -> bool | None:
        value = _read(reported, name)
        if value is None:
            return None
        if isinstance(value, str) and value in table:
            return table[value]
        unknown.append(f"usage.{name} {value!r}")
        return None

    geo_us = lookup("inference_geo", _REPORTED_GEO)
    fast = lookup("speed", _REPORTED_SPEED)
    batch = bool(lookup("service_tier", _REPORTED_TIER))
    if isinstance(reported, (dict, Mapping)):
        unknown.extend(_unknown_counts(reported, "usage", _USAGE_FIELDS))
        for i, item in enumerate(reported.get("iterations") or ()):
            if isinstance(item, Mapping):
                unknown.extend(_unknown_counts(item, f"usage.iterations[{i}]", _ITERATION_FIELDS))
    for what in unknown:
        warn_unexpected(what)
    return _Carried(geo_us=geo_us, fast=fast, batch=batch, unknown=tuple(unknown))


def _unknown_counts(obj: Mapping[str, Any], where: str, known: frozenset[str]) -> list[str]:
    """Fields that could carry billable quantities canny has no rate for. Unknown fields
    that are not counts (or are zero) are only warned about."""
    found: list[str] = []
    for key, what in _plan(tuple(obj), known):
        value = obj[key]
        if what is _COUNT:
            if value is not None and not valid_count(value):
                found.append(f"{where}.{key} {value!r:.40}")
        elif what is _NESTED:
            if isinstance(value, (dict, Mapping)):
                found.extend(_unknown_counts(value, f"{where}.{key}", _NESTED_COUNTS[str(key)]))
        elif str(key).endswith(_COUNTED) and not _zero(value):
            found.append(f"{where}.{key} {value!r}")
        else:
            warn_unexpected(f"an unknown field {where}.{key}")
    return found


_COUNT, _NESTED, _UNKNOWN = "count", "nested", "unknown"
#: How :func:`_unknown_counts` reads a usage object with these keys, in their order: each
#: key that needs a look, and what it is (a known count, a nested object, an unknown
#: field; other known fields need none). A response's usage comes in the same few shapes
#: call after call, so each is worked out once.
_PLANS: dict[tuple[tuple[Any, ...], frozenset[str]], tuple[tuple[Any, str], ...]] = {}


def _plan(keys: tuple[Any, ...], known: frozenset[str]) -> tuple[tuple[Any, str], ...]:
    plan = _PLANS.get((keys, known))
    if plan is None:
        steps: list[tuple[Any, str]] = []
        for key in keys:
            name = str(key)
            if name in _NESTED_COUNTS:
                steps.append((key, _NESTED))
            elif name not in known:
                steps.append((key, _UNKNOWN))
            elif name.endswith(_COUNTED):
                steps.append((key, _COUNT))
        plan = tuple(steps)
        if len(_PLANS) > 256:  # shapes are few; anything else is not worth keeping
            _PLANS.clear()
        _PLANS[(keys, known)] = plan
    return plan


_COUNTED = ("_tokens", "_requests")


def unknown_usage_fields(usage: Mapping[str, Any]) -> list[str]:
    """The names in a caller's usage object that are neither the API's usage fields nor
    canny's bucket names (``cache_creation.x`` for a nested one). For checking input
    (``canny cost --usage``); a response's unknown fields are facts (:func:`reported_modifiers`)."""
    known = {*_USAGE_FIELDS, *_CANNY_COUNTS, *_NESTED_COUNTS}
    found = [str(key) for key in usage if str(key) not in known]
    for parent, names in _NESTED_COUNTS.items():
        part = usage.get(parent)
        if isinstance(part, Mapping):
            found.extend(f"{parent}.{key}" for key in part if str(key) not in names)
    return found


def known_usage_fields() -> list[str]:
    """Every name :func:`unknown_usage_fields` accepts, for suggestions."""
    nested = [f"{parent}.{name}" for parent, names in _NESTED_COUNTS.items() for name in sorted(names)]
    return sorted({*_USAGE_FIELDS, *_CANNY_COUNTS}) + nested


def _zero(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def _count_error(where: str, value: Any) -> ValueError:
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_COUNT:
        return ValueError(f"{where}: token counts too large to price (more than {MAX_COUNT:,})")
    return ValueError(f"{where} must be a non-negative integer, got {value!r:.40}")


def _check_api_mapping(obj: Mapping[str, Any], where: str) -> None:
    """Reject counts that ``usage_from_api`` would silently read as 0 (strings, floats ...)."""
    for key in API_COUNTS:
        value = obj.get(key)
        if value is not None and (not isinstance(value, int) or not valid_count(value)):
            raise _count_error(f"{where}.{key}", value)
    for sub in API_NESTED:
        part = obj.get(sub)
        if part is None:
            continue
        if not isinstance(part, Mapping):
            raise ValueError(f"{where}.{sub} must be an object")
        for key, value in part.items():
            if not str(key).endswith(("_tokens", "_requests")) or value is None:
                continue
            if not isinstance(value, int) or not valid_count(value):
                raise _count_error(f"{where}.{sub}.{key}", value)
    iterations = obj.get("iterations")
    if iterations is not None:
        if not isinstance(iterations, list):
            raise ValueError(f"{where}.iterations must be a list")
        for i, item in enumerate(iterations):
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}.iterations[{i}] must be an object")
            _check_api_mapping(item, f"{where}.iterations[{i}]")


def _read(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, (dict, Mapping)) else getattr(obj, name, None)


def _coerce_usage(usage: Usage | Mapping[str, Any] | Any) -> tuple[Usage, _Carried]:
    """A :class:`Usage` from any accepted shape, plus the modifiers the API reported.

    Mappings may use the API's names (``input_tokens`` ...) or canny's bucket names
    (``input``, ``cache_write_1h`` ..., as in :meth:`Usage.buckets`).
    """
    if usage is None:
        return Usage(), _Carried()
    if isinstance(usage, Usage):
        result, carried = usage, _Carried()
    else:
        if isinstance(usage, Mapping):
            api_keys = {*API_COUNTS, *API_NESTED, "iterations"}
            if not api_keys & set(usage) and set(_CANNY_COUNTS) & set(usage):
                counts = {k: usage[k] for k in _CANNY_COUNTS if k in usage}
                for key, value in counts.items():
                    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                        raise _count_error(f"usage.{key}", value)
                return Usage(**counts), _Carried()
            _check_api_mapping(usage, "usage")
        result = usage_from_api(usage)
        carried = reported_modifiers(usage)
    for part in (result, *(it.usage for it in result.iterations)):
        for name in _CANNY_COUNTS:
            if getattr(part, name) < 0:
                raise _count_error(f"usage.{name}", getattr(part, name))
    return result, carried


# --------------------------------------------------------------------------- cost

_WARNED: set[str] = set()


def _warn_unpriced(table: PriceTable, name: str, day: date, *, fast: bool, reason: str = "") -> None:
    """One UnpricedModelWarning per model per process."""
    model = table.resolve(name)
    if model in _WARNED:
        return
    _WARNED.add(model)
    entry = table.entry(name)
    if reason:
        why = f"{model}: {reason}"
    elif entry is None:
        why = f"unknown model {name!r}: add it to a price file (see docs/pricing.md)"
    else:
        rows = entry.fast if fast and entry.fast else entry.prices
        row = row_at(rows, day)
        mode = " in fast mode" if fast and entry.fast else ""
        detail = f" ({row.note})" if row is not None and row.note else ""
        why = f"{model}: no confirmed price{mode} on {day}{detail}"
    warnings.warn(f"{why}; its cost is reported as unpriced, not $0", UnpricedModelWarning, stacklevel=3)


def cost(
    model: str,
    usage: Usage | Mapping[str, Any] | Any,
    *,
    batch: bool = False,
    inference_geo: str | None = None,
    speed: str | None = None,
    at: datetime | date | None = None,
    table: PriceTable | None = None,
    reported: Mapping[str, Any] | None = None,
) -> Decimal | None:
    """Exact USD cost of one call's ``usage`` on ``model``, or ``None`` when unpriced.

    ``usage`` is a canny :class:`Usage`, the API's usage dict (or its JSON), or an
    ``anthropic.types.Usage``-like object. With ``usage.iterations``, the cost is the sum
    over iterations, each at its own model (the call's model when it names none); if any
    iteration is unpriced, so is the call. ``at`` (default now, UTC) picks the dated row.

    ``inference_geo`` and ``speed`` are what the *request* asked for: checked, and a
    combination the API rejects raises. What the *server* reported (``reported``, the raw
    usage fields, or the modifiers inside a usage mapping) is a fact: it wins over the
    request, never raises, and a value canny does not know makes the cost ``None``
    (with one :class:`~canny.errors.ResponseWarning`), never a guess.
    """
    tbl = table or default_table()
    day = utc_day(at)
    found, carried = _coerce_usage(usage)
    if reported is not None:
        carried = reported_modifiers(reported)
    explicit_geo, explicit_fast = geo_is_us(inference_geo), speed_is_fast(speed)
    entry = tbl.entry(model)
    if entry is not None:
        check_modifiers(entry, day, batch=batch, geo_us=explicit_geo, fast=explicit_fast)
    if carried.unknown:
        return None  # warned once by reported_modifiers
    # What the server reports it did wins over what was asked for.
    geo_us = carried.geo_us if carried.geo_us is not None else explicit_geo
    fast = carried.fast if carried.fast is not None else explicit_fast
    batch = batch or carried.batch
    parts = [(it.model or model, it.usage) for it in found.iterations] or [(model, found)]
    total = Decimal(0)
    with localcontext(EXACT):
        for name, part in parts:
            basis = Basis(day=day, batch=batch, geo_us=geo_us, fast=fast, prompt_tokens=part.prompt_tokens)
            found_rates = applicable_rates(tbl, name, basis)
            if found_rates is None:
                _warn_unpriced(tbl, name, day, fast=fast)
                return None
            total += found_rates.cost(part)
        searches = found.web_search_requests or sum(it.usage.web_search_requests for it in found.iterations)
        if searches:
            fee = tbl.web_search_fee(day)
            if fee is None:
                _warn_unpriced(tbl, model, day, fast=fast, reason=f"no web-search fee known on {day}")
                return None
            total += fee * searches
        return _tidy(total)


def worst_case_cost(
    model: str,
    *,
    input_tokens: int,
    max_tokens: int,
    cache_read_tokens: int = 0,
    at: datetime | date | None = None,
    batch: bool = False,
    inference_geo: str | None = None,
    speed: str | None = None,
    cache_ttl: str | None = None,
    table: PriceTable | None = None,
) -> Decimal | None:
    """The most a request can cost before it is sent: for budgets.

    ``input_tokens`` at the input rate (at the 5m or 1h write rate when ``cache_ttl`` says
    the request writes the cache: the most a prompt token can cost), ``cache_read_tokens``
    at the cache-read rate, ``max_tokens`` at the output rate. The band of a model priced by
    prompt length is the one ``input_tokens + cache_read_tokens`` falls in. Server-tool fees
    and tokens added by server tools are not included.
    """
    for key, value in (("input_tokens", input_tokens), ("max_tokens", max_tokens)):
        if value < 0:
            raise _count_error(key, value)
    if cache_read_tokens < 0:
        raise _count_error("cache_read_tokens", cache_read_tokens)
    if cache_ttl not in (None, "5m", "1h"):
        raise InvalidModifierError(f"cache_ttl must be '5m' or '1h', not {cache_ttl!r}")
    tbl = table or default_table()
    found = rates(
        model,
        at=at,
        batch=batch,
        inference_geo=inference_geo,
        speed=speed,
        prompt_tokens=input_tokens + cache_read_tokens,
        table=tbl,
    )
    if found is None:
        _warn_unpriced(tbl, model, utc_day(at), fast=speed_is_fast(speed))
        return None
    if cache_ttl == "5m":
        usage = Usage(cache_write_5m=input_tokens, cache_read=cache_read_tokens, output=max_tokens)
    elif cache_ttl == "1h":
        usage = Usage(cache_write_1h=input_tokens, cache_read=cache_read_tokens, output=max_tokens)
    else:
        usage = Usage(input=input_tokens, cache_read=cache_read_tokens, output=max_tokens)
    return _tidy(found.cost(usage))


def _tidy(amount: Decimal) -> Decimal:
    """Drop trailing zeros (``0.02800000`` → ``0.028``) without changing the value."""
    with localcontext(EXACT):
        tidy = amount.normalize()
        exponent = tidy.as_tuple().exponent
        return tidy.quantize(_ONE) if isinstance(exponent, int) and exponent > 0 else tidy


# --------------------------------------------------------------------------- small helpers


def to_micros(amount: Decimal) -> int:
    """Whole micro-dollars, rounded half-even (for storage and display, not for pricing)."""
    with localcontext(EXACT) as ctx:
        ctx.traps[Inexact] = False
        return int(amount.scaleb(6).quantize(_ONE, rounding=ROUND_HALF_EVEN))


def format_usd(amount: Decimal | None) -> str:
    """``$0.0101``: four decimals, more for sub-cent amounts (two significant digits,
    e.g. ``$0.000075``), never scientific notation; ``unpriced`` for ``None``."""
    if amount is None:
        return "unpriced"
    with localcontext(EXACT) as ctx:
        ctx.traps[Inexact] = False
        sign = "-" if amount < 0 else ""
        size = abs(amount)
        places = 4
        if 0 < size < _CENT:
            places = max(4, 1 - size.adjusted())
        text = f"{size.quantize(_ONE.scaleb(-places), rounding=ROUND_HALF_EVEN):f}"
    if places > 4:
        whole, _, frac = text.partition(".")
        text = f"{whole}.{frac[:4]}{frac[4:].rstrip('0')}"
    return f"{sign}${text}"
