"""The models the emulator knows: ids, aliases, limits and lifecycle (data).

From the models overview of Anthropic's documentation (state 2026-11); the hidden tool-use
prompt sizes from the tool-use pages, and the models that reject forced tool use from the
extended-thinking pages. Release dates marked "approx." are approximate. Retired models stay in the catalogue (the
Models API lists them with ``lifecycle=retired``) but ``/v1/messages`` answers them with
404 ``not_found_error``, as the API does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["MODELS", "ModelInfo", "resolve_model"]

Lifecycle = Literal["active", "deprecated", "retired"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model as the Models API describes it, plus emulator-only facts."""

    id: str
    display_name: str
    created_at: str
    line: str | None
    lifecycle: Lifecycle = "active"
    max_input_tokens: int = 1_000_000
    max_tokens: int = 128_000
    aliases: tuple[str, ...] = ()
    deprecated_at: str | None = None
    retires_at: str | None = None
    #: Whether a final assistant message (prefill) is accepted (4.5 and earlier).
    prefill: bool = False
    #: Hidden tool-use system prompt in input tokens, for ``tool_choice`` ``auto``/``none``
    #: and for ``any``/``tool`` (Anthropic's tool-use docs; 500/600 where the table has no value).
    tool_prompt: tuple[int, int] = (500, 600)
    #: Whether ``tool_choice`` ``any``/``tool`` (forced tool use) is accepted.
    forced_tools: bool = True
    #: What ``usage.inference_geo`` reports by default, as recorded from the real API:
    #: ``"global"`` for the models that accept the ``inference_geo`` parameter (4.6 and
    #: later), ``"not_available"`` for Sonnet 4, Sonnet 4.5, Haiku 4.5 and Fable 5.1
    #: (tests/wire/README.md lists the recordings). Opus 4.5 is inferred, not recorded.
    inference_geo: str = "global"

    @property
    def generation(self) -> float:
        """The model generation read from the id (``claude-opus-4-5-20251101`` -> 4.5,
        ``claude-opus-5`` -> 5.0, ``claude-3-7-sonnet-...`` -> 3.7, ``claude-2.1`` -> 2.1)."""
        match = _GENERATION.search(self.id)
        if match is None:
            return 5.0  # dateless names without a number (``claude-mythos-preview``)
        major, minor = match.group(1), match.group(2)
        return float(f"{major}.{minor or 0}")

    @property
    def sampling(self) -> bool:
        """Whether ``temperature``/``top_p``/``top_k`` are accepted (under API version
        2023-06-01): Opus 4.7, Opus 4.8 and the 5.x models answer "... is deprecated for
        this model." (recorded in public issues)."""
        return self.generation < 4.7

    @property
    def output_details(self) -> bool:
        """Whether ``usage.output_tokens_details`` (``thinking_tokens``) is reported without
        thinking asked for: recorded for Opus 4.8 and the 5.x models (which think by
        default), absent for Opus 4.7 and Sonnet 4.6."""
        return self.generation >= 4.8

    def capabilities(self) -> dict[str, Any]:
        """The Models API ``capabilities`` object (the SDK's ``ModelCapabilities``).

        Derived from the models overview and the extended-thinking docs and a recorded Haiku 4.5 record: extended
        thinking (``enabled``) up to 4.6, ``adaptive`` from 4.6, thinking always on (no
        ``disabled``) for Fable, Mythos and Opus 5.5; effort from Opus 4.5 (not Haiku or
        Sonnet 4.5), ``xhigh`` from 4.7; compaction from 4.6. An approximation where the
        docs are silent (``between_tools``).
        """
        gen = self.generation
        modern = gen >= 4.5
        always_on = self.line in ("fable", "mythos") or self.id.startswith("claude-opus-5-5")
        effort = gen >= 4.6 or self.id.startswith("claude-opus-4-5")
        programmatic = (modern and self.line != "haiku") or gen >= 5.0

        def flag(value: bool) -> dict[str, bool]:
            return {"supported": value}

        return {
            "batch": flag(gen >= 3.0),
            "citations": flag(gen >= 3.5),
            "code_execution": flag(programmatic),
            "context_management": {
                "supported": modern,
                "clear_thinking_20251015": flag(modern),
                "clear_tool_uses_20250919": flag(modern),
                "compact_20260112": flag(gen >= 4.6),
            },
            "effort": {
                "supported": effort,
                "low": flag(effort),
                "medium": flag(effort),
                "high": flag(effort),
                "xhigh": flag(effort and gen >= 4.7),
                "max": flag(effort and gen >= 4.6),
            },
            "image_input": flag(gen >= 3.0),
            "pdf_input": flag(gen >= 3.5),
            "server_tools": {
                "supported": gen >= 3.5,
                "code_execution": flag(gen >= 3.7),
                "web_search": flag(gen >= 3.5),
            },
            "structured_outputs": flag(modern),
            "thinking": {
                "supported": gen >= 3.7,
                "types": {
                    "adaptive": flag(gen >= 4.6),
                    "between_tools": flag(gen >= 5.0 and not always_on),
                    "disabled": flag(not always_on),
                    "enabled": flag(3.7 <= gen < 4.7),
                },
            },
        }

    def to_json(self) -> dict[str, Any]:
        """The ``ModelInfo`` object of ``GET /v1/models`` (with ``capabilities`` and the
        context window ``max_input_tokens``)."""
        return {
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
            "lifecycle": self.lifecycle,
            "line": self.line,
            "max_input_tokens": self.max_input_tokens,
            "max_tokens": self.max_tokens,
            "capabilities": self.capabilities(),
            "deprecated_at": self.deprecated_at,
            "retires_at": self.retires_at,
        }


