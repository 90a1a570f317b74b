"""What a call gives back: the message, its outcome, its usage and what it cost."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from canny.errors import Refused
from canny.usage import Usage

if TYPE_CHECKING:
    from anthropic.types import Message

__all__ = ["OUTCOMES", "CallResult", "Outcome"]

#: How an attempt (and a call: its last attempt) ended; the ledger stores it per row.
Outcome = Literal["ok", "max_tokens", "refused", "interrupted", "error", "budget_refused", "cancelled", "lost"]
OUTCOMES: tuple[Outcome, ...] = (
    "ok",
    "max_tokens",
    "refused",
    "interrupted",
    "error",
    "budget_refused",
    "cancelled",
    "lost",
)


@dataclass(frozen=True, slots=True)
class CallResult:
    """The end of a call (all its attempts).

    ``usage`` and ``cost`` cover every attempt that was billed (a retried attempt that
    failed after ``message_start`` still consumed input); ``last_usage`` is the usage of
    the attempt that produced ``message``. ``cost`` is ``None`` when the model is
    unpriced: unknown, never zero.
    """

    outcome: Outcome
    model: str
    text: str
    message: dict[str, Any]
    usage: Usage
    cost: Decimal | None
    attempts: int
    call_id: str
    last_usage: Usage = field(default_factory=Usage)
    stop_reason: str | None = None
    refusal_category: str | None = None
    request_id: str | None = None
    price_version: str | None = None
    complete: bool = True

    @property
    def ok(self) -> bool:
        """The model answered (``ok`` or a ``max_tokens`` stop)."""
        return self.outcome in ("ok", "max_tokens")

    def raise_for_outcome(self) -> CallResult:
        """Raise :class:`~canny.errors.Refused` for a refusal; return ``self`` otherwise."""
        if self.outcome == "refused":
            category = f" (category: {self.refusal_category})" if self.refusal_category else ""
            raise Refused(f"the model declined to answer{category}", category=self.refusal_category, result=self)
        return self

    def sdk_message(self) -> Message:
        """The message as the SDK's ``anthropic.types.Message`` (imports the SDK)."""
        from anthropic.types import Message

        return Message.model_validate(self.message)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary: message, outcome, usage buckets, cost as a string."""
        return {
            "outcome": self.outcome,
            "model": self.model,
            "text": self.text,
            "stop_reason": self.stop_reason,
            "refusal_category": self.refusal_category,
            "complete": self.complete,
            "attempts": self.attempts,
            "call_id": self.call_id,
            "request_id": self.request_id,
            "usage": self.usage.buckets(),
            "cost_usd": None if self.cost is None else f"{self.cost:f}",  # plain digits, never 6E-7
            "price_version": self.price_version,
            "message": self.message,
        }
