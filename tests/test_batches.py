"""Message Batches on the books: one ledger row per result at half the standard price, the
whole batch's worst case reserved at submit and settled per result, rows written once."""

from __future__ import annotations

import io
import json
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny import budget, errors
from canny.cli import main
from canny.client import Client
from canny.config import default_ledger
from canny.ledger import AttemptRecord, open_ledger
from tests.conftest import CANARY_KEY

SONNET = "claude-sonnet-5-5"  # $2 in, $10 out per MTok; batch: $1 and $5
MTOK = Decimal(1_000_000)
PROMPTS = ["one", "two two", "three three three", "four four four four"]
MAX_TOKENS = 200


def _requests(prompts: list[str] = PROMPTS, max_tokens: int = MAX_TOKENS) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"r{i}", "params": {"max_tokens": max_tokens, "messages": [{"role": "user", "content": p}]}}
        for i, p in enumerate(prompts)
    ]


def _worst_case(prompt: str, max_tokens: int = MAX_TOKENS) -> Decimal:
    """The hand-computed worst case of one request at batch prices: the local input estimate
    (UTF-8 bytes of the prompt JSON / 3, + 16) at $1/MTok, max_tokens at $5/MTok."""
    prompt_json = json.dumps(
        {"messages": [{"role": "user", "content": prompt}], "system": None, "tools": None}, sort_keys=True
    )
    estimate = math.ceil(len(prompt_json.encode()) / 3) + 16
    return (estimate * Decimal(1) + max_tokens * Decimal(5)) / MTOK


def _standard(row: AttemptRecord) -> Decimal:
    """The same usage at the standard sonnet rates."""
    return (row.usage.input * Decimal(2) + row.usage.output * Decimal(10)) / MTOK


def _client(url: str, ledger: Path, **kwargs: Any) -> Client:
    return Client(api_key=CANARY_KEY, base_url=url, ledger=ledger, model="sonnet", **kwargs)


def _rows(path: Path) -> list[AttemptRecord]:
    ledger = open_ledger(path)
    try:
        return list(ledger.records())
    finally:
        ledger.close()


def _status(path: Path) -> budget.BudgetStatus:
    ledger = open_ledger(path)
    try:
        (line,) = budget.budget_status(ledger)
        return line
    finally:
        ledger.close()


def test_each_result_is_one_row_at_half_the_standard_price(emulator: Any, tmp_path: Path) -> None:
    """N requests give N rows, batch = true, each costing exactly half the standard price of its usage."""
    path = tmp_path / "ledger.db"
    with _client(emulator.url_for("ok"), path) as client:
        created = client.batches.create(_requests())
        ended = client.batches.wait(created.id, poll=0.01)
        assert ended.ended and ended.request_counts["succeeded"] == len(PROMPTS)
        results = list(client.batches.results(created.id))
    rows = _rows(path)
    assert len(rows) == len(results) == len(PROMPTS)
    assert sorted(r.custom_id for r in results) == ["r0", "r1", "r2", "r3"]
    for row in rows:
        assert row.batch and row.model == SONNET and row.outcome == "ok" and not row.streamed
        assert row.usage.output > 0
        assert row.cost_usd == (row.usage.input * Decimal(1) + row.usage.output * Decimal(5)) / MTOK
        assert row.cost_usd * 2 == _standard(row)
    by_call = {r.call_id: r for r in rows}
    for item in results:
        assert item.recorded and item.call.cost == by_call[item.call.call_id].cost_usd
        assert item.to_json()["canny"]["cost_usd"] == str(item.call.cost)


