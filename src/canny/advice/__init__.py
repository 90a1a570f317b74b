"""Advice from the ledger: what to change to pay less, with figures a user can check.

- :mod:`canny.advice.whatif`: the same rows priced under another model, as a batch, or
  with their repeated prompt prefixes cached, beside what was paid
  (``canny report --what-if``).
- :mod:`canny.advice.rightsize`: ``max_tokens`` against the output actually used, and the
  repeated prefixes worth caching (``canny report --right-size``).
- :mod:`canny.advice.cachesim`: the one rule for what caching would have done.

Docs: ``docs/cutting-the-bill.md``.
"""

from __future__ import annotations

from canny.advice.cachesim import TTL, Cached, simulate
from canny.advice.rightsize import (
    PrefixRow,
    RightSize,
    SizeRow,
    right_size,
    right_size_report,
    right_size_rows,
    suggest_max_tokens,
)
from canny.advice.whatif import WHAT_IF_FIELDS, WhatIf, WhatIfRow, what_if, what_if_report, what_if_rows

__all__ = [
    "TTL",
    "WHAT_IF_FIELDS",
    "Cached",
    "PrefixRow",
    "RightSize",
    "SizeRow",
    "WhatIf",
    "WhatIfRow",
    "right_size",
    "right_size_report",
    "right_size_rows",
    "simulate",
    "suggest_max_tokens",
    "what_if",
    "what_if_report",
    "what_if_rows",
]
