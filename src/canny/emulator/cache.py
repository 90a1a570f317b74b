"""Input token accounting and prompt-cache emulation by prefix.

A request's prompt is a list of *blocks* in the API's cache order: each tool definition,
each system block, then each message content block (the first block of a message also
carries 2 tokens for the role marker; the first tool carries the hidden tool-use system
prompt, whose size depends on the model and on a forced ``tool_choice``). A block's tokens are
:func:`~canny.emulator.tokens.count_tokens` of its text (text blocks) or of its compact
JSON (anything else, ``cache_control`` left out). Each block has a chained SHA-256 of the
model and everything up to it: two requests share a cached prefix exactly when those
hashes match.

Breakpoints are the blocks carrying ``cache_control``, plus the last block when the
request has a top-level ``cache_control``. Billing follows the API's rule
(Anthropic's prompt-caching documentation): A = the furthest cached prefix found looking back up to 20
blocks from each breakpoint, B = the last 1h breakpoint after A, C = the last breakpoint:
read A, write (B - A) at 1h, write (C - max(A, B)) at 5m, and ``input_tokens`` is what
follows C. Every breakpoint's prefix is then stored with its TTL. There is no minimum
cacheable length: any prefix is cached.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from canny.emulator.tokens import count_tokens
from canny.emulator.tools import hidden_prompt_tokens
from canny.emulator.validation import ApiError, MessagesRequest, check_cache_control

__all__ = ["ROLE_TOKENS", "Block", "InputUsage", "PromptCache", "prompt_blocks"]

#: Tokens charged for each message's role marker.
ROLE_TOKENS = 2
_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
_MAX_BREAKPOINTS = 4
_LOOKBACK = 20
_PRUNE_ABOVE = 10_000


@dataclass(frozen=True, slots=True)
class Block:
    """One cacheable position: its tokens, the prefix hash up to it, its breakpoint TTL."""

    tokens: int
    digest: str
    ttl: str | None = None


@dataclass(frozen=True, slots=True)
class InputUsage:
    """The input side of ``usage``; the four buckets add up to ``total``."""

    input_tokens: int
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    @property
    def cache_creation(self) -> int:
        """``cache_creation_input_tokens``: both write buckets."""
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        """Every input token, cached or not (what ``count_tokens`` reports)."""
        return self.input_tokens + self.cache_creation + self.cache_read


def _canonical(block: Mapping[str, Any]) -> str:
    return json.dumps({k: v for k, v in block.items() if k != "cache_control"}, sort_keys=True, separators=(",", ":"))


def _block_tokens(block: Mapping[str, Any]) -> int:
    if block.get("type") == "text" and isinstance(block.get("text"), str):
        return count_tokens(block["text"])
    return count_tokens(_canonical(block))


def _raw_blocks(request: MessagesRequest) -> Iterator[tuple[str, int, Mapping[str, Any]]]:
    """(section, extra tokens, block) in cache order; the first tool also carries the
    hidden tool-use system prompt."""
    overhead = hidden_prompt_tokens(request)
    for i, tool in enumerate(request.tools):
        yield "tools", overhead if i == 0 else 0, tool
    if isinstance(request.system, str):
        if request.system:
            yield "system", 0, {"type": "text", "text": request.system}
    elif request.system:
        for block in request.system:
            yield "system", 0, block
    for message in request.messages:
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
        if not blocks:
            blocks = [{"type": "text", "text": ""}]
        for j, block in enumerate(blocks):
            yield str(message["role"]), ROLE_TOKENS if j == 0 else 0, block


def prompt_blocks(request: MessagesRequest) -> list[Block]:
    """The request's blocks with hashes and breakpoints; :class:`ApiError` for misuse."""
    blocks: list[Block] = []
    chain = hashlib.sha256(request.model.id.encode())
    choice = "" if request.tool_choice is None else _canonical(request.tool_choice)
    for section, extra, raw in _raw_blocks(request):
        if choice and section in ("user", "assistant"):
            chain.update(f"\x00tool_choice\x00{choice}".encode())  # a new tool_choice invalidates messages
            choice = ""
        chain.update(f"\x00{section}\x00{_canonical(raw)}".encode())
        ttl = None
        if raw.get("cache_control") is not None:
            ttl = check_cache_control(raw["cache_control"], "cache_control")
            if raw.get("type") == "text" and not raw.get("text"):
                raise ApiError(400, "invalid_request_error", "cache_control cannot be set for empty text blocks")
        blocks.append(Block(_block_tokens(raw) + extra, chain.hexdigest(), ttl))
    if request.cache_control is not None and blocks:
        ttl = check_cache_control(request.cache_control, "cache_control")
        last = blocks[-1]
        if last.ttl is not None and last.ttl != ttl:
            raise ApiError(
                400,
                "invalid_request_error",
                "cache_control: the top-level ttl differs from the ttl on the last block",
            )
        blocks[-1] = Block(last.tokens, last.digest, ttl)
    marks = [b.ttl for b in blocks if b.ttl is not None]
    if len(marks) > _MAX_BREAKPOINTS:
        raise ApiError(
            400,
            "invalid_request_error",
            f"A maximum of {_MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {len(marks)}.",
        )
    if "1h" in marks and "5m" in marks[: len(marks) - marks[::-1].index("1h") - 1]:
        raise ApiError(
            400,
            "invalid_request_error",
            "cache_control: a ttl='1h' block must not come after a ttl='5m' block",
        )
    return blocks


class PromptCache:
    """Cached prefixes (hash -> expiry) for one server or one run; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str]] = {}

    def charge(self, blocks: list[Block]) -> InputUsage:
        """Split the prompt's tokens into read / write / uncached, then store its breakpoints."""
        total = sum(b.tokens for b in blocks)
        breakpoints = [i for i, b in enumerate(blocks) if b.ttl is not None]
        if not breakpoints:
            return InputUsage(input_tokens=total)
        prefix = [0]
        for block in blocks:
            prefix.append(prefix[-1] + block.tokens)
        with self._lock:
            now = self._clock()
            hit = self._furthest_hit(blocks, breakpoints, now)
            later_1h = [i for i in breakpoints if i > hit and blocks[i].ttl == "1h"]
            b = later_1h[-1] if later_1h else hit
            c = breakpoints[-1]
            read = prefix[hit + 1]
            write_1h = prefix[b + 1] - read
            write_5m = max(0, prefix[c + 1] - prefix[max(hit, b) + 1])
            if len(self._entries) > _PRUNE_ABOVE:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            for i in breakpoints:
                ttl = blocks[i].ttl
                assert ttl is not None
                self._entries[blocks[i].digest] = (now + _TTL_SECONDS[ttl], ttl)
            if hit >= 0:
                _, ttl = self._entries.get(blocks[hit].digest, (0.0, "5m"))
                self._entries[blocks[hit].digest] = (now + _TTL_SECONDS[ttl], ttl)
        uncached = total - prefix[max(c, hit) + 1]
        return InputUsage(input_tokens=uncached, cache_write_5m=write_5m, cache_write_1h=write_1h, cache_read=read)

    def _furthest_hit(self, blocks: list[Block], breakpoints: list[int], now: float) -> int:
        """Index of the furthest block whose prefix is cached (-1: none)."""
        best = -1
        for point in breakpoints:
            for i in range(point, max(point - _LOOKBACK, -1), -1):
                entry = self._entries.get(blocks[i].digest)
                if entry is not None and entry[0] > now:
                    best = max(best, i)
                    break
        return best
