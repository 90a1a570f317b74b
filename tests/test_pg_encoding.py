"""A PostgreSQL ledger works whatever the server encoding: here a SQL_ASCII database (what
``initdb`` in the C locale makes), where psycopg would hand back bytes without canny's
UTF8 client encoding. Needs ``CANNY_TEST_POSTGRES_ASCII_DSN`` (``scripts/pg-test-server.sh``)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.ledger import OUTCOMES, ReportQuery, open_ledger
from tests.conftest import CANARY_KEY
from tests.test_ledger_contract import full_record, make

# Read at import: the autouse clean_env fixture removes CANNY_* variables from each test.
ASCII_DSN = os.environ.get("CANNY_TEST_POSTGRES_ASCII_DSN", "")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ASCII_DSN, reason="CANNY_TEST_POSTGRES_ASCII_DSN is not set (scripts/pg-test-server.sh)"),
]

PROJECT = "projet-été"
TAG = "日本"


@pytest.fixture
def url() -> Iterator[str]:
    """A fresh schema in the SQL_ASCII database, as a ledger URL."""
    import psycopg

    schema = "a_" + uuid.uuid4().hex[:12]
    with psycopg.connect(ASCII_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    yield ASCII_DSN + ("&" if "?" in ASCII_DSN else "?") + f"options=-csearch_path%3D{schema}"
    with psycopg.connect(ASCII_DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def test_the_database_really_is_sql_ascii() -> None:
    """The test database uses the SQL_ASCII server encoding (psycopg alone returns bytes)."""
    import psycopg

    with psycopg.connect(ASCII_DSN, autocommit=True) as conn:
        assert conn.execute("SHOW server_encoding").fetchone() == (b"SQL_ASCII",)
        assert conn.execute("SELECT 'a'::text").fetchone() == (b"a",)


def test_rows_round_trip_exactly_with_unicode(url: str) -> None:
    """Every outcome's row, unicode project/tags/text and exact Decimal, comes back as text."""
    ledger = open_ledger(url)
    try:
        written = [full_record(outcome, n) for n, outcome in enumerate(OUTCOMES, start=1)]
        for record in written:
            ledger.record(record)
        assert list(ledger.records()) == written
        groups, total = ledger.aggregate(ReportQuery("tag"))  # type: ignore[attr-defined]
        assert {g.key for g in groups} == {"ünïcode", "tag with space", "日本"}
        projects, _ = ledger.aggregate(ReportQuery("project"))  # type: ignore[attr-defined]
        assert [(g.key, g.attempts) for g in projects] == [("projet-été", len(OUTCOMES))]
        assert total.cost_usd == Decimal("0.0101") * len(OUTCOMES)  # each rounded to 10^-12 USD
        assert total.failures == 5  # interrupted, error, budget_refused, cancelled, lost
    finally:
        ledger.close()


def test_attempts_in_flight_and_lost_rows_work(url: str) -> None:
    """An attempt in flight with unicode tags round-trips and sweeps into a lost row."""
    ledger = open_ledger(url)
    try:
        start = datetime(2026, 3, 1, tzinfo=UTC)
        pending = make("fly", 1, started_at=start, ended_at=start, outcome="lost", project=PROJECT, tags=(TAG,))
        ledger.begin_attempt(pending, lease_until=start + timedelta(minutes=1))  # type: ignore[attr-defined]
        assert [r.tags for r in ledger.in_flight()] == [(TAG,)]  # type: ignore[attr-defined]
        assert ledger.sweep_lost(everything=True) == 1  # type: ignore[attr-defined]
        assert [(r.outcome, r.project, r.tags) for r in ledger.records()] == [("lost", PROJECT, (TAG,))]
    finally:
        ledger.close()


def test_ask_budget_report_and_export_work(url: str, tmp_path: Path) -> None:
    """ask, budget set/show, report and export all work on a SQL_ASCII ledger, unicode included."""
    env = {"CANNY_LEDGER": url, "ANTHROPIC_API_KEY": CANARY_KEY}
    set_ = cli("budget", "set", "--day", "5", "--project", PROJECT, env=env)
    assert set_.exit_code == 0, set_.stderr
    ask = cli("ask", "--offline", "--project", PROJECT, "--tag", TAG, "Bonjour — 你好", env=env)
    assert ask.exit_code == 0, ask.stderr
    assert "unexpected" not in ask.stderr

    show = cli("budget", "show", "--json", env=env)
    assert show.exit_code == 0, show.stderr
    (line,) = json.loads(show.stdout)["budgets"]
    assert PROJECT in json.dumps(line, ensure_ascii=False)
    assert Decimal(line["spent"]) > 0 and Decimal(line["reserved"]) == 0

    report = cli("report", "--by", "tag", "--json", env=env)
    assert report.exit_code == 0, report.stderr
    assert TAG in report.stdout

    out = tmp_path / "export.jsonl"
    export = cli("ledger", "export", "-o", str(out), env=env)
    assert export.exit_code == 0, export.stderr
    (row,) = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert (row["project"], TAG in row["tags"], row["outcome"]) == (PROJECT, True, "ok")
    assert CANARY_KEY not in ask.stdout + ask.stderr + report.stdout + out.read_text(encoding="utf-8")
