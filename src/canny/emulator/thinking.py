"""Extended and adaptive thinking: ``thinking`` blocks with signatures, and redacted ones.

With ``thinking`` ``{"type": "enabled", "budget_tokens": N}`` or ``{"type": "adaptive"}``,
every answer starts with a ``thinking`` block: a short deterministic reasoning text (at most
``budget_tokens``) and a ``signature`` derived from it. ``display: "omitted"`` sends the
block with empty ``thinking`` (the signature stays). ``[[thinking=redacted]]`` in the prompt
makes it a
``redacted_thinking`` block with opaque ``data`` instead. Thinking tokens count toward
``max_tokens`` and are billed as output tokens (``usage.output_tokens_details.thinking_tokens``
reports them on the models that report it).

Adaptive thinking at ``output_config.effort`` ``low`` skips the thinking block (the API:
"at lower effort levels, Claude may skip thinking for simpler problems"), except on Fable
and Mythos, whose thinking is always on.

Checks, as the API documents them: ``budget_tokens`` at least 1,024 and below
``max_tokens``; ``enabled`` is rejected from the 4.7 generation on, ``adaptive`` on 4.5 and
earlier, ``disabled`` on Fable and Mythos; thinking with a forced ``tool_choice``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canny.emulator import sse
from canny.emulator.fields import invalid as _invalid
from canny.emulator.tokens import CORPUS, count_tokens, split_deltas, truncate_to_tokens
from canny.emulator.validation import MIN_THINKING_BUDGET, MessagesRequest

__all__ = [
    "MIN_BUDGET",
    "ThinkingPlan",
    "signature_delta",
    "thinking_block",
    "thinking_delta",
    "thinking_plan",
]

#: The smallest ``budget_tokens`` the API accepts.
MIN_BUDGET = MIN_THINKING_BUDGET
#: First model generations by release date (models.py ``created_at``).
_GEN_47 = "2026-04-16"
_GEN_46 = "2026-02-01"
_REPORTS_THINKING_TOKENS = "2026-07-01"
_NATURAL_SENTENCES = 2
#: Model lines whose thinking is always on (never skipped, ``disabled`` rejected).
_ALWAYS_ON = ("fable", "mythos")


@dataclass(frozen=True, slots=True)
class ThinkingPlan:
    """How a reply thinks: the token budget (``None``: adaptive), whether the text is
    shown, and whether the block is redacted."""

    budget: int | None
    omitted: bool = False
    redacted: bool = False


def thinking_plan(request: MessagesRequest, *, redacted: bool = False) -> ThinkingPlan | None:
    """The request's thinking (``None``: no thinking block); :class:`ApiError` for a
    configuration the model or the API rejects."""
    config = request.raw.get("thinking")  # its shape was validated with the request
    if config is None:
        return None
    kind = config.get("type")
    model = request.model
    new = model.created_at >= f"{_GEN_47}T00:00:00Z"
    old = model.created_at < f"{_GEN_46}T00:00:00Z"
    if kind == "disabled":
        if model.line in _ALWAYS_ON:
            raise _invalid(f"thinking.type: 'disabled' is not supported for {model.id}; thinking is always on")
        return None
    if kind in ("enabled", "adaptive") and (request.tool_choice or {}).get("type") in ("any", "tool"):
        raise _invalid("Thinking may not be enabled when tool_choice forces tool use.")
    display = config.get("display")
    if display not in (None, "summarized", "omitted"):
        raise _invalid(f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'")
    omitted = display == "omitted"
    if kind == "adaptive":
        if old:
            raise _invalid(f"thinking.type: 'adaptive' is not supported for {model.id}; use 'enabled'")
        if _effort(request) == "low" and model.line not in _ALWAYS_ON:
            return None  # low effort skips thinking on a simple prompt (every prompt is, here)
        return ThinkingPlan(None, omitted, redacted)
    if kind == "enabled":
        if new:
            raise _invalid(f"thinking.type: 'enabled' is not supported for {model.id}; use 'adaptive'")
        budget: int = config["budget_tokens"]  # an integer >= MIN_BUDGET, validated with the request
        if request.max_tokens <= budget:
            raise _invalid("`max_tokens` must be greater than `thinking.budget_tokens`")
        return ThinkingPlan(budget, omitted, redacted)
    raise _invalid(
        f"thinking: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
        "'enabled', 'disabled', 'adaptive'"
    )


def _effort(request: MessagesRequest) -> object:
    config = request.raw.get("output_config")
    return config.get("effort") if isinstance(config, Mapping) else None


def reports_thinking_tokens(request: MessagesRequest) -> bool:
    """Whether ``usage.output_tokens_details`` is reported (recorded from Opus 5 on)."""
    return request.model.created_at >= f"{_REPORTS_THINKING_TOKENS}T00:00:00Z"


def _digest(*parts: object) -> bytes:
    return hashlib.sha256("\x00".join(str(p) for p in parts).encode()).digest()


def _opaque(size: int, *parts: object) -> str:
    """``size`` deterministic bytes from ``parts``, base64-encoded (signatures, redacted data)."""
    data = b""
    counter = 0
    while len(data) < size:
        data += _digest(counter, *parts)
        counter += 1
    return base64.b64encode(b"\x12" + data[: size - 1]).decode()


def thinking_block(request: MessagesRequest, plan: ThinkingPlan, prompt: str, limit: int) -> tuple[dict[str, Any], int]:
    """The reply's thinking block and its (output) tokens, at most ``limit`` tokens."""
    start = int.from_bytes(_digest("thinking", prompt)[:4], "big")
    sentences = [CORPUS[(start + k) % len(CORPUS)] for k in range(_NATURAL_SENTENCES)]
    topic = " ".join(prompt.split()[:8]).strip().rstrip(".?!") or "this"
    text = f"The user asks about: {topic}. Let me think it through. " + " ".join(sentences)
    cap = limit if plan.budget is None else min(limit, plan.budget)
    text = truncate_to_tokens(text, max(0, cap))
    tokens = count_tokens(text)
    if plan.redacted:
        return {"type": "redacted_thinking", "data": _opaque(180, request.model.id, "redacted", text)}, tokens
    signature = _opaque(240, request.model.id, "signature", text)
    return {"type": "thinking", "thinking": "" if plan.omitted else text, "signature": signature}, tokens


def thinking_delta(index: int, text: str) -> bytes:
    """One ``thinking_delta`` of a thinking block."""
    return sse.encode(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": text}},
    )


def signature_delta(index: int, signature: str) -> bytes:
    """The ``signature_delta`` that ends a thinking block."""
    return sse.encode(
        "content_block_delta",
        {"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": signature}},
    )


def stream_thinking(index: int, block: Mapping[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
    """The ``content_block_start`` block and the deltas of a thinking or redacted block."""
    if block["type"] == "redacted_thinking":
        return dict(block), []
    deltas = [thinking_delta(index, piece) for piece in split_deltas(str(block["thinking"]))]
    return {"type": "thinking", "thinking": "", "signature": ""}, [*deltas, signature_delta(index, block["signature"])]