def test_reading_results_twice_writes_each_row_once(emulator: Any, tmp_path: Path) -> None:
    """A second results run (same client or a new process) writes no row and settles nothing again."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    budget.set_budget(ledger, period="day", limit="5")
    ledger.close()
    with _client(emulator.url_for("ok"), path) as client:
        created = client.batches.create(_requests())
        first = list(client.batches.results(created.id))
        again = list(client.batches.results(created.id))
    with _client(emulator.url_for("ok"), path) as other:
        third = list(other.batches.results(created.id))
    rows = _rows(path)
    assert len(rows) == len(PROMPTS)
    assert [i.recorded for i in first] == [True] * 4 and [i.recorded for i in again + third] == [False] * 8
    assert [i.call.cost for i in third] == [i.call.cost for i in first]
    status = _status(path)
    assert status.reserved == 0
    assert status.spent == sum(r.cost_usd for r in rows if r.cost_usd is not None)


def test_submit_reserves_the_whole_worst_case_and_each_result_settles(emulator: Any, tmp_path: Path) -> None:
    """At submit the budget holds the sum of the requests' worst cases at batch prices; each result
    replaces its share by its cost, also from another process (the state file)."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    budget.set_budget(ledger, period="day", limit="1")
    ledger.close()
    with _client(emulator.url_for("ok"), path) as client:
        created = client.batches.create(_requests())
    assert _status(path).reserved == sum(_worst_case(p) for p in PROMPTS)
    assert _status(path).spent == 0
    with _client(emulator.url_for("ok"), path) as later:  # a new client: nothing in memory
        results = later.batches.results(created.id)
        first = next(results)
        status = _status(path)
        (gone,) = [p for i, p in enumerate(PROMPTS) if f"r{i}" == first.custom_id]
        assert status.spent == first.call.cost
        assert status.reserved == sum(_worst_case(p) for p in PROMPTS) - _worst_case(gone)
        rest = list(results)
    status = _status(path)
    assert status.reserved == 0
    assert status.spent == sum(i.call.cost or 0 for i in [first, *rest])


def test_a_batch_that_does_not_fit_is_refused_whole_before_sending(emulator: Any, tmp_path: Path, run_id: str) -> None:
    """A budget that holds three of four worst cases refuses the batch: nothing sent, nothing held."""
    path = tmp_path / "ledger.db"
    limit = sum(_worst_case(p) for p in PROMPTS[:3]) + _worst_case(PROMPTS[3]) / 2
    ledger = open_ledger(path)
    budget.set_budget(ledger, period="day", limit=limit)
    ledger.close()
    with _client(emulator.url_for("ok", run=run_id), path) as client, pytest.raises(errors.BudgetExceeded) as info:
        client.batches.create(_requests())
    assert "batch" in str(info.value)
    assert emulator.requests(run=run_id) == []
    assert [r.outcome for r in _rows(path)] == ["budget_refused"]
    status = _status(path)
    assert status.reserved == 0 and status.spent == 0


def test_an_errored_request_is_an_error_row_that_costs_nothing(emulator: Any, tmp_path: Path) -> None:
    """A request the API rejects inside the batch is one `error` row at $0; its hold is released."""
    path = tmp_path / "ledger.db"
    ledger = open_ledger(path)
    budget.set_budget(ledger, period="day", limit="1")
    ledger.close()
    with _client(emulator.url_for("ok"), path) as client:
        created = client.batches.create(_requests(["fine", "broken [[fault=overloaded]]"]))
        results = {i.custom_id: i for i in client.batches.results(created.id)}
    assert results["r1"].type == "errored" and results["r1"].call.outcome == "error"
    rows = {r.outcome: r for r in _rows(path)}
    assert rows["error"].cost_usd == 0 and rows["error"].error_type == "overloaded_error"
    assert _status(path).spent == rows["ok"].cost_usd and _status(path).reserved == 0


def test_results_before_the_end_say_so(emulator: Any, tmp_path: Path) -> None:
    """results() of a batch still in progress is a clean RequestRejected naming --wait."""
    from canny.batches import Batch, _not_ended

    batch = Batch("msgbatch_x", "in_progress", {"processing": 2, "succeeded": 1}, {})
    error = _not_ended(batch)
    assert isinstance(error, errors.RequestRejected)
    assert "2 of 3 requests processing" in str(error) and "--wait" in (error.hint or "")


