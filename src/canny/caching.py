"""Prompt caching made easy: place ``cache_control`` breakpoints on the stable prefix.

:func:`apply_cache` takes a Messages API request body and returns a new one with
``cache_control: {"type": "ephemeral"}`` (plus ``"ttl": "1h"`` for the one-hour TTL) on up
to three blocks, in the API's cache order ``tools`` → ``system`` → ``messages``:

1. the last tool definition, when tools are present;
2. the last system block (a string system prompt becomes one text block);
3. the last block of the latest message *before* the final user turn: the part of the
   conversation the next turn of an agent loop sends again unchanged, so that turn reads
   it from the cache while the new user turn is never written speculatively.

Each is marked only when the prefix up to and including it reaches the model's minimum
cacheable length (:func:`min_cacheable_tokens`): the API silently declines to cache a
shorter prefix, so a marker there would waste one of the four breakpoint slots. Tokens are
estimated locally and deliberately low (:func:`estimate_tokens`: UTF-8 bytes / 4, base64
image and PDF data not counted, thinking blocks not counted), so a prefix near the
minimum is left unmarked rather than marked in vain.

Breakpoints the caller placed are respected: they are counted (a top-level
``cache_control``, the API's automatic caching, counts as one at the end of the prompt),
a block that already carries one is left as it is, the total never exceeds 4, and no
marker is added where it would put a 5-minute breakpoint before a 1-hour one (the API
requires 1-hour entries first). Markers are never put on thinking blocks or empty text
blocks (the API rejects them there); the last eligible block of a section is used instead.

The caller's objects are never modified: the lists, messages and blocks that get a
marker are copied, everything else is shared.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from canny.errors import ConfigError

if TYPE_CHECKING:
    from canny.pricing import PriceTable

__all__ = [
    "CACHE_MODES",
    "CACHE_TTLS",
    "DEFAULT_MIN_CACHEABLE_TOKENS",
    "MAX_BREAKPOINTS",
    "MIN_CACHEABLE_TOKENS",
    "CacheMode",
    "CacheTTL",
    "apply_cache",
    "check_cache_settings",
    "estimate_tokens",
    "min_cacheable_tokens",
]

CacheMode = Literal["auto", "off"]
CacheTTL = Literal["5m", "1h"]
CACHE_MODES: tuple[CacheMode, ...] = ("auto", "off")
CACHE_TTLS: tuple[CacheTTL, ...] = ("5m", "1h")

#: The API accepts at most this many ``cache_control`` breakpoints per request.
MAX_BREAKPOINTS = 4

#: Minimum cacheable prompt length in tokens, per canonical model id (Anthropic's
#: prompt-caching page as of 2026-10-07). Fable 5.2 and Mythos 5.2 have no
#: published figure yet: they get the default below, like any model not listed.
MIN_CACHEABLE_TOKENS: Mapping[str, int] = {
    "claude-fable-5-1": 512,
    "claude-mythos-5-1": 512,
    "claude-opus-5-5": 512,
    "claude-opus-5": 512,
    "claude-sonnet-5-5": 512,
    "claude-fable-5": 512,
    "claude-mythos-5": 512,
    "claude-haiku-5-5": 512,
    "claude-opus-4-8": 1024,
    "claude-sonnet-5": 1024,
    "claude-sonnet-4-6": 1024,
    "claude-sonnet-4-5": 1024,
    "claude-opus-4-1": 1024,
    "claude-opus-4-0": 1024,
    "claude-sonnet-4-0": 1024,
    "claude-mythos-preview": 2048,
    "claude-opus-4-7": 2048,
    "claude-3-5-haiku-20241022": 2048,
    "claude-opus-4-6": 4096,
    "claude-opus-4-5": 4096,
    "claude-haiku-4-5": 4096,
}
#: For models not in :data:`MIN_CACHEABLE_TOKENS`: the most common minimum.
DEFAULT_MIN_CACHEABLE_TOKENS = 1024

#: Block types that can never carry ``cache_control``, and whose tokens are not counted
#: towards the minimum (opaque, and dropped from earlier turns by most models).
_THINKING_TYPES = frozenset({"thinking", "redacted_thinking"})
_BYTES_PER_TOKEN = 4


def min_cacheable_tokens(model: str, *, table: PriceTable | None = None) -> int:
    """The shortest prefix (in tokens) ``model`` caches; aliases and dated ids resolve
    through the price table (``table``, else the default one); unknown models get
    :data:`DEFAULT_MIN_CACHEABLE_TOKENS`."""
    from canny.pricing import resolve_model

    return MIN_CACHEABLE_TOKENS.get(resolve_model(model, table=table), DEFAULT_MIN_CACHEABLE_TOKENS)


def check_cache_settings(mode: str, ttl: str) -> tuple[CacheMode, CacheTTL]:
    """``(mode, ttl)`` checked: :class:`~canny.errors.ConfigError` for anything else."""
    if mode not in CACHE_MODES:
        raise ConfigError(f"cache must be 'auto' or 'off', not {mode!r}")
    if ttl not in CACHE_TTLS:
        raise ConfigError(f"cache_ttl must be '5m' or '1h', not {ttl!r}")
    return mode, ttl


# --------------------------------------------------------------------------- estimating


def _without_base64(value: Any) -> Any:
    """``value`` with the ``data`` of base64 sources left out (their size says nothing
    about their tokens: an image costs by its pixels) and ``cache_control`` dropped."""
    if isinstance(value, Mapping):
        base64 = value.get("type") == "base64"
        return {
            k: _without_base64(v) for k, v in value.items() if k != "cache_control" and not (base64 and k == "data")
        }
    if isinstance(value, list):
        return [_without_base64(v) for v in value]
    return value


def _block_bytes(block: Any) -> int:
    """UTF-8 bytes of what a block contributes to the prompt, counted low."""
    if isinstance(block, str):
        return len(block.encode())
    if not isinstance(block, Mapping):
        return 0
    kind = block.get("type")
    if kind in _THINKING_TYPES:
        return 0
    if kind == "text" and isinstance(block.get("text"), str):
        return len(block["text"].encode())
    return len(json.dumps(_without_base64(block), ensure_ascii=False, separators=(",", ":"), default=str).encode())


def estimate_tokens(value: Any) -> int:
    """A deliberately low token estimate of a block, a tool, a string or a list of them:
    UTF-8 bytes / 4, rounded down. Text counts its characters only; other blocks count
    their compact JSON without ``cache_control`` and without base64 data; thinking blocks
    count nothing. English averages about 4 characters per token on the older tokenizer,
    and the newer one (Claude 4.7 and later) makes about 30% more tokens of the same text,
    so the real count is rarely below this one."""
    if isinstance(value, list):
        return sum(_block_bytes(item) for item in value) // _BYTES_PER_TOKEN
    return _block_bytes(value) // _BYTES_PER_TOKEN


# --------------------------------------------------------------------------- placing


def _eligible(block: Any) -> bool:
    """Whether the API accepts ``cache_control`` on this block."""
    if not isinstance(block, Mapping):
        return False
    kind = block.get("type")
    if kind in _THINKING_TYPES:
        return False
    return not (kind == "text" and not block.get("text"))


def _ttl_of(marker: Any) -> CacheTTL:
    return "1h" if isinstance(marker, Mapping) and marker.get("ttl") == "1h" else "5m"


@dataclass(slots=True)
class _Candidate:
    """A block that may get a marker: where it is, and the prefix size up to it."""

    section: Literal["tools", "system", "messages"]
    position: int  # index in the flat cache order (tools, system blocks, message blocks)
    prefix_bytes: int
    index: int  # tool index, system block index, or message index
    block: int = -1  # block index inside the message (messages only)


def _content_blocks(content: Any) -> list[Any]:
    """A message's content as a list of blocks (a string is one text block)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return content
    return []


