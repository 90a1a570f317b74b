"""What prompt caching saved: per attempt, against sending the same tokens uncached::

    saved = cache_read     × (input rate − cache-read rate)
          − cache_write_5m × (5m write rate − input rate)
          − cache_write_1h × (1h write rate − input rate)

at the rates that priced the attempt. Reports sum it over millions of ledger rows, in SQL
when the ledger can, so the rates are not looked up per row: :func:`cache_saving_rates`
turns the price table into one small decision tree per model (:class:`CacheSavingRates`)
whose leaves are exact integer weights. The tree is not a second copy of the pricing rule:
it is built by asking THE rule, :func:`canny.pricing.rates.applicable_rates`, on every
side of every place where its answer can change (a row's start day, batch, US-only
inference, fast mode, a long-prompt threshold), and keeping a split only where the answers
differ. A ledger evaluates the tree (in SQL, or with :meth:`CacheSavingRates.saving_units`
over the :class:`~canny.pricing.rates.Basis` of a row, :func:`basis_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Literal

from canny.pricing.rates import Basis, applicable_rates
from canny.pricing.table import ModelEntry, PriceTable, default_table, utc_day

if TYPE_CHECKING:
    from canny.ledger import AttemptRecord

__all__ = [
    "CacheSavingRates",
    "CacheWeights",
    "RateSplit",
    "RateTree",
    "SplitTest",
    "basis_of",
    "cache_saving_rates",
]

_EPOCH_DAY = date(1970, 1, 1)
_DAY_US = 86_400_000_000


@dataclass(frozen=True, slots=True)
class CacheWeights:
    """What one cached token is worth for one kind of attempt, per bucket, as integers in
    units of ``10**-exponent`` USD (:class:`CacheSavingRates`). A saving weighs reads
    positively and writes negatively (their premium over plain input)."""

    cache_read: int
    cache_write_5m: int
    cache_write_1h: int


SplitTest = Literal["started_before", "batch", "geo_us", "fast", "prompt_over"]

#: How each split reads a :class:`Basis` (``value``: midnight UTC of a day in microseconds
#: since the epoch for ``started_before``, a token count for ``prompt_over``).
_TESTS: Mapping[SplitTest, Callable[[Basis, int], bool]] = {
    "started_before": lambda basis, value: basis.day < _EPOCH_DAY + timedelta(days=value // _DAY_US),
    "batch": lambda basis, _: basis.batch,
    "geo_us": lambda basis, _: basis.geo_us,
    "fast": lambda basis, _: basis.fast,
    "prompt_over": lambda basis, value: basis.prompt_tokens > value,
}


@dataclass(frozen=True, slots=True)
class RateSplit:
    """A choice between two rate trees on one part of a :class:`Basis`: ``started_before``
    (``value`` microseconds since the epoch, UTC midnight), ``batch``, ``geo_us``
    (``inference_geo == "us"``), ``fast`` (``speed == "fast"``), or ``prompt_over``
    (input + cache writes + cache reads above ``value`` tokens)."""

    test: SplitTest
    value: int
    yes: RateTree
    no: RateTree

    def pick(self, basis: Basis) -> RateTree:
        """The branch a request with this ``basis`` takes."""
        return self.yes if _TESTS[self.test](basis, self.value) else self.no


#: Weights, a split on an attribute, or ``None`` (no price: the attempt adds nothing).
RateTree = CacheWeights | RateSplit | None


def basis_of(record: AttemptRecord) -> Basis:
    """What decides a ledger row's price row: its UTC day, batch, ``inference_geo``,
    ``speed`` and prompt length, as stored."""
    return Basis(
        day=utc_day(record.started_at),
        batch=record.batch,
        geo_us=record.inference_geo == "us",
        fast=record.speed == "fast",
        prompt_tokens=record.usage.prompt_tokens,
    )


@dataclass(frozen=True, slots=True)
class CacheSavingRates:
    """Per model name (matched exactly against ``AttemptRecord.model``), the tree of cache
    weights that prices an attempt's saving, in units of ``10**-exponent`` USD.

    :func:`cache_saving_rates` builds it from the price table; a ledger only evaluates it,
    in SQL or with :meth:`saving_units`, so the arithmetic stays integer and exact. An
    attempt counts when its stored cost is positive (priced and billed) and it read or
    wrote the cache.
    """

    exponent: int
    models: Mapping[str, RateTree]

    def saving_units(self, record: AttemptRecord) -> int:
        """The attempt's saving in units of ``10**-exponent`` USD (0 when it does not count)."""
        usage = record.usage
        cached = usage.cache_read + usage.cache_write
        if not cached or record.cost_usd is None or record.cost_usd <= 0:
            return 0
        tree = self.models.get(record.model)
        if isinstance(tree, RateSplit):
            basis = basis_of(record)
            while isinstance(tree, RateSplit):
                tree = tree.pick(basis)
        if tree is None:
            return 0
        return (
            usage.cache_read * tree.cache_read
            + usage.cache_write_5m * tree.cache_write_5m
            + usage.cache_write_1h * tree.cache_write_1h
        )

    def to_usd(self, units: int) -> Decimal:
        """Units as exact dollars."""
        return Decimal(units).scaleb(-self.exponent)


