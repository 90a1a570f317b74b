"""Rollups (migration ledger.0007_rollups): figures summed from them equal figures summed
from the rows, on SQLite and PostgreSQL, for random ledgers, zones, windows and filters."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canny import reports
from canny.ledger import GROUP_BYS, OUTCOMES, AttemptRecord, ReportFilter, ReportQuery, migrations, open_ledger
from canny.ledger.rollups import HOUR_US, plan, window_cost
from canny.units import to_us
from canny.usage import Usage
from tests import test_ledger_contract

#: The fixture of the ledger contract tests: a fresh SQLite file, or a fresh PostgreSQL schema.
target = test_ledger_contract.target
T0 = datetime(2026, 3, 27, 20, 0, tzinfo=UTC)  # two days before the EU summer-time change
ZONES: list[tzinfo] = [UTC, ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]
MODELS = ["claude-sonnet-4-6", "claude-haiku-4-5", "mystery"]


def _records(seed: int, calls: int) -> list[AttemptRecord]:
    """Calls with retries across hours, days and a month end; tags that change between
    attempts, `offline` calls, projects, sessions, unpriced models."""
    rng = random.Random(seed)
    out: list[AttemptRecord] = []
    for c in range(calls):
        start = T0 + timedelta(minutes=rng.randrange(0, 6 * 24 * 60), microseconds=rng.randrange(10**6))
        tags = rng.choice([(), ("a",), ("a", "b"), ("b",), ("offline",), ("a", "a")])
        for attempt in range(1, rng.choice([1, 1, 2, 4]) + 1):
            model = rng.choice(MODELS)
            out.append(
                AttemptRecord(
                    call_id=f"c{seed}-{c}",
                    attempt=attempt,
                    started_at=start,
                    ended_at=start + timedelta(seconds=1),
                    model=model,
                    outcome=rng.choice(OUTCOMES),
                    session_id=rng.choice([None, "s1", "s2"]),
                    usage=Usage(
                        input=rng.randrange(0, 3000),
                        cache_write_5m=rng.randrange(0, 300),
                        cache_write_1h=rng.randrange(0, 300),
                        cache_read=rng.randrange(0, 5000),
                        output=rng.randrange(0, 700),
                    ),
                    cost_usd=None if model == "mystery" else Decimal(rng.randrange(0, 10**9)).scaleb(-12),
                    tags=tags if rng.random() < 0.8 else ("c",),
                    project=rng.choice([None, "alpha", "beta"]),
                    key_fingerprint=rng.choice([None, "k1"]),
                )
            )
            start += timedelta(minutes=rng.choice([0, 1, 45, 200, 1500]))
    return out


def _expected(records: list[AttemptRecord], by: Any, then: Any, zone: tzinfo, flt: ReportFilter, lo: Any, hi: Any):  # type: ignore[no-untyped-def]
    chosen = [r for r in records if (lo is None or r.started_at >= lo) and (hi is None or r.started_at < hi)]
    rows, total = reports.summarize([r for r in chosen if flt.keeps(r)], by, tz=zone, then=then)
    return {(r.group, r.subgroup): r for r in rows}, total


def _got(ledger: Any, by: Any, then: Any, zone: tzinfo, flt: ReportFilter, lo: Any, hi: Any):  # type: ignore[no-untyped-def]
    groups, total = ledger.aggregate(ReportQuery(by, since=lo, until=hi, tz=zone, then=then, filters=flt))
    rows = {(g.key, g.subkey): reports.ReportRow.from_totals(g) for g in groups}
    return rows, reports.ReportRow.from_totals(total)


@pytest.fixture
def ledger(target: str) -> Iterator[Any]:
    opened = open_ledger(target)
    yield opened
    opened.close()


FILTERS = st.sampled_from(
    [
        ReportFilter(),
        ReportFilter(offline=False),
        ReportFilter(models=("claude-haiku-4-5", "mystery")),
        ReportFilter(tags=("a",), outcomes=("ok", "error")),
        ReportFilter(projects=("alpha",), offline=False),
    ]
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10**6),
    zone=st.sampled_from(ZONES),
    flt=FILTERS,
    window=st.sampled_from([(None, None), (30, 3 * 24 * 60 + 17), (24 * 60, 2 * 24 * 60), (61, 95)]),
)
def test_rollup_figures_equal_row_figures(ledger: Any, seed: int, zone: tzinfo, flt: ReportFilter, window: Any) -> None:
    """For random ledgers, every --by (and pairs of keys), zone, window and filter: the sums
    from rollups equal reports.summarize over the same rows."""
    with ledger.transaction() as tx:  # the delete triggers empty the rollups too
        tx.execute("DELETE FROM attempts")
    records = _records(seed, 40)
    ledger.record_many(records)
    lo = None if window[0] is None else T0 + timedelta(minutes=window[0])
    hi = None if window[1] is None else T0 + timedelta(minutes=window[1])
    pairs = [(by, None) for by in GROUP_BYS] + [("month", "model"), ("tag", "day"), ("outcome", "tag")]
    for by, then in pairs:
        want_rows, want_total = _expected(records, by, then, zone, flt, lo, hi)
        got_rows, got_total = _got(ledger, by, then, zone, flt, lo, hi)
        assert got_rows == want_rows, (by, then, zone, flt, window)
        assert got_total == want_total, (by, then, zone, flt, window)


def test_a_lost_row_replaced_by_the_real_one_leaves_exact_rollups(ledger: Any) -> None:
    """Deleting a row (a lost attempt giving way to its real row) takes it out of every rollup."""
    base = _records(3, 1)[0]
    lost = replace(base, outcome="lost", cost_usd=Decimal("0.5"), usage=replace(base.usage, input=9))
    ledger.record(lost)
    ledger.record(replace(base, outcome="ok", cost_usd=Decimal("0.25"), usage=replace(base.usage, input=7)))
    groups, _ = ledger.aggregate(ReportQuery("outcome"))
    assert [(g.key, g.attempts, g.tokens.input, g.cost_usd) for g in groups] == [("ok", 1, 7, Decimal("0.25"))]
    with ledger.transaction(write=False) as tx:
        assert tx.execute("SELECT count(*) FROM rollup_hours WHERE outcome = 'lost'")[0][0] == 0
        assert tx.execute("SELECT sum(attempts) FROM rollup_totals")[0][0] == 1


def test_the_migration_back_fills_rollups_from_existing_rows(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger written before the rollups existed gets them filled, equal to its rows."""
    older = [m for m in migrations.registered() if m.name != "ledger.0007_rollups"]
    records = _records(11, 60)
    with monkeypatch.context() as patch:
        patch.setattr(migrations, "_REGISTRY", older)
        first: Any = open_ledger(target)
        first.record_many(records)
        first.close()
    opened: Any = open_ledger(target)
    try:
        assert "ledger.0007_rollups" in opened.applied_migrations()
        for by in ("day", "model", "tag"):
            want_rows, want_total = _expected(records, by, None, ZONES[1], ReportFilter(), None, None)
            assert _got(opened, by, None, ZONES[1], ReportFilter(), None, None) == (want_rows, want_total)
    finally:
        opened.close()


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "Asia/Kolkata"])
def test_budget_windows_cost_the_same_from_rollups_as_from_rows(ledger: Any, zone: str) -> None:
    """window_cost (what a budget counter seeds from) equals the rows' sum, for day and month
    windows in whole- and half-hour zones, in every scope."""
    records = _records(5, 80)
    ledger.record_many(records)
    tz = ZoneInfo(zone)
    local = T0.astimezone(tz)
    day = datetime(local.year, local.month, local.day, tzinfo=tz) + timedelta(days=1)
    windows = [(day, day + timedelta(days=1)), (datetime(2026, 3, 1, tzinfo=tz), datetime(2026, 4, 1, tzinfo=tz))]
    windows.append((T0 + timedelta(minutes=7), T0 + timedelta(days=3, minutes=1)))
    for lo, hi in windows:
        for scope in ({}, {"project": "alpha"}, {"tag": "a"}, {"key": "k1"}, {"tag": "b", "project": "beta"}):
            want = sum(
                int(r.cost_usd.scaleb(12))
                for r in records
                if lo <= r.started_at < hi
                and r.cost_usd is not None
                and (not scope.get("project") or r.project == scope["project"])
                and (not scope.get("key") or r.key_fingerprint == scope["key"])
                and (not scope.get("tag") or scope["tag"] in r.tags)
            )
            with ledger.transaction(write=False) as tx:
                assert window_cost(tx, to_us(lo), to_us(hi), **scope) == want, (zone, lo, scope)


