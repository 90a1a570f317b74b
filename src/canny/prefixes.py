"""Prompt prefix hashes: which parts of a request repeat from one call to the next.

The API caches a prompt by its prefix, in the order ``tools`` → ``system`` → ``messages``,
keyed by a cumulative hash up to each breakpoint. canny keeps the same kind of fingerprint
in the ledger (never the text), so that a report can find the prefixes that came back
often enough to be worth caching (``canny report --right-size``, ``--what-if cache``).

A request has one *boundary* after the tool definitions (when there are tools), one after
the system prompt (when there is one) and one after each message. The hash of a boundary
is SHA-256 over a version line and, for every part up to and including it, one line of
its canonical JSON; the first 16 hex digits are kept (64 bits). Canonical means: keys
sorted, no spaces, ``cache_control`` markers dropped (a marker does not change what is
cached), a string system prompt or message content read as one text block (as the API
reads it). Two requests share a boundary hash exactly when everything before and at that
boundary is the same.

Each boundary also keeps the prefix's size in tokens, estimated locally and low
(:func:`canny.caching.estimate_tokens`: UTF-8 bytes / 4). Only boundaries at least as long
as the model's minimum cacheable length (:func:`canny.caching.min_cacheable_tokens`) are
kept, since a shorter prefix cannot be cached, and at most :data:`MAX_PREFIXES` of them:
every ``tools``/``system`` one and the deepest messages.

Stored form (the ledger's ``prefix_hashes`` column), one space-separated entry per
boundary, shallowest first: ``KIND:HASH:TOKENS``, where ``KIND`` is ``t`` (tools), ``s``
(system) or ``mN`` (message ``N``, counted from 1). An empty string means the request had
no prefix long enough; ``NULL`` means the row was written before canny kept them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from canny.caching import estimate_tokens, min_cacheable_tokens

if TYPE_CHECKING:
    from canny.pricing import PriceTable

__all__ = ["MAX_PREFIXES", "VERSION", "Prefix", "format_prefixes", "parse_prefixes", "prefix_hashes", "prefixes"]

#: The first line of every hash: change it and every hash changes.
VERSION = b"canny-prefix-v1\n"
#: At most this many boundaries are stored per attempt.
MAX_PREFIXES = 16
_HEX = 16


@dataclass(frozen=True, slots=True)
class Prefix:
    """One boundary of a request: where it is, its hash, its estimated size in tokens."""

    kind: str  # "t", "s" or "m<N>"
    hash: str
    tokens: int

    @property
    def label(self) -> str:
        """``tools``, ``system`` or ``message N``, for people."""
        if self.kind == "t":
            return "tools"
        if self.kind == "s":
            return "system"
        return f"message {self.kind[1:]}"


def _text_blocks(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _bare(value: Any) -> Any:
    """``value`` without ``cache_control`` markers."""
    if isinstance(value, Mapping):
        return {str(k): _bare(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, (list, tuple)):
        return [_bare(v) for v in value]
    return value


def _line(part: Any) -> bytes:
    text = json.dumps(_bare(part), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogatepass") + b"\n"


def prefixes(params: Mapping[str, Any]) -> list[Prefix]:
    """Every boundary of a request body (``tools``, ``system``, ``messages``), shallowest first."""
    digest = hashlib.sha256(VERSION)
    tokens = 0
    found: list[Prefix] = []

    def add(kind: str, part: Any, size: int) -> None:
        nonlocal tokens
        digest.update(_line(part))
        tokens += size
        found.append(Prefix(kind, digest.copy().hexdigest()[:_HEX], tokens))

    tools = params.get("tools")
    if isinstance(tools, list) and tools:
        add("t", {"tools": tools}, estimate_tokens(tools))
    system = _text_blocks(params.get("system"))
    if system:
        add("s", {"system": system}, estimate_tokens(system))
    messages = params.get("messages")
    for n, message in enumerate(messages if isinstance(messages, list) else [], start=1):
        if isinstance(message, Mapping):
            content = _text_blocks(message.get("content"))
            part = {"message": {**message, "content": content}}
            add(f"m{n}", part, estimate_tokens(content) if isinstance(content, list) else 0)
    return found


def prefix_hashes(
    model: str, params: Mapping[str, Any], *, body_chars: int | None = None, table: PriceTable | None = None
) -> str:
    """The stored form of a request's boundaries that ``model`` could cache (see the module
    docstring): those at least its minimum cacheable length, at most :data:`MAX_PREFIXES`.

    ``body_chars``, when known, is the length in characters of the request's system,
    messages and tools as JSON. Every estimate here is UTF-8 bytes / 4 of a part of that
    JSON, and a character is at most 4 bytes, so no prefix estimates more tokens than the
    body has characters: a body shorter than the model's minimum has nothing to hash.
    ``table``: the price table that resolves ``model`` (the call's own; else the default)."""
    least = min_cacheable_tokens(model, table=table)
    if body_chars is not None and body_chars < least:
        return ""
    long_enough = [p for p in prefixes(params) if p.tokens >= least]
    if len(long_enough) > MAX_PREFIXES:
        head = [p for p in long_enough if not p.kind.startswith("m")]
        deepest = [p for p in long_enough if p.kind.startswith("m")][len(head) - MAX_PREFIXES :]
        long_enough = head + deepest
    return format_prefixes(long_enough)


def format_prefixes(found: list[Prefix]) -> str:
    """``KIND:HASH:TOKENS`` entries separated by spaces."""
    return " ".join(f"{p.kind}:{p.hash}:{p.tokens}" for p in found)


def parse_prefixes(stored: str | None) -> list[Prefix] | None:
    """The boundaries of a stored ``prefix_hashes`` value; ``None`` for ``None`` (unknown).
    Entries that cannot be read are skipped."""
    if stored is None:
        return None
    found: list[Prefix] = []
    for entry in stored.split():
        kind, _, rest = entry.partition(":")
        digest, _, size = rest.partition(":")
        if kind and digest and size.isdigit():
            found.append(Prefix(kind, digest, int(size)))
    return found