def _last_eligible(blocks: Sequence[Any]) -> int:
    for i in range(len(blocks) - 1, -1, -1):
        if _eligible(blocks[i]):
            return i
    return -1


class _Scan:
    """One pass over the request in cache order: existing markers and the candidates."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.existing: list[tuple[int, CacheTTL]] = []
        self.candidates: list[_Candidate] = []
        self._position = 0
        self._size = 0

        tools = params.get("tools")
        if isinstance(tools, list) and tools:
            start, sizes = self._walk(tools)
            if isinstance(tools[-1], Mapping):
                self.candidates.append(_Candidate("tools", start + len(tools) - 1, sizes[-1], len(tools) - 1))

        system_blocks = _content_blocks(params.get("system"))
        if system_blocks:
            start, sizes = self._walk(system_blocks)
            last = _last_eligible(system_blocks)
            if last >= 0:
                self.candidates.append(_Candidate("system", start + last, sizes[last], last))

        messages = params.get("messages")
        if not isinstance(messages, list):
            messages = []
        users = [i for i, m in enumerate(messages) if isinstance(m, Mapping) and m.get("role") == "user"]
        final_user = users[-1] if users else -1
        for i, message in enumerate(messages):
            blocks = _content_blocks(message.get("content") if isinstance(message, Mapping) else None)
            start, sizes = self._walk(blocks)
            if i == final_user - 1:
                last = _last_eligible(blocks)
                if last >= 0:
                    self.candidates.append(_Candidate("messages", start + last, sizes[last], i, last))

        top = params.get("cache_control")
        if top is not None:  # automatic caching: a breakpoint on the last block
            self.existing.append((self._position, _ttl_of(top)))

    def _walk(self, blocks: Sequence[Any]) -> tuple[int, list[int]]:
        """Take ``blocks`` next in cache order, noting their markers: the position of the
        first, and the prefix size up to and including each."""
        start, sizes = self._position, []
        for block in blocks:
            self._size += _block_bytes(block)
            sizes.append(self._size)
            self._note(block, self._position)
            self._position += 1
        return start, sizes

    def _note(self, block: Any, position: int) -> None:
        if isinstance(block, Mapping) and block.get("cache_control") is not None:
            self.existing.append((position, _ttl_of(block["cache_control"])))

    def has_marker(self, position: int) -> bool:
        return any(p == position for p, _ in self.existing)


def _fits_order(markers: Sequence[tuple[int, CacheTTL]], position: int, ttl: CacheTTL) -> bool:
    """True when a ``ttl`` marker at ``position`` keeps every 1h breakpoint before every 5m one."""
    for other, other_ttl in markers:
        if other < position and other_ttl == "5m" and ttl == "1h":
            return False
        if other > position and other_ttl == "1h" and ttl == "5m":
            return False
    return True


def _marked(block: Any, marker: dict[str, str]) -> dict[str, Any]:
    return {**block, "cache_control": dict(marker)}


def _with_marker(params: dict[str, Any], spot: _Candidate, marker: dict[str, str]) -> None:
    """Put ``marker`` on the candidate's block in ``params`` (a copy), copying the path to it."""
    if spot.section == "tools":
        tools = list(params["tools"])
        tools[spot.index] = _marked(tools[spot.index], marker)
        params["tools"] = tools
    elif spot.section == "system":
        system = params["system"]
        blocks = [{"type": "text", "text": system}] if isinstance(system, str) else list(system)
        blocks[spot.index] = _marked(blocks[spot.index], marker)
        params["system"] = blocks
    else:
        messages = list(params["messages"])
        message = dict(messages[spot.index])
        content = list(_content_blocks(message.get("content")))
        content[spot.block] = _marked(content[spot.block], marker)
        message["content"] = content
        messages[spot.index] = message
        params["messages"] = messages


def apply_cache(
    params: Mapping[str, Any], *, model: str, mode: CacheMode | str = "auto", ttl: CacheTTL | str = "5m"
) -> dict[str, Any]:
    """A new request body with cache breakpoints on the stable prefix (see the module
    docstring for the rules). ``mode="off"`` returns an unchanged copy. ``params`` and
    everything in it are left untouched. :class:`~canny.errors.ConfigError` for a mode
    or TTL other than ``auto``/``off`` and ``5m``/``1h``."""
    mode, ttl = check_cache_settings(mode, ttl)
    out = dict(params)
    if mode == "off":
        return out
    scan = _Scan(params)
    minimum = min_cacheable_tokens(model) * _BYTES_PER_TOKEN
    marker = {"type": "ephemeral", "ttl": "1h"} if ttl == "1h" else {"type": "ephemeral"}
    markers = list(scan.existing)
    for spot in scan.candidates:
        if len(markers) >= MAX_BREAKPOINTS:
            break
        if spot.prefix_bytes < minimum or scan.has_marker(spot.position):
            continue
        if not _fits_order(markers, spot.position, ttl):
            continue
        _with_marker(out, spot, marker)
        markers.append((spot.position, ttl))
    return out