def test_a_local_day_report_reads_hours_only_where_a_local_midnight_cuts_a_utc_day() -> None:
    """The plan: partial hours from rows, whole UTC months/days from their rollups (months only
    where the report's periods do not cut them), and in
    Paris the UTC days holding a local midnight (all of them, for --by day) from hours."""
    lo = to_us(datetime(2026, 1, 30, 10, 20, tzinfo=UTC))
    hi = to_us(datetime(2026, 4, 2, 5, 0, 30, tzinfo=UTC))
    utc = plan(lo, hi, UTC, ["month"])
    assert utc.rows == [(lo, lo + 40 * 60 * 10**6), (hi - 30 * 10**6, hi)]
    assert utc.months == [(to_us(datetime(2026, 2, 1, tzinfo=UTC)), to_us(datetime(2026, 4, 1, tzinfo=UTC)))]
    assert utc.hours[0] == (lo + 40 * 60 * 10**6, to_us(datetime(2026, 1, 31, tzinfo=UTC)))
    assert plan(lo, hi, UTC, ["day"]).days[0] == (
        to_us(datetime(2026, 1, 31, tzinfo=UTC)),
        to_us(datetime(2026, 4, 2, tzinfo=UTC)),
    )
    paris = plan(lo, hi, ZoneInfo("Europe/Paris"), ["day"])
    assert paris.days == [] and paris.months == []
    assert sum(b - a for a, b in paris.hours) % HOUR_US == 0
    by_month = plan(lo, hi, ZoneInfo("Europe/Paris"), ["month"])
    day = [to_us(datetime(2026, m, d, tzinfo=UTC)) for m, d in ((2, 1), (2, 28), (3, 1), (3, 31), (4, 1), (4, 2))]
    first_hour = lo + 40 * 60 * 10**6
    assert by_month.hours == [(first_hour, day[0]), (day[1], day[2]), (day[3], day[4]), (day[5], hi - 30 * 10**6)]
    assert by_month.days == [(day[0], day[1]), (day[2], day[3]), (day[4], day[5])]


def test_rollups_are_keyed_by_utc_hour_and_read_in_a_non_utc_zone(tmp_path: Path) -> None:
    """Two attempts an hour apart around Paris midnight land on two local days, from rollups."""
    ledger: Any = open_ledger(tmp_path / "ledger.db")
    try:
        for i, at in enumerate((datetime(2026, 1, 10, 22, 30, tzinfo=UTC), datetime(2026, 1, 10, 23, 30, tzinfo=UTC))):
            ledger.record(
                AttemptRecord(
                    call_id=f"c{i}",
                    attempt=1,
                    started_at=at,
                    ended_at=at,
                    model="m",
                    outcome="ok",
                    cost_usd=Decimal("0.01"),
                )
            )
        groups, _ = ledger.aggregate(ReportQuery("day", tz=ZoneInfo("Europe/Paris")))
        assert [(g.key, g.calls) for g in groups] == [("2026-01-10", 1), ("2026-01-11", 1)]
        groups, _ = ledger.aggregate(ReportQuery("day"))
        assert [(g.key, g.calls) for g in groups] == [("2026-01-10", 2)]
    finally:
        ledger.close()
