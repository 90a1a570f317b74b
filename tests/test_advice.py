"""What-if and right-size (canny.advice, `canny report --what-if/--right-size`): every figure
checked against ledgers written by hand, the dollars computed here from the price table's
per-MTok rates."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.advice import right_size, right_size_report, what_if, what_if_report
from canny.cli import main
from canny.ledger import AttemptRecord, open_ledger
from canny.pricing import default_table, rates
from canny.usage import Usage

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
MTOK = Decimal(1_000_000)


def rec(n: int, *, model: str = SONNET, at: datetime = T0, **fields: Any) -> AttemptRecord:
    """One attempt of its own call, ended a second after it started."""
    values: dict[str, Any] = {"outcome": "ok", "stop_reason": "end_turn", "key_fingerprint": "k1"}
    values.update(fields)
    return AttemptRecord(
        call_id=f"c{n}", attempt=1, started_at=at, ended_at=at + timedelta(seconds=1), model=model, **values
    )


def dollars(model: str, *, inp: int = 0, w5: int = 0, read: int = 0, out: int = 0, factor: str = "1") -> Decimal:
    """Tokens times the table's per-MTok rates of ``model`` on T0's day, by hand."""
    r = rates(model, at=T0)
    assert r is not None
    plain = inp * r.input + w5 * r.cache_write_5m + read * r.cache_read + out * r.output
    return plain / MTOK * Decimal(factor)


def stored(tmp_path: Path, rows: list[AttemptRecord]) -> Path:
    path = tmp_path / "ledger.db"
    with closing(open_ledger(path)) as ledger:
        for row in rows:
            ledger.record(row)
    return path


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    """Two Sonnet attempts (one tagged), one Haiku attempt, each priced when it ran."""
    a = dollars(SONNET, inp=1200, read=3000, out=400)
    b = dollars(SONNET, inp=5000, w5=1000, out=900)
    c = dollars(HAIKU, inp=800, out=100)
    return stored(
        tmp_path,
        [
            rec(1, usage=Usage(input=1200, cache_read=3000, output=400), cost_usd=a),
            rec(2, usage=Usage(input=5000, cache_write_5m=1000, output=900), cost_usd=b),
            rec(3, model=HAIKU, usage=Usage(input=800, output=100), cost_usd=c),
        ],
    )


def test_what_if_model_prices_the_same_tokens_on_the_other_model(two_models: Path) -> None:
    """--what-if MODEL: each row's own tokens at the other model's rates, beside what was paid."""
    ledger = open_ledger(two_models)
    try:
        report = what_if_report(ledger, HAIKU, by="model")
    finally:
        ledger.close()
    assert report.scenario == HAIKU
    paid_sonnet = dollars(SONNET, inp=1200, read=3000, out=400) + dollars(SONNET, inp=5000, w5=1000, out=900)
    on_haiku = dollars(HAIKU, inp=1200, read=3000, out=400) + dollars(HAIKU, inp=5000, w5=1000, out=900)
    haiku_row = dollars(HAIKU, inp=800, out=100)
    sonnet, haiku = report.rows
    assert (sonnet.group, sonnet.attempts, sonnet.cost_usd, sonnet.what_if_cost_usd) == (
        SONNET,
        2,
        paid_sonnet,
        on_haiku,
    )
    assert sonnet.saving_usd == paid_sonnet - on_haiku == Decimal("0.0285")
    assert (haiku.group, haiku.cost_usd, haiku.what_if_cost_usd, haiku.saving_usd) == (
        HAIKU,
        haiku_row,
        haiku_row,
        Decimal(0),
    )
    total = report.total
    assert (total.cost_usd, total.what_if_cost_usd) == (paid_sonnet + haiku_row, on_haiku + haiku_row)
    assert (total.unpriced, total.what_if_unpriced, total.compared) == (0, 0, 3)
    assert any("same token counts" in line for line in report.assumptions)


def test_what_if_batch_prices_every_bucket_at_the_batch_modifier(two_models: Path) -> None:
    """--what-if batch: every bucket at the table's batch modifier (0.5) of the day's rates."""
    assert default_table().batch == Decimal("0.5")
    ledger = open_ledger(two_models)
    try:
        report = what_if_report(ledger, "batch", by="day")
    finally:
        ledger.close()
    paid = (
        dollars(SONNET, inp=1200, read=3000, out=400)
        + dollars(SONNET, inp=5000, w5=1000, out=900)
        + dollars(HAIKU, inp=800, out=100)
    )
    batch = (
        dollars(SONNET, inp=1200, read=3000, out=400, factor="0.5")
        + dollars(SONNET, inp=5000, w5=1000, out=900, factor="0.5")
        + dollars(HAIKU, inp=800, out=100, factor="0.5")
    )
    (day,) = report.rows
    assert (day.group, day.cost_usd, day.what_if_cost_usd, day.saving_usd) == ("2026-11-20", paid, batch, paid - batch)
    assert report.total.what_if_cost_usd == batch == Decimal("0.022025")
    assert any("24 hours" in line for line in report.assumptions)


def _prefixes(*entries: tuple[str, str, int]) -> str:
    return " ".join(f"{kind}:{digest}:{tokens}" for kind, digest, tokens in entries)


def cache_rows() -> list[AttemptRecord]:
    """Five Sonnet attempts sharing a 2,000-token system prompt (estimated), one with a
    prefix nobody else sent, and one written before canny kept prefix hashes."""
    system = ("s", "aaaaaaaaaaaaaaaa", 2000)
    return [
        rec(1, at=T0, usage=Usage(input=2500, output=100), prefix_hashes=_prefixes(system, ("m1", "b1", 2400))),
        rec(2, at=T0 + timedelta(minutes=1), usage=Usage(input=2500, output=100), prefix_hashes=_prefixes(system)),
        # Six minutes after the last use: the entry expired, so this one writes again.
        rec(3, at=T0 + timedelta(minutes=7), usage=Usage(input=2600, output=50), prefix_hashes=_prefixes(system)),
        # A prefix no other attempt sent: nothing to cache.
        rec(
            4,
            at=T0 + timedelta(minutes=8),
            usage=Usage(input=1500, output=10),
            prefix_hashes="s:cccccccccccccccc:1400",
        ),
        # Another API key: its own cache, and its prefix is sent once there.
        rec(
            5,
            at=T0 + timedelta(minutes=8),
            usage=Usage(input=2500),
            prefix_hashes=_prefixes(system),
            key_fingerprint="k2",
        ),
        rec(6, at=T0 + timedelta(minutes=9), usage=Usage(input=2500, output=100)),  # an old row: unknown
    ]


def priced(rows: list[AttemptRecord]) -> list[AttemptRecord]:
    return [replace(r, cost_usd=dollars(SONNET, inp=r.usage.input, out=r.usage.output)) for r in rows]


def test_what_if_cache_writes_on_first_use_and_reads_within_the_ttl() -> None:
    """--what-if cache: first use writes the repeated prefix, later uses within 5 minutes read it; old rows unknown."""
    rows = priced(cache_rows())
    report = what_if(rows, "cache", by="model")
    expected = [
        dollars(SONNET, inp=500, w5=2000, out=100),  # writes the shared system prompt
        dollars(SONNET, inp=500, read=2000, out=100),  # reads it a minute later
        dollars(SONNET, inp=600, w5=2000, out=50),  # expired: writes it again
        dollars(SONNET, inp=1500, out=10),  # its prefix is not repeated: as it ran
        dollars(SONNET, inp=2500),  # another key: not repeated under that key
    ]
    paid = sum((r.cost_usd for r in rows if r.cost_usd is not None), Decimal(0))
    total = report.total
    assert total.what_if_cost_usd == sum(expected, Decimal(0))
    assert (total.attempts, total.what_if_unpriced, total.what_if_unknown, total.compared) == (6, 1, 1, 5)
    assert total.cost_usd == paid
    assert total.saving_usd == sum((r.cost_usd for r in rows[:5] if r.cost_usd), Decimal(0)) - sum(expected)
    assert any("recorded before canny kept prefix hashes" in line for line in report.assumptions)


def test_right_size_lists_the_repeated_prefix_with_its_saving() -> None:
    """--right-size: the repeated prefix, its uses, writes, reads and the saving of caching it."""
    rows = priced(cache_rows())
    report = right_size(rows)
    (prefix,) = report.prefixes
    assert (prefix.model, prefix.label, prefix.hash, prefix.tokens) == (SONNET, "system", "aaaaaaaaaaaaaaaa", 2000)
    # Four attempts sent it; the three under key k1 cache it (the one under k2 has its own cache).
    assert (prefix.uses, prefix.breakpoints, prefix.writes, prefix.reads) == (4, 3, 2, 1)
    paid = sum((r.cost_usd for r in rows[:3] if r.cost_usd), Decimal(0))
    cached = (
        dollars(SONNET, inp=500, w5=2000, out=100)
        + dollars(SONNET, inp=500, read=2000, out=100)
        + dollars(SONNET, inp=600, w5=2000, out=50)
    )
    assert prefix.saving_usd == report.saving_usd == paid - cached == Decimal("0.0024")
    assert report.prefixes_unknown == 1


def test_unpriced_rows_stay_unpriced_never_zero() -> None:
    """An unknown model is unpriced paid and in the scenario (None, counted), never $0."""
    rows = [
        rec(1, model="mystery-model", usage=Usage(input=1000, output=10), cost_usd=None),
        rec(2, usage=Usage(input=1000, output=10), cost_usd=dollars(SONNET, inp=1000, out=10)),
    ]
    batch = what_if(rows, "batch", by="model")
    mystery = next(r for r in batch.rows if r.group == "mystery-model")
    assert (mystery.cost_usd, mystery.unpriced, mystery.what_if_cost_usd, mystery.what_if_unpriced) == (
        None,
        1,
        None,
        1,
    )
    assert (mystery.saving_usd, mystery.compared, mystery.what_if_unknown) == (None, 0, 0)
    assert batch.total.what_if_cost_usd == dollars(SONNET, inp=1000, out=10, factor="0.5")
    # On a priced model the same tokens have a price, though nothing was paid for them.
    moved = what_if(rows, SONNET, by="model")
    assert moved.total.what_if_cost_usd == 2 * dollars(SONNET, inp=1000, out=10)
    assert (moved.total.unpriced, moved.total.compared) == (1, 1)


def test_right_size_max_tokens_percentiles_share_and_suggestion() -> None:
    """Nearest-rank p50/p95/p99/max of output, share stopped at max_tokens, suggested max_tokens."""
    outputs = [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200, 1300, 1400, 1500, 1600, 1700, 1800, 1900]
    rows = [
        rec(i, usage=Usage(output=out), max_tokens=4096, tags=("chat",), at=T0 + timedelta(seconds=i))
        for i, out in enumerate(outputs)
    ]
    rows.append(
        rec(
            50,
            usage=Usage(output=4096),
            max_tokens=4096,
            outcome="max_tokens",
            stop_reason="max_tokens",
            tags=("chat",),
        )
    )
    rows.append(rec(51, usage=Usage(output=0), outcome="error", tags=("chat",)))  # not an answer
    rows.append(rec(52, usage=Usage(output=30), tags=("chat", "eval")))  # an old row: max_tokens unknown
    report = right_size(rows)
    chat, evals = report.rows
    answers = sorted([*outputs, 4096, 30])  # 21 answers
    assert (chat.model, chat.tag, chat.answers) == (SONNET, "chat", 21)
    # nearest rank: the ceil(p/100 * 21)-th smallest: 11th, 20th, 21st.
    assert (chat.output_p50, chat.output_p95, chat.output_p99, chat.output_max) == (
        answers[10],
        answers[19],
        answers[20],
        4096,
    )
    assert (chat.output_p50, chat.output_p95) == (1000, 1900)
    assert (chat.max_tokens_min, chat.max_tokens_max, chat.max_tokens_unknown) == (4096, 4096, 1)
    assert chat.stopped_at_max_tokens == 1
    assert chat.stopped_share == Decimal(1) / Decimal(21)
    assert chat.suggested_max_tokens == 1920  # the longest natural end, 1,900, up to a multiple of 64
    assert (evals.tag, evals.answers, evals.max_tokens_max, evals.max_tokens_unknown) == ("eval", 1, None, 1)
    assert evals.suggested_max_tokens == 64


def test_suggestion_never_exceeds_what_was_asked_and_is_none_without_natural_ends() -> None:
    """The suggestion is capped at the max_tokens asked, and absent when every answer was cut."""
    capped = right_size([rec(1, usage=Usage(output=1000), max_tokens=1000)]).rows[0]
    assert capped.suggested_max_tokens == 1000
    cut = right_size([rec(1, usage=Usage(output=50), max_tokens=50, outcome="max_tokens")]).rows[0]
    assert (cut.suggested_max_tokens, cut.stopped_share) == (None, Decimal(1))


def test_rows_from_before_the_migration_are_unknown(tmp_path: Path) -> None:
    """A row written by an older canny (no max_tokens, no prefix hashes) is reported unknown."""
    path = tmp_path / "old.db"
    fixture = Path(__file__).parent / "fixtures" / "ledger_pre13_plain.sql"
    with sqlite3.connect(path) as conn:
        conn.executescript(fixture.read_text())
        conn.execute(
            "INSERT INTO attempts (call_id, attempt, started_at_us, ended_at_us, model, outcome, input_tokens, "
            "output_tokens, cost_usd, cost_pico) VALUES ('old', 1, ?, ?, ?, 'ok', 2000, 300, ?, ?)",
            (1_763_640_000_000_000, 1_763_640_001_000_000, SONNET, "0.0105", 10_500_000_000),
        )
    conn.close()
    ledger = open_ledger(path)
    try:
        (row,) = ledger.records()
        assert (row.max_tokens, row.prefix_hashes) == (None, None)
        sized = right_size_report(ledger)
        cached = what_if_report(ledger, "cache")
    finally:
        ledger.close()
    (size,) = sized.rows
    assert (size.max_tokens_max, size.max_tokens_unknown, size.suggested_max_tokens) == (None, 1, 320)
    assert (sized.prefixes, sized.prefixes_unknown) == ((), 1)
    assert (cached.total.what_if_cost_usd, cached.total.what_if_unknown, cached.total.saving_usd) == (None, 1, None)


def test_cli_what_if_json_has_what_if_cost_per_row_and_total(two_models: Path) -> None:
    """`canny report --what-if batch --json`: what_if_cost_usd on every group and on the total."""
    result = CliRunner().invoke(
        main, ["report", "--what-if", "batch", "--by", "model", "--json", "--ledger", str(two_models)]
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["kind"] for r in rows] == ["group", "group", "total"]
    assert all("what_if_cost_usd" in r and r["what_if"] == "batch" for r in rows)
    assert rows[-1]["what_if_cost_usd"] == "0.022025"
    text = CliRunner().invoke(main, ["report", "--what-if", "batch", "--ledger", str(two_models)])
    assert "What if: batch" in text.output and "$0.0220" in text.output


def test_cli_right_size_json_keys(tmp_path: Path) -> None:
    """`canny report --right-size --json` gives the max_tokens rows and the prefixes with their keys."""
    path = stored(tmp_path, priced(cache_rows()))
    result = CliRunner().invoke(main, ["report", "--right-size", "--json", "--ledger", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (size,) = data["max_tokens"]
    assert set(size) >= {"output_tokens_p50", "output_tokens_p95", "output_tokens_p99", "output_tokens_max"}
    assert (size["stopped_share"], size["suggested_max_tokens"], size["max_tokens_unknown"]) == ("0", 128, 6)
    (prefix,) = data["prefixes"]
    assert (prefix["hash"], prefix["reads"], prefix["saving_usd"]) == ("aaaaaaaaaaaaaaaa", 1, "0.0024")
    assert (data["prefixes_unknown"], data["saving_usd"]) == (1, "0.0024")


def test_cli_rejects_an_unknown_model_and_clashing_flags(two_models: Path) -> None:
    """A model not in the price table, or --what-if with --csv, is one line and exit 2."""
    runner = CliRunner()
    bad = runner.invoke(main, ["report", "--what-if", "no-such-model", "--ledger", str(two_models)])
    assert bad.exit_code == 2 and "not a model in the price table" in bad.output
    clash = runner.invoke(main, ["report", "--what-if", "cache", "--csv", "--ledger", str(two_models)])
    assert clash.exit_code == 2 and "does not go with --csv" in clash.output
    both = runner.invoke(main, ["report", "--what-if", "cache", "--right-size", "--ledger", str(two_models)])
    assert both.exit_code == 2 and "choose one" in both.output
