"""The shared books of Client and meter: one refusal row, one 'interrupted' rule."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from canny import errors
from canny._call import Attempt, CallSpec, failure_outcome
from canny.books import Books
from canny.config import load_settings
from tests.conftest import MemoryLedger


def _spec() -> CallSpec:
    return CallSpec(model="claude-sonnet-5-5", params={"model": "claude-sonnet-5-5", "max_tokens": 64}, stream=True)


def test_failure_outcome_is_interrupted_once_text_was_shown() -> None:
    """failure_outcome: an attempt that showed text is interrupted; one that showed none is an error."""
    attempt = Attempt(number=1, started_at=datetime.now(UTC))
    assert failure_outcome(attempt) == "error"
    attempt.acc.feed({"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 3}}})
    attempt.acc.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    attempt.acc.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}})
    assert failure_outcome(attempt) == "interrupted"


def test_books_reserve_writes_the_budget_refused_row(clean_env: object) -> None:
    """Books.reserve: a guard that refuses leaves one budget_refused row numbered as asked, and raises."""

    class Refuse:
        def reserve(self, spec: CallSpec) -> object:
            raise errors.BudgetExceeded("no", budget="day", limit=Decimal(1))

    ledger = MemoryLedger()
    books = Books(load_settings(), ledger=ledger, budget=Refuse())  # type: ignore[arg-type]
    with pytest.raises(errors.BudgetExceeded):
        books.reserve(_spec(), books.ledger, attempt=2)
    assert [(r.outcome, r.attempt, r.error_code) for r in ledger.rows] == [("budget_refused", 2, "day")]


def test_books_turn_a_ledger_error_into_ledger_unavailable(clean_env: object) -> None:
    """Books.reserve fails closed: a budget that cannot be checked for a ledger fault refuses the call."""

    class Broken:
        def reserve(self, spec: CallSpec) -> object:
            raise errors.LedgerError("disk gone")

    books = Books(load_settings(), ledger=MemoryLedger(), budget=Broken())  # type: ignore[arg-type]
    with pytest.raises(errors.LedgerUnavailable, match="budgets could not be checked"):
        books.reserve(_spec(), books.ledger)