_GENERATION = re.compile(r"claude-(?:[a-z]+-)?(\d+)(?:[-.](\d))?(?:-|\Z)")


def _m(model_id: str, name: str, created: str, line: str | None, **kw: Any) -> ModelInfo:
    return ModelInfo(model_id, name, f"{created}T00:00:00Z", line, **kw)


_OLD = {
    "max_input_tokens": 200_000,
    "max_tokens": 64_000,
    "prefill": True,
    "tool_prompt": (496, 588),
    "inference_geo": "not_available",
}
_UNFORCED: dict[str, Any] = {"forced_tools": False}
_RETIRED: dict[str, Any] = {**_OLD, "lifecycle": "retired"}

_CATALOGUE: tuple[ModelInfo, ...] = (
    _m("claude-fable-5-2", "Claude Fable 5.2", "2026-11-09", "fable", **_UNFORCED),
    _m("claude-mythos-5-2", "Claude Mythos 5.2", "2026-11-09", "mythos"),
    _m("claude-haiku-5-5", "Claude Haiku 5.5", "2026-10-07", "haiku"),
    _m("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-28", "sonnet", **_UNFORCED),
    _m("claude-opus-5-5", "Claude Opus 5.5", "2026-09-22", "opus", **_UNFORCED),
    _m("claude-fable-5-1", "Claude Fable 5.1", "2026-09-01", "fable", inference_geo="not_available", **_UNFORCED),
    _m("claude-mythos-5-1", "Claude Mythos 5.1", "2026-09-01", "mythos"),
    _m("claude-opus-5", "Claude Opus 5", "2026-07-24", "opus", tool_prompt=(286, 406)),
    _m("claude-sonnet-5", "Claude Sonnet 5", "2026-07-01", "sonnet", tool_prompt=(354, 474)),  # approx.
    _m("claude-fable-5", "Claude Fable 5", "2026-06-09", "fable"),
    _m("claude-mythos-5", "Claude Mythos 5", "2026-06-09", "mythos"),
    _m("claude-opus-4-8", "Claude Opus 4.8", "2026-05-28", "opus", tool_prompt=(290, 410)),
    _m("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16", "opus", tool_prompt=(675, 804)),  # approx.
    _m("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17", "sonnet", tool_prompt=(497, 589)),
    _m("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", "opus", tool_prompt=(497, 589)),  # approx.
    _m("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24", "opus", aliases=("claude-opus-4-5",), **_OLD),
    _m(
        "claude-haiku-4-5-20251001",
        "Claude Haiku 4.5",
        "2025-10-15",
        "haiku",
        aliases=("claude-haiku-4-5",),
        **_OLD,
    ),
    _m(
        "claude-sonnet-4-5-20250929",
        "Claude Sonnet 4.5",
        "2025-09-29",
        "sonnet",
        aliases=("claude-sonnet-4-5",),
        lifecycle="deprecated",
        deprecated_at="2026-09-30T00:00:00Z",
        retires_at="2026-11-30T00:00:00Z",
        **_OLD,
    ),
    _m("claude-mythos-preview", "Claude Mythos Preview", "2026-04-07", "mythos", lifecycle="retired"),
    _m("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05", "opus", aliases=("claude-opus-4-1",), **_RETIRED),
    _m("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22", "opus", aliases=("claude-opus-4-0",), **_RETIRED),
    _m(
        "claude-sonnet-4-20250514",
        "Claude Sonnet 4",
        "2025-05-22",
        "sonnet",
        aliases=("claude-sonnet-4-0",),
        **_RETIRED,
    ),
    _m("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24", "sonnet", **_RETIRED),
    _m("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22", "haiku", **_RETIRED),
    _m("claude-3-5-sonnet-20241022", "Claude Sonnet 3.5 (New)", "2024-10-22", "sonnet", **_RETIRED),
    _m("claude-3-5-sonnet-20240620", "Claude Sonnet 3.5", "2024-06-20", "sonnet", **_RETIRED),
    _m("claude-3-opus-20240229", "Claude Opus 3", "2024-02-29", "opus", **_RETIRED),
    _m("claude-3-sonnet-20240229", "Claude Sonnet 3", "2024-02-29", "sonnet", **_RETIRED),
    _m("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07", "haiku", **_RETIRED),
    _m("claude-2.1", "Claude 2.1", "2023-11-21", None, **_RETIRED),
    _m("claude-2.0", "Claude 2.0", "2023-07-11", None, **_RETIRED),
    _m("claude-instant-1.2", "Claude Instant 1.2", "2023-08-09", None, **_RETIRED),
)

#: Every model id the emulator knows -> its info, newest first.
MODELS: Mapping[str, ModelInfo] = {info.id: info for info in _CATALOGUE}
_BY_ALIAS: Mapping[str, ModelInfo] = {alias: info for info in _CATALOGUE for alias in info.aliases}


def resolve_model(model_id: str) -> ModelInfo | None:
    """The model for an id or alias (retired ones included), or ``None`` if unknown."""
    return MODELS.get(model_id) or _BY_ALIAS.get(model_id)
