"""Pricing a ledger row again with other usage, model or batch: through :func:`canny.pricing.cost`."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from functools import lru_cache

from canny.errors import ResponseWarning, UnpricedModelWarning
from canny.ledger import AttemptRecord
from canny.pricing import PriceTable, cost, utc_day
from canny.usage import Usage

__all__ = ["Repricer", "quiet", "repricer"]

#: ``price(record, usage, model=None, batch=None)``: ``None`` when unpriced.
Repricer = Callable[..., "Decimal | None"]


def repricer(table: PriceTable) -> Repricer:
    """Prices a row's ``usage`` on ``model`` (default: the row's), as a batch or not
    (default: as the row ran), on the row's UTC day, with the ``inference_geo`` and
    ``speed`` it recorded. Identical inputs are priced once (a bounded cache)."""

    @lru_cache(maxsize=65536)
    def priced(model: str, usage: Usage, batch: bool, geo: str | None, speed: str | None, day: date) -> Decimal | None:
        # A row keeps what the server did: read leniently (unknown values are unpriced).
        reported = {"inference_geo": geo, "speed": speed}
        return cost(model, usage, batch=batch, reported=reported, at=day, table=table)

    def price(
        record: AttemptRecord, usage: Usage, *, model: str | None = None, batch: bool | None = None
    ) -> Decimal | None:
        chosen_batch = record.batch if batch is None else batch
        day = utc_day(record.started_at)
        return priced(model or record.model, usage, chosen_batch, record.inference_geo, record.speed, day)

    return price


@contextmanager
def quiet() -> Iterator[None]:
    """No unpriced-model or response warnings: a report counts its unpriced rows instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnpricedModelWarning)
        warnings.simplefilter("ignore", ResponseWarning)
        yield