def _cli(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(main, ["batch", *args], input=stdin)


def test_cli_offline_submit_status_results_across_commands(tmp_path: Path) -> None:
    """Offline: submit prints the id alone; later commands read the batch kept in CANNY_HOME;
    results go to -o as JSONL, one ledger row each, and a second run writes no row."""
    source = tmp_path / "requests.jsonl"
    source.write_text("\n".join(json.dumps(r) for r in _requests()) + "\n", encoding="utf-8")
    submitted = _cli("submit", "--offline", str(source))
    assert submitted.exit_code == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    assert submitted.stdout == batch_id + "\n" and batch_id.startswith("msgbatch_")
    status = _cli("status", "--offline", batch_id)
    assert status.exit_code == 0 and "ended (4 succeeded)" in status.stdout
    out = tmp_path / "out.jsonl"
    fetched = _cli("results", "--offline", batch_id, "--wait", "-o", str(out))
    assert fetched.exit_code == 0, fetched.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(line["custom_id"] for line in lines) == ["r0", "r1", "r2", "r3"]
    assert all(line["canny"]["outcome"] == "ok" and line["canny"]["recorded"] for line in lines)
    assert "[4 results · 4 recorded now" in fetched.stderr
    assert "━" not in fetched.stderr  # no progress bar when stderr is not a terminal
    again = _cli("results", "--offline", batch_id)
    assert again.exit_code == 0 and len(again.stdout.splitlines()) == 4 and "0 recorded now" in again.stderr
    rows = _rows(Path(default_ledger()))
    assert len(rows) == 4 and all(r.batch and "offline" in r.tags for r in rows)
    assert sum(r.cost_usd or 0 for r in rows) == sum(Decimal(line["canny"]["cost_usd"]) for line in lines)


def test_cli_errors_are_one_line(emulator: Any, tmp_path: Path) -> None:
    """A bad JSONL line is a usage error naming the line; an unknown offline batch is exit 8."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "a", "params": {}}\nnot json\n', encoding="utf-8")
    result = _cli("submit", "--offline", str(bad))
    assert result.exit_code == 2 and "bad.jsonl:2: not JSON" in result.stderr
    unknown = _cli("status", "--offline", "msgbatch_01nothere")
    assert unknown.exit_code == 8 and "kept in this CANNY_HOME only" in unknown.stderr
    assert "Traceback" not in result.stderr + unknown.stderr


def test_cli_against_a_server_with_the_key_never_shown(emulator: Any, tmp_path: Path) -> None:
    """--base-url: submit, results --wait and cancel talk to the server; the key never appears."""
    env = {"ANTHROPIC_API_KEY": CANARY_KEY}
    url = emulator.url_for("ok")
    source = "\n".join(json.dumps(r) for r in _requests(PROMPTS[:2]))
    submitted = CliRunner().invoke(main, ["batch", "submit", "--base-url", url, "-"], input=source, env=env)
    assert submitted.exit_code == 0, submitted.stderr
    batch_id = submitted.stdout.strip()
    fetched = CliRunner().invoke(main, ["batch", "results", "--base-url", url, batch_id, "--wait"], env=env)
    assert fetched.exit_code == 0 and len(fetched.stdout.splitlines()) == 2
    cancelled = CliRunner().invoke(main, ["batch", "cancel", "--base-url", url, batch_id], env=env)
    assert cancelled.exit_code == 0 and f"{batch_id} ended" in cancelled.stdout
    for result in (submitted, fetched, cancelled):
        assert CANARY_KEY not in result.stdout + result.stderr


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_draws_on_a_terminal_and_erases_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the bar counts results on one line of stderr, then clears that line."""
    from canny.cli._batch import _progress

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with _progress(4) as advance:
        advance()
        advance()
    text = terminal.getvalue()
    assert "\rresults 2/4 [###############---------------]" in text
    assert text.endswith("\r\033[K")


class _Held:
    """A caller's own budget: it records what each reservation was settled with."""

    def __init__(self) -> None:
        self.settled: list[Decimal | None] = []
        self.max_tokens = 0

    def reserve(self, spec: Any) -> _Held:
        self.max_tokens = spec.max_tokens
        return self

    def settle(self, cost: Decimal | None) -> None:
        self.settled.append(cost)

    def release(self) -> None:
        self.settled.append(None)

    def renew(self, seconds: float | None = None) -> bool:
        return True


def test_a_callers_own_budget_is_settled_once_per_result_without_a_ledger(emulator: Any) -> None:
    """With ledger=False and budget=, each result settles its reservation once, by its cost."""
    held = _Held()
    with Client(api_key=CANARY_KEY, base_url=emulator.url_for("ok"), ledger=False, budget=held) as client:
        created = client.batches.create(_requests(PROMPTS[:2]))
        results = list(client.batches.results(created.id))
        list(client.batches.results(created.id))  # read again: nothing more to settle in this process
    assert held.settled == [item.call.cost for item in results]
    assert all(not item.recorded for item in results)
