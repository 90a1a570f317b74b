"""The budget tables are the ledger's migration: ledgers written before budget/ became a
package (budget tables registered at import time) open and migrate cleanly, and the
budget package leans on nothing above it."""

from __future__ import annotations

import ast
import sqlite3
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from canny import budget
from canny._call import CallSpec
from canny.ledger import migrations, open_ledger

FIXTURES = Path(__file__).parent / "fixtures"
#: The migrations a ledger written before issue 13 holds, in the order it applied them.
OLD_NAMES = [
    "ledger.0001_attempts",
    "ledger.0002_attempt_tags",
    "ledger.0003_attempts_readable_view",
    "ledger.0004_inflight",
    "budget.0001_tables",
]
#: When the fixture's reservation was taken (its lease ends 600 s later).
THEN = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _restore(dump: str, tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((FIXTURES / dump).read_text())
    conn.close()
    return path


def _stamps(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name, applied_at FROM schema_migrations").fetchall()
    conn.close()
    return {str(name): str(at) for name, at in rows}


def test_budget_tables_are_a_ledger_migration() -> None:
    """The ledger registers budget.0001_tables itself, after its own migrations, under its old name."""
    names = [m.name for m in migrations.registered()]
    assert names[: len(OLD_NAMES)] == OLD_NAMES


def test_a_ledger_with_budgets_from_before_opens_without_rerunning_anything(tmp_path: Path) -> None:
    """A ledger whose budget tables the old import-time migration made opens as it was: no
    migration runs again, its budgets, counters and held reservation work as before."""
    path = _restore("ledger_pre13_budgets.sql", tmp_path)
    before = _stamps(path)
    assert set(before) == set(OLD_NAMES)
    ledger = open_ledger(path)
    try:
        after = _stamps(path)
        assert {n: after[n] for n in OLD_NAMES} == {n: before[n] for n in OLD_NAMES}  # none re-run
        assert set(after) == {m.name for m in migrations.registered()}
        assert [b.name for b in budget.stored_budgets(ledger)] == ["day", "month[project=acme]"]
        day, month = budget.budget_status(ledger, now=THEN)
        assert (day.spent, day.reserved) == (Decimal("0.25"), Decimal("0.010086"))
        assert (month.spent, month.reserved) == (Decimal("0.25"), Decimal("0.010086"))
        assert budget.reconcile(ledger, now=THEN + timedelta(seconds=601)) == 1  # the old lease ends
        spec = CallSpec(
            model="claude-sonnet-5-5",
            params={"model": "claude-sonnet-5-5", "max_tokens": 1000, "messages": [{"role": "user", "content": "hi"}]},
            stream=True,
            project="acme",
        )
        later = THEN + timedelta(seconds=700)
        guard = budget.BudgetGuard(ledger, budget.stored_budgets(ledger), lease=60, clock=lambda: later)
        held = guard.reserve(spec)
        assert isinstance(held, budget.LedgerReservation)
        held.settle(Decimal("0.5"))
        day, month = budget.budget_status(ledger, now=later)
        assert (day.spent, day.reserved, month.spent, month.reserved) == (
            Decimal("0.75"),
            Decimal(0),
            Decimal("0.75"),
            Decimal(0),
        )
    finally:
        ledger.close()


def test_a_ledger_that_never_had_budgets_gains_their_tables_on_open(tmp_path: Path) -> None:
    """A ledger written by a process that never imported canny.budget gets the budget tables
    when it opens (only that migration runs), and budgets can be stored in it at once."""
    path = _restore("ledger_pre13_plain.sql", tmp_path)
    before = _stamps(path)
    assert list(before) == OLD_NAMES[:-1]
    ledger = open_ledger(path)
    try:
        after = _stamps(path)
        assert {n: after[n] for n in before} == before
        assert "budget.0001_tables" in after
        budget.set_budget(ledger, period="day", limit="2")
        assert [b.limit for b in budget.stored_budgets(ledger)] == [Decimal(2)]
    finally:
        ledger.close()


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_budget_imports_neither_the_client_layer_nor_private_modules_of_others() -> None:
    """canny.budget (every module, lazy imports included) imports no client-layer module and
    no private module of another package: the layers lean one way."""
    package = Path(budget.__file__).parent
    forbidden = {"canny._call", "canny._client_base", "canny.client", "canny.session", "canny._meter", "canny.meter"}
    for module in sorted(package.glob("*.py")):
        names = {n for n in _imports(module) if n.startswith("canny")}
        assert not names & forbidden, (module.name, names & forbidden)
        private = {
            n for n in names if not n.startswith("canny.budget") and any(p.startswith("_") for p in n.split("."))
        }
        assert not private, (module.name, private)
