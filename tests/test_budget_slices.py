"""Slices of headroom on SQLite: a client's ledger (written behind the call) reserves from
a slice in memory once its budgets are hot, yet a budget changed by another process applies
to the very next call, ``CANNY_LEDGER_WRITES=sync`` keeps one write per reservation, a
forked child never spends its parent's slice, and ``canny budget show`` says what slices hold."""

from __future__ import annotations

import multiprocessing
import warnings
from collections.abc import Iterator
from contextlib import closing
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny import budget
from canny._call import CallSpec
from canny.budget import slices
from canny.cli import main
from canny.config import load_settings
from canny.errors import BudgetExceeded
from canny.ledger import Ledger, open_for_calls, open_ledger
from canny.units import usd_to_pico

MODEL = "claude-sonnet-5-5"


def _spec(n: int, max_tokens: int = 200) -> CallSpec:
    body = {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": f"question {n}"}]}
    return CallSpec(model=MODEL, params=body, stream=False)


def _worst() -> Decimal:
    worst = _spec(0).worst_case()
    assert worst is not None
    return worst


@pytest.fixture
def path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite ledger file with a $10 day budget; slices from the first call, flushed only on demand."""
    monkeypatch.setattr(slices, "HOT_CALLS", 1)
    monkeypatch.setattr(slices, "FLUSH_SECONDS", 3600.0)
    where = tmp_path / "ledger.db"
    with closing(open_ledger(where)) as ledger:
        budget.set_budget(ledger, period="day", limit="10")
    return where


@pytest.fixture
def calls(path: Path) -> Iterator[Ledger]:
    """The ledger as a client opens it (writing behind the call)."""
    ledger = open_for_calls(path)
    yield ledger
    ledger.close()


def _reserve(ledger: Ledger, n: int = 0) -> Any:
    guard = budget.guard_for(ledger, load_settings())
    assert guard is not None
    return guard.reserve(_spec(n))


def _books(path: Path) -> tuple[list[tuple[int, int]], int, int]:
    """(spent, reserved) of every counter, held reservations, held slices."""
    ledger: Any = open_ledger(path)
    try:
        with ledger.transaction(write=False) as tx:
            rows = tx.execute("SELECT spent_pico, reserved_pico FROM budget_counters")
            counters = [(int(s), int(r)) for s, r in rows]
            held = int(tx.execute("SELECT count(*) FROM budget_reservations WHERE state = 'held'")[0][0])
            sliced = int(tx.execute("SELECT count(*) FROM budget_slices WHERE state = 'held'")[0][0])
    finally:
        ledger.close()
    return counters, held, sliced


def test_a_hot_client_ledger_reserves_from_one_slice_without_a_write_per_call(path: Path, calls: Ledger) -> None:
    """Five calls: one slice row, no reservation rows; on close the spend lands and the rest goes back."""
    held = [_reserve(calls, n) for n in range(5)]
    assert all(isinstance(h, slices.SliceReservation) for h in held)
    share = min(usd_to_pico(Decimal(10)) // slices.SHARE, slices.CAP_CALLS * usd_to_pico(_worst()))
    assert _books(path) == ([(0, share)], 0, 1)
    for h in held:
        h.settle(Decimal("0.001"))
    calls.close()
    assert _books(path) == ([(usd_to_pico(Decimal("0.005")), 0)], 0, 0)


def test_a_limit_lowered_by_another_process_applies_to_the_next_call(path: Path, calls: Ledger) -> None:
    """A limit lowered elsewhere to 2 worst cases while a slice is held: it goes back, the next call goes direct."""
    first = _reserve(calls)
    assert isinstance(first, slices.SliceReservation)
    with closing(open_ledger(path)) as other:  # another connection, as another process would
        budget.set_budget(other, period="day", limit=_worst() * 2)
    second = _reserve(calls, 1)
    assert isinstance(second, budget.LedgerReservation)  # 1/16 of what is left no longer covers a call
    [(spent, reserved)], reservations, sliced = _books(path)
    assert (spent, reserved, reservations) == (0, usd_to_pico(_worst()) * 2, 1)  # the two calls, nothing more
    assert sliced == 1  # the first call's slice, down to what that call holds
    with pytest.raises(BudgetExceeded):
        _reserve(calls, 2)
    first.settle(Decimal("0.001"))
    second.settle(Decimal("0.002"))
    calls.close()
    assert _books(path) == ([(usd_to_pico(Decimal("0.003")), 0)], 0, 0)


def test_a_budget_removed_and_set_again_elsewhere_counts_the_next_call_on_its_new_counter(
    path: Path, calls: Ledger
) -> None:
    """The old counter (and its slice) are gone: the next call holds on the new counter, never on a stale slice."""
    _reserve(calls).settle(Decimal("0.004"))
    with closing(open_ledger(path)) as other:
        budget.remove_budgets(other, period="day")
        budget.set_budget(other, period="day", limit="10")
    held = _reserve(calls, 1)
    held.settle(Decimal("0.002"))
    calls.close()
    [(spent, reserved)], reservations, sliced = _books(path)
    assert (spent, reserved, reservations, sliced) == (usd_to_pico(Decimal("0.002")), 0, 0, 0)


def test_sync_writes_keep_one_reservation_row_per_call(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CANNY_LEDGER_WRITES=sync: every reservation is a write of its own, settled in the caller's thread."""
    monkeypatch.setenv("CANNY_LEDGER_WRITES", "sync")
    with closing(open_for_calls(path)) as ledger:
        held = [_reserve(ledger, n) for n in range(3)]
        assert all(isinstance(h, budget.LedgerReservation) for h in held)
        assert _books(path)[1:] == (3, 0)
        for h in held:
            h.settle(Decimal("0.001"))
        assert _books(path) == ([(usd_to_pico(Decimal("0.003")), 0)], 0, 0)


def _reserve_in_child(where: str, out: Any) -> None:
    """Forked child: reserve once on the ledger object the parent opened; say how."""
    ledger = _CHILD_LEDGER[0]
    held = _reserve(ledger, 99)
    out.put((type(held).__name__, len(slices._states)))


_CHILD_LEDGER: list[Ledger] = []


def test_a_forked_child_takes_a_slice_of_its_own(path: Path, calls: Ledger) -> None:
    """The parent's slice stays the parent's: the child starts with no slices and takes a second one."""
    assert isinstance(_reserve(calls), slices.SliceReservation)
    _CHILD_LEDGER[:] = [calls]
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_reserve_in_child, args=(str(path), out))
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a process with threads may deadlock the child:
        # the ledger's writer thread is running, and the fork hooks are what this checks.
        warnings.simplefilter("ignore", DeprecationWarning)
        child.start()
    kind, states = out.get(timeout=60)
    child.join(timeout=30)
    _CHILD_LEDGER.clear()
    assert (kind, states) == ("SliceReservation", 1)  # its own state, made after the fork
    assert _books(path)[2] == 2  # two slice rows: the parent's and the child's


def test_budget_show_says_what_slices_hold(path: Path, calls: Ledger) -> None:
    """`canny budget show` counts slices as reserved and says how many running processes hold."""
    _reserve(calls)
    result = CliRunner().invoke(main, ["budget", "show", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 slice of headroom held by running processes" in result.output
    shown = CliRunner().invoke(main, ["budget", "show", "--ledger", str(path), "--json"])
    assert '"slices": {' in shown.output
