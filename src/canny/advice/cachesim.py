"""What prompt caching would have done to a run of ledger rows: which prefixes, read or written.

The rule, applied to the attempts in time order (``canny report --what-if cache`` and the
prefix part of ``--right-size``):

- A prefix is a boundary of the request (:mod:`canny.prefixes`: after the tools, the system
  prompt, each message) at least as long as the model's minimum cacheable length. It is
  *repeated* when two or more attempts of the same model and API key (canny knows keys,
  not workspaces; caches are per workspace) sent it.
- Each attempt puts one breakpoint, on its deepest repeated prefix.
- An attempt reads the deepest of its prefixes that is in the cache: written or read by an
  earlier attempt less than :data:`TTL` (5 minutes) before it starts (each use refreshes it).
- It writes, at the 5-minute write rate, its breakpoint's tokens beyond what it read.
  So the first use of a prefix pays the write and later uses within the TTL read it.
- The rest of its prompt stays uncached input; output and server-tool use do not change.

Sizes are canny's low local estimate of each prefix, capped at the attempt's real prompt
(input + cache writes + cache reads), so the saving is on the low side. Attempts that sent
no prompt (refused before sending, failed before the answer) take no part. Attempts with
no stored prefixes (written before canny kept them) are *unknown*: :func:`simulate` gives
``None`` for them, never a guess.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from canny.caching import min_cacheable_tokens
from canny.ledger import AttemptRecord
from canny.prefixes import Prefix, parse_prefixes
from canny.usage import Usage

__all__ = ["TTL", "Cached", "simulate"]

#: The cache lifetime simulated (the API's default, ``ttl: "5m"``).
TTL = timedelta(minutes=5)

_Key = tuple[str, str | None, str]


@dataclass(frozen=True, slots=True)
class Cached:
    """One attempt with caching as simulated: its new usage, the prefix it would have read
    and the one it would have written (its breakpoint; ``None``: no repeated prefix)."""

    usage: Usage
    read: Prefix | None = None
    written: Prefix | None = None
    breakpoint: Prefix | None = None


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _cacheable(record: AttemptRecord) -> list[Prefix] | None:
    """The record's prefixes its model can cache, shallowest first; ``None`` when unknown."""
    found = parse_prefixes(record.prefix_hashes)
    if found is None:
        return None
    least = min_cacheable_tokens(record.model)
    return [p for p in found if p.tokens >= least]


def _key(record: AttemptRecord, prefix: Prefix) -> _Key:
    return (record.model, record.key_fingerprint, prefix.hash)


def simulate(records: Sequence[AttemptRecord]) -> list[Cached | None]:
    """Per record (in the order given, which should be time order), its usage with the
    repeated prefixes cached; ``None`` for a record with no stored prefixes (unknown)."""
    prefixes = [_cacheable(r) for r in records]
    prompts = [r.usage.prompt_tokens for r in records]
    seen: Counter[_Key] = Counter()
    for record, found, prompt in zip(records, prefixes, prompts, strict=True):
        if found and prompt:
            seen.update({_key(record, p) for p in found})
    expiry: dict[_Key, datetime] = {}
    out: list[Cached | None] = []
    for record, found, prompt in zip(records, prefixes, prompts, strict=True):
        usage = record.usage
        if found is None:
            out.append(None)
            continue
        if not prompt:
            out.append(Cached(usage))
            continue
        start = _aware(record.started_at)
        read = next((p for p in reversed(found) if start < expiry.get(_key(record, p), start)), None)
        point = next((p for p in reversed(found) if seen[_key(record, p)] >= 2), None)
        read_tokens = min(read.tokens, prompt) if read else 0
        write_tokens = max(min(point.tokens, prompt) - read_tokens, 0) if point else 0
        written = point if write_tokens else None
        for used in (read, written):
            if used is not None:
                expiry[_key(record, used)] = start + TTL
        cached = dataclasses.replace(
            usage,
            input=prompt - read_tokens - write_tokens,
            cache_write_5m=write_tokens,
            cache_write_1h=0,
            cache_read=read_tokens,
        )
        out.append(Cached(cached, read=read, written=written, breakpoint=point))
    return out
