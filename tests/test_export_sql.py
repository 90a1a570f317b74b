"""``canny ledger export`` built by the database (:mod:`canny.ledger._export_sql`) writes
exactly the bytes of the reference path (each :class:`AttemptRecord` read back and encoded
in Python), on SQLite and PostgreSQL, for random rows."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canny import reports
from canny.ledger import OUTCOMES, AttemptRecord
from canny.usage import Usage
from tests.test_ledger_contract import ledger, target  # noqa: F401  (the fixtures, both backends)

_ids = itertools.count()


class _RecordsOnly:
    """The same ledger seen only through ``records()``: export goes through AttemptRecord."""

    location = "records-only"

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def record(self, record: AttemptRecord) -> None:
        self.inner.record(record)

    def records(self, *, since: datetime | None = None, until: datetime | None = None) -> Iterator[AttemptRecord]:
        return iter(self.inner.records(since=since, until=until))

    def close(self) -> None:
        return None


def _both(source: Any, fmt: str, **kwargs: Any) -> tuple[str, str]:
    """(the database-built export, the reference export) of ``source``."""
    built = "".join(reports.export_text(source, fmt, **kwargs))
    reference = "".join(reports.export_text(_RecordsOnly(source), fmt, **kwargs))
    return built, reference


def _text(nul: bool) -> st.SearchStrategy[str]:
    """Any text (quotes, commas, newlines, control characters, emoji); NUL only where the
    backend stores it (PostgreSQL text cannot hold it)."""
    return st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="" if nul else "\x00"), max_size=12)


def _records(nul: bool) -> st.SearchStrategy[AttemptRecord]:
    text = _text(nul)
    maybe = st.none() | text
    moment = st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(2199, 12, 31), timezones=st.just(UTC))
    whole_second = moment.map(lambda m: m.replace(microsecond=0))
    count = st.integers(min_value=0, max_value=2**40)
    cost = st.none() | st.integers(0, 15).flatmap(lambda p: st.decimals(min_value=0, max_value=10**6, places=p))
    return st.builds(
        lambda started, ended_after, first, attempt, tail: AttemptRecord(
            call_id=f"call-{next(_ids)}",
            attempt=attempt,
            started_at=started,
            ended_at=started + timedelta(microseconds=ended_after),
            first_token_at=first,
            **tail,
        ),
        moment | whole_second,
        st.integers(min_value=0, max_value=10**8),
        st.none() | moment,
        st.integers(min_value=1, max_value=9),
        st.fixed_dictionaries(
            {
                "model": text,
                "outcome": st.sampled_from(OUTCOMES),
                "session_id": maybe,
                "status_code": st.none() | st.integers(min_value=100, max_value=599),
                "error_type": maybe,
                "error_code": maybe,
                "request_id": maybe,
                "stop_reason": maybe,
                "refusal_category": maybe,
                "usage": st.builds(
                    Usage,
                    input=count,
                    cache_write_5m=count,
                    cache_read=count,
                    output=count,
                    web_search_requests=st.integers(min_value=0, max_value=99),
                ),
                "cost_usd": cost,
                "price_version": maybe,
                "batch": st.booleans(),
                "inference_geo": maybe,
                "speed": maybe,
                "streamed": st.booleans(),
                "endpoint": maybe,
                "project": maybe,
                "tags": st.lists(text, max_size=3).map(tuple),
                "key_fingerprint": maybe,
                "prompt_hash": maybe,
                "prompt_text": maybe,
                "response_text": maybe,
                "extra": st.dictionaries(text, text, max_size=3),
                "max_tokens": st.none() | st.integers(min_value=1, max_value=128_000),
                "prefix_hashes": maybe,
            }
        ),
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_sql_built_export_matches_the_record_path_on_edge_rows(ledger: Any, fmt: str) -> None:  # noqa: F811
    """Whole-second and pre-1970 times, '-0' and trailing-zero costs, quotes, commas and
    newlines export byte for byte as the AttemptRecord path writes them."""
    start = datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    for n, (cost, text) in enumerate(
        [(Decimal("-0"), 'say "hi", then\nleave'), (Decimal("1.500"), "tab\there\r\x1f é 😀"), (None, "")]
    ):
        ledger.record(
            AttemptRecord(
                call_id=f"edge-{n}",
                attempt=1,
                started_at=start + timedelta(microseconds=n),
                ended_at=datetime(2026, 11, 24, 9, 30, tzinfo=UTC),
                model="claude-sonnet-4-6",
                outcome="ok",
                cost_usd=cost,
                error_type=text,
                tags=(text, "x"),
                extra={"k": text},
                prompt_text=text,
            )
        )
    for include_text in (False, True):
        built, reference = _both(ledger, fmt, include_text=include_text)
        assert built == reference
    jsonl = "".join(reports.export_text(ledger, "jsonl")).splitlines()
    assert '"started_at": "1969-12-31T23:59:59.999999+00:00"' in jsonl[0]
    assert '"started_at": "1970-01-01T00:00:00+00:00"' in jsonl[1]
    assert '"cost_usd": "0"' in jsonl[0] and '"cost_usd": "1.5"' in jsonl[1] and '"cost_usd": null' in jsonl[2]


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_sql_built_export_matches_the_record_path_on_random_rows(ledger: Any, data: st.DataObject) -> None:  # noqa: F811
    """Random rows (any text, times from 1901 to 2199, any cost) export identically both
    ways, JSON lines and CSV, with and without stored text, over a time range too."""
    nul = type(ledger).__name__ == "SQLiteLedger"
    for record in data.draw(st.lists(_records(nul), min_size=1, max_size=4)):
        ledger.record(record)
    for fmt, include_text in itertools.product(("jsonl", "csv"), (False, True)):
        built, reference = _both(ledger, fmt, include_text=include_text)
        assert built == reference
    since = datetime(1960, 1, 1, tzinfo=UTC)
    built, reference = _both(ledger, "jsonl", since=since, until=datetime(2100, 1, 1, tzinfo=UTC))
    assert built == reference