# --------------------------------------------------------------------------- building

#: Saving per MTok of (cache read, 5m write, 1h write) against uncached input.
_Saving = tuple[Decimal, Decimal, Decimal]


@dataclass(frozen=True, slots=True)
class _Node:
    test: SplitTest
    value: int
    yes: _Shape
    no: _Shape


_Shape = _Saving | _Node | None


def _split(test: SplitTest, value: int, yes: _Shape, no: _Shape) -> _Shape:
    """A split, or either side when both give the same answer."""
    return yes if yes == no else _Node(test, value, yes, no)


def _saving(table: PriceTable, model: str, basis: Basis) -> _Saving | None:
    found = applicable_rates(table, model, basis)
    if found is None:
        return None
    return (found.input - found.cache_read, found.input - found.cache_write_5m, found.input - found.cache_write_1h)


def _model_tree(table: PriceTable, entry: ModelEntry) -> _Shape:
    """One model's tree: :func:`applicable_rates` asked on both sides of every day a row
    starts, of batch, US-only inference and fast mode, and of every prompt threshold."""
    model = entry.info.id
    rows = (*entry.prices, *entry.fast)
    thresholds = sorted({r.long_prompt_threshold for r in rows if r.long_prompt_threshold})

    def bands(day: date, batch: bool, geo: bool, fast: bool) -> _Shape:
        tree: _Shape = _saving(table, model, Basis(day, batch, geo, fast, 0))
        for over in thresholds:
            longer = _saving(table, model, Basis(day, batch, geo, fast, over + 1))
            tree = _split("prompt_over", over, longer, tree)
        return tree

    def modes(day: date) -> _Shape:
        def speeds(batch: bool, geo: bool) -> _Shape:
            return _split("fast", 0, bands(day, batch, geo, True), bands(day, batch, geo, False))

        def regions(batch: bool) -> _Shape:
            return _split("geo_us", 0, speeds(batch, True), speeds(batch, False))

        return _split("batch", 0, regions(True), regions(False))

    tree: _Shape = None  # before the first row: no price
    for day in sorted({row.effective_from for row in rows}):
        tree = _split("started_before", (day - _EPOCH_DAY).days * _DAY_US, tree, modes(day))
    return tree


def _leaves(shape: _Shape) -> Iterator[_Saving]:
    if isinstance(shape, _Node):
        yield from _leaves(shape.yes)
        yield from _leaves(shape.no)
    elif shape is not None:
        yield shape


def _places(value: Decimal) -> int:
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def cache_saving_rates(table: PriceTable | None = None) -> CacheSavingRates:
    """The price table as :class:`CacheSavingRates`: per model id and alias, a tree over
    the price rows' dates, batch, ``inference_geo``, fast mode and prompt-length bands,
    whose leaves weigh each cache bucket by its saving per token (reads: input rate minus
    read rate; writes: minus their premium over the input rate), as exact integers."""
    tbl = table or default_table()
    shapes = {model_id: _model_tree(tbl, entry) for model_id, entry in tbl.models.items()}
    places = max((_places(d) for shape in shapes.values() for leaf in _leaves(shape) for d in leaf), default=0)
    scale = Decimal(10) ** places

    def weights(shape: _Shape) -> RateTree:
        if shape is None:
            return None
        if isinstance(shape, _Node):
            return RateSplit(shape.test, shape.value, weights(shape.yes), weights(shape.no))
        read, w5, w1h = (int(d * scale) for d in shape)
        return CacheWeights(cache_read=read, cache_write_5m=w5, cache_write_1h=w1h)

    trees = {model_id: weights(shape) for model_id, shape in shapes.items()}
    models: dict[str, RateTree] = dict(trees)
    for alias, model_id in tbl.aliases.items():
        models.setdefault(alias, trees.get(model_id))
    return CacheSavingRates(exponent=places + 6, models=models)
