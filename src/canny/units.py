"""The units money and time are stored in: pico-dollars and epoch microseconds.

The ledger and the budgets keep amounts as integers of 10^-12 USD (exact for every rate
in the price table, fast to sum) and instants as integers of microseconds since the Unix
epoch, UTC (exact, compact, dialect-free). These functions convert both ways; they are
the one place either conversion is written.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

__all__ = ["EPOCH", "from_us", "pico_to_usd", "plain_decimal", "plain_digits", "to_us", "usd_to_pico"]

#: The Unix epoch, UTC.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Exact microseconds since the epoch; a naive datetime is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // _US


def from_us(us: int) -> datetime:
    """The UTC instant ``us`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=us)


def usd_to_pico(cost: Decimal) -> int:
    """USD as an integer count of 10^-12 USD (exact for every rate in the price table;
    anything finer is rounded half to even)."""
    return int(cost.scaleb(12).to_integral_value(rounding=ROUND_HALF_EVEN))


def pico_to_usd(pico: int) -> Decimal:
    """An integer count of 10^-12 USD as USD."""
    return Decimal(pico).scaleb(-12)


def plain_digits(text: str) -> str:
    """Decimal text (``"0.010100"``) with no trailing zeros (``"0.0101"``); ``-0`` is ``0``."""
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def plain_decimal(value: Decimal) -> str:
    """A Decimal as plain digits: no exponent (never ``6E-7``), no trailing zeros."""
    return plain_digits(format(value, "f"))
