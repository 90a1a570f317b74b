"""Edges of the journal and group commit (canny.ledger.journal, canny.ledger.writer): a batch
that fails keeps its rows in the journal, a ledger never closed lets go of its files, a new
journal file never replaces an older one, leftovers of a crash are cleaned up."""

from __future__ import annotations

import gc
import os
import time
import warnings
import weakref
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from canny.errors import CannyWarning
from canny.ledger import journal, open_for_calls, writer
from canny.ledger._sql import _row_params
from tests.test_journal import _journals, _ok_ids, _record, held, journals_of, where  # noqa: F401  (the fixtures)


def _fail_first_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's first batch raises (a bug, or a spool that raises); later ones write."""
    original = writer.Writer._write_rows
    failed: list[bool] = []

    def write_rows(self: writer.Writer, ops: list[writer.Op]) -> None:
        if not failed:
            failed.append(True)
            raise RuntimeError("the first batch fails")
        original(self, ops)

    monkeypatch.setattr(writer.Writer, "_write_rows", write_rows)


def test_a_batch_that_failed_keeps_its_rows_in_the_journal_through_later_batches(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of a failed batch stay journaled while later batches are written, and the next open writes them."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    _fail_first_batch(monkeypatch)
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    ledger.record(_record("a_0"))
    ledger.record(_record("a_1"))
    with pytest.warns(CannyWarning, match="not written"):
        ledger.flush()  # type: ignore[attr-defined]
    for name in ("b_0", "c_0", "d_0"):  # each its own batch after the failure
        ledger.record(_record(name))
        ledger.flush()  # type: ignore[attr-defined]
    ledger.close()
    assert _ok_ids(str(path)) == ["b_0", "c_0", "d_0"]
    open_for_calls(path).close()
    assert _ok_ids(str(path)) == ["a_0", "a_1", "b_0", "c_0", "d_0"]
    assert _journals(clean_env) == []


def test_a_part_of_the_queue_that_failed_keeps_its_rows_in_the_journal(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed batch of MAX_BATCH rows, the rest of the queue written after it: the failed rows come back."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    monkeypatch.setattr(writer, "MAX_BATCH", 2)
    _fail_first_batch(monkeypatch)
    path = clean_env / "ledger.db"
    ledger = open_for_calls(path)
    for n in range(3):
        ledger.record(_record(f"call_{n}"))
    with pytest.warns(CannyWarning, match="not written"):
        ledger.flush()  # type: ignore[attr-defined]
    ledger.close()
    assert _ok_ids(str(path)) == ["call_2"]
    open_for_calls(path).close()
    assert _ok_ids(str(path)) == ["call_0", "call_1", "call_2"]


def _journal_descriptors(directory: Path) -> list[str]:
    """The files in ``directory`` this process has open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_ledger_never_closed_lets_go_of_its_journal_files(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unclosed ledger, once collected, holds no descriptor (nor lock) on its journal and leaves no file."""
    monkeypatch.setattr(writer, "IDLE_SECONDS", 0.01)
    path = clean_env / "ledger.db"
    for round_ in range(3):
        ledger = open_for_calls(path)
        ledger.record(_record(f"call_{round_}"))
        ledger.flush()  # type: ignore[attr-defined]
        thread = ledger._writer._thread  # type: ignore[attr-defined]
        assert thread is not None
        thread.join(timeout=30)  # the writer ends when idle
        collected = weakref.ref(ledger)
        del ledger, thread
        gc.collect()
        assert collected() is None
    assert _journal_descriptors(clean_env / "journal") == []
    assert _journals(clean_env) == []
    assert _ok_ids(str(path)) == ["call_0", "call_1", "call_2"]


def test_a_new_journal_file_never_replaces_an_older_one(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A journal whose name an earlier process (same pid, reused) left behind does not wipe that file's rows."""
    monkeypatch.setattr(writer, "GROUP_SECONDS", 3600.0)
    path = clean_env / "ledger.db"
    directory, prefix = journals_of(clean_env, str(path))
    mine = journal.Journal(str(path))
    left = [directory / f"{prefix}.{os.getpid()}.{id(mine):x}.{which}.jsonl" for which in (0, 1)]
    for which, file in enumerate(left):
        file.write_bytes(journal.encode(_row_params(_record(f"earlier_{which}"))))
    assert mine.append(journal.encode(_row_params(_record("mine"))))
    mine.switch()
    assert mine.append(journal.encode(_row_params(_record("mine_too"))))
    assert [file.read_bytes().count(b"earlier_") for file in left] == [1, 1]
    mine.close()


def test_a_stale_hidden_journal_file_is_removed_and_a_fresh_one_kept(clean_env: Path) -> None:
    """A `.new` file a crash left between create and rename goes at the next open; one just made stays."""
    path = clean_env / "ledger.db"
    directory, prefix = journals_of(clean_env, str(path))
    stale = directory / f".{prefix}.999999.dead.0.jsonl.new"
    fresh = directory / f".{prefix}.999998.live.0.jsonl.new"
    other = directory / ".someone-else.0.jsonl.new"
    for file in (stale, fresh, other):
        file.write_bytes(b"")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    os.utime(other, (an_hour_ago, an_hour_ago))
    open_for_calls(path).close()
    assert (stale.exists(), fresh.exists(), other.exists()) == (False, True, True)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_journals_to_its_own_files_and_the_parent_keeps_its_locks(
    clean_env: Path,
    held: Any,  # noqa: F811
) -> None:
    """After fork the parent's journal stays locked (the child cannot recover it) and the child journals apart."""
    path, ledger = clean_env / "ledger.db", held
    ledger.record(_record("parent"))
    parents = set(_journals(clean_env))
    assert len(parents) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python 3.12+)
        pid = os.fork()
    if pid == 0:
        code = 0
        try:
            taken: list[Any] = []

            class Other:
                location = str(path)

                def record_all(self, records: list[Any], *, in_flight: Any = ()) -> None:
                    taken.extend(records)

            assert journal.recover(Other()) == 0 and taken == []  # the parent's lock holds
            ledger.record(_record("child"))
            mine = set(_journals(clean_env)) - parents
            assert len(mine) == 1 and f".{os.getpid()}." in mine.pop()
            assert b"child" not in b"".join((clean_env / "journal" / name).read_bytes() for name in parents)
        except BaseException as exc:
            import traceback

            (clean_env / "child-error.txt").write_text("".join(traceback.format_exception(exc)))
            code = 1
        os._exit(code)  # killed, in effect: its row stays in its own journal
    _, status = os.waitpid(pid, 0)
    error = clean_env / "child-error.txt"
    assert os.waitstatus_to_exitcode(status) == 0, error.read_text() if error.exists() else ""
    assert journal.recover(ledger) == 1  # the child's file; the parent's own is locked
    ledger.flush()
    ledger.close()
    assert _ok_ids(str(path)) == ["child", "parent"]
    assert _journals(clean_env) == []


def test_a_journaled_row_the_ledger_refuses_is_set_aside_and_the_ledger_still_opens(
    clean_env: Path,
    where: str,  # noqa: F811
) -> None:
    """A dead journal's row the ledger cannot hold (a lone surrogate): the others written, it goes to .bad."""
    directory, prefix = journals_of(clean_env, where)
    dead = directory / f"{prefix}.999999.dead.0.jsonl"
    refused = journal.encode(_row_params(_record("refused", prompt_text="half a pair \ud800")))
    dead.write_bytes(
        journal.encode(_row_params(_record("good_0"))) + refused + journal.encode(_row_params(_record("good_1")))
    )
    with pytest.warns(CannyWarning, match="refused line"):
        open_for_calls(where).close()
    assert _ok_ids(where) == ["good_0", "good_1"]
    assert not dead.exists()
    assert dead.with_suffix(".bad").read_bytes() == refused


def test_back_to_back_calls_under_a_budget_are_not_held_to_the_last_calls_worst_case(
    emulator: Any, run_id: str, clean_env: Path
) -> None:
    """Settles wait for their group: a call that would not fit first waits for them, so none is lowered or refused."""
    from contextlib import closing

    from canny import budget
    from canny.client import Client
    from canny.ledger import open_ledger
    from tests.conftest import CANARY_KEY

    path = clean_env / "ledger.db"
    with closing(open_ledger(path)) as db:
        budget.set_budget(db, period="day", limit="0.25")  # one call's worst case (max_tokens=10000) fits, not two
    url = emulator.url_for(*["ok"] * 4, run=run_id)
    with Client(api_key=CANARY_KEY, base_url=url, model="claude-sonnet-4-6", ledger=path) as client:
        results = [client.create("hello", max_tokens=10000) for _ in range(4)]  # a lowered max_tokens would warn
    assert [r.outcome for r in results] == ["ok"] * 4
    assert sum(r.cost or 0 for r in results) < Decimal("0.01")
