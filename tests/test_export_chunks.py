"""``canny ledger export`` in chunks: SQLite builds each chunk of lines in one statement, all
in one read transaction (:mod:`canny.ledger._export_sqlite`), PostgreSQL streams one COPY;
either way the bytes are those of the AttemptRecord path."""

from __future__ import annotations

import sqlite3
from collections.abc import Generator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canny import reports
from canny.ledger import AttemptRecord, _export_sqlite
from canny.ledger.postgres import copy_text
from canny.ledger.sqlite import SQLiteLedger
from tests.test_export_sql import _both
from tests.test_ledger_contract import ledger, target  # noqa: F401  (the fixtures, both backends)

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def _row(n: int, started: datetime, **extra: Any) -> AttemptRecord:
    return AttemptRecord(
        call_id=f"call-{n}",
        attempt=1,
        started_at=started,
        ended_at=started + timedelta(seconds=2),
        model="claude-sonnet-4-6",
        outcome="ok",
        tags=("a", "b, c") if n % 3 else (),
        error_type='say "hi", then\nleave' if n % 5 == 0 else None,
        prompt_text=f"prompt {n}\r\n",
        **extra,
    )


def _fill(into: Any, count: int) -> None:
    """``count`` rows written newest first (row ids run against time), many sharing a start."""
    for n in reversed(range(count)):
        into.record(_row(n, T0 + timedelta(seconds=n // 4)))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 3 rows (and of 2 with stored text), so a few rows cross many chunk edges."""
    monkeypatch.setattr(_export_sqlite, "CHUNK_ROWS", 3)
    monkeypatch.setattr(_export_sqlite, "TEXT_CHUNK_ROWS", 2)


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_chunk_edges_lose_and_repeat_no_row(ledger: Any, fmt: str) -> None:  # noqa: F811
    """Rows cut into many chunks (edges between rows of one start time, row ids against
    time order) export exactly as the record path does, whole and over a range."""
    _fill(ledger, 41)
    for include_text in (False, True):
        built, reference = _both(ledger, fmt, include_text=include_text)
        assert built == reference
        assert len(built.splitlines()) >= 41
    since, until = T0 + timedelta(seconds=2), T0 + timedelta(seconds=7)
    built, reference = _both(ledger, fmt, since=since, until=until)
    assert built == reference
    assert built.count("call-") == 20


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_empty_export_is_nothing_or_the_header(ledger: Any, fmt: str) -> None:  # noqa: F811
    """No attempts: JSON lines write nothing, CSV its header; a range with no rows likewise."""
    header = "call_id,attempt,started_at,"
    built = b"".join(reports.export_bytes(ledger, fmt))
    assert built == (b"" if fmt == "jsonl" else built.split(b"\n")[0] + b"\n")
    assert fmt == "jsonl" or built.decode().startswith(header)
    ledger.record(_row(1, T0))
    empty = b"".join(reports.export_bytes(ledger, fmt, since=T0 + timedelta(days=1)))
    assert empty == built


@pytest.mark.usefixtures("small_chunks")
def test_rows_written_during_an_export_are_not_in_it(tmp_path: Path) -> None:
    """An export reads one snapshot: rows committed (by another connection) after it began,
    even ones that sort into chunks not yet read, stay out."""
    path = tmp_path / "ledger.db"
    book = SQLiteLedger(path)
    other = SQLiteLedger(path)
    try:
        _fill(book, 30)
        before = b"".join(reports.export_bytes(book, "jsonl"))
        chunks = reports.export_bytes(book, "jsonl")
        first = next(chunks)
        for n in range(100, 110):  # in the middle and at the end of the export order
            other.record(_row(n, T0 + timedelta(seconds=n % 12, microseconds=1)))
        during = first + b"".join(chunks)
        assert during == before
        after = b"".join(reports.export_bytes(book, "jsonl"))
        assert after.count(b"\n") == 40
    finally:
        other.close()
        book.close()


@pytest.mark.usefixtures("small_chunks")
def test_an_export_stopped_early_leaves_the_ledger_usable(tmp_path: Path) -> None:
    """A reader that stops after the first chunk (a closed pipe) ends the export's read
    transaction; the ledger then records and exports as before."""
    book = SQLiteLedger(tmp_path / "ledger.db")
    try:
        _fill(book, 30)
        chunks = reports.export_bytes(book, "jsonl")
        assert isinstance(chunks, Generator)
        assert next(chunks).startswith(b'{"call_id": "call-3"')  # of the four started at T0, written first
        chunks.close()
        book.record(_row(99, T0 - timedelta(days=1)))
        with closing(sqlite3.connect(tmp_path / "ledger.db")) as conn:  # no reader holds the WAL back
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
        assert b"".join(reports.export_bytes(book, "jsonl")).count(b"\n") == 31
    finally:
        book.close()


def _copy_escaped(line: bytes) -> bytes:
    """A text value as PostgreSQL's COPY TO (text format) writes it."""
    table = {b"\\": b"\\\\", b"\b": b"\\b", b"\f": b"\\f", b"\n": b"\\n", b"\r": b"\\r", b"\t": b"\\t", b"\v": b"\\v"}
    return b"".join(table.get(line[i : i + 1], line[i : i + 1]) for i in range(len(line)))


@given(st.lists(st.binary(max_size=20).map(lambda b: b.replace(b"\x00", b"")), max_size=5))
def test_copy_text_undoes_copy_escapes(lines: list[bytes]) -> None:
    """Any lines (backslashes before n, escaped backslashes before n, control bytes) come
    back byte for byte from COPY's text format."""
    copied = b"".join(_copy_escaped(line) + b"\n" for line in lines)
    assert copy_text(copied) == b"".join(line + b"\n" for line in lines)
