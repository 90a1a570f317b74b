"""Usage buckets and the streamed-usage accumulator."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from canny.usage import IterationUsage, Usage, UsageAccumulator, usage_from_api


def test_buckets_are_disjoint_from_api_usage() -> None:
    """The API's usage maps to five disjoint buckets; input excludes the cache."""
    usage = usage_from_api(
        {
            "input_tokens": 2048,
            "cache_read_input_tokens": 1800,
            "cache_creation_input_tokens": 248,
            "output_tokens": 503,
            "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
        }
    )
    assert usage == Usage(input=2048, cache_write_5m=148, cache_write_1h=100, cache_read=1800, output=503)
    assert usage.prompt_tokens == 2048 + 248 + 1800


def test_writes_without_breakdown_are_five_minute() -> None:
    """A cache write total with no 5m/1h split counts as 5-minute writes."""
    usage = usage_from_api({"input_tokens": 1, "cache_creation_input_tokens": 500, "output_tokens": 2})
    assert (usage.cache_write_5m, usage.cache_write_1h) == (500, 0)


def test_server_tools_and_iterations_are_read() -> None:
    """Server-tool counts and per-iteration usage (each with its model) are kept."""
    usage = usage_from_api(
        {
            "input_tokens": 10,
            "output_tokens": 5,
            "server_tool_use": {"web_search_requests": 3},
            "iterations": [
                {"type": "message", "model": "claude-opus-5-5", "input_tokens": 7, "output_tokens": 2},
                {"type": "fallback_message", "model": "claude-sonnet-5-5", "input_tokens": 3, "output_tokens": 3},
            ],
        }
    )
    assert usage.web_search_requests == 3
    assert [(it.model, it.usage.input, it.usage.output) for it in usage.iterations] == [
        ("claude-opus-5-5", 7, 2),
        ("claude-sonnet-5-5", 3, 3),
    ]


def test_totals_are_the_buckets_without_iterations() -> None:
    """Usage.totals keeps every bucket and drops the iterations (what a ledger row keeps)."""
    plain = Usage(input=10, cache_read=5, output=3, web_search_requests=1)
    assert plain.totals is plain
    split = replace(plain, iterations=(IterationUsage(model="m", usage=plain),))
    assert split.totals == plain
    assert split.totals.iterations == ()


def test_addition_sums_every_bucket() -> None:
    """Adding usages adds each bucket and concatenates iterations."""
    a = Usage(input=1, cache_write_5m=2, cache_write_1h=3, cache_read=4, output=5, web_search_requests=1)
    b = Usage(input=10, cache_write_5m=20, cache_write_1h=30, cache_read=40, output=50)
    assert a + b == Usage(
        input=11, cache_write_5m=22, cache_write_1h=33, cache_read=44, output=55, web_search_requests=1
    )


def test_deltas_are_cumulative_and_replace() -> None:
    """message_delta usage replaces (never adds to) what message_start said."""
    acc = UsageAccumulator()
    acc.feed(
        {
            "type": "message_start",
            "message": {
                "usage": {
                    "input_tokens": 2679,
                    "cache_read_input_tokens": 0,
                    "cache_creation_input_tokens": 100,
                    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100},
                    "output_tokens": 1,
                }
            },
        }
    )
    acc.feed({"type": "message_delta", "usage": {"output_tokens": 40}})
    acc.feed(
        {
            "type": "message_delta",
            "usage": {"output_tokens": 510, "input_tokens": 10682, "server_tool_use": {"web_search_requests": 1}},
        }
    )
    usage = acc.usage
    assert usage.input == 10682
    assert usage.output == 510
    assert usage.cache_write_1h == 100
    assert usage.cache_write_5m == 0
    assert usage.web_search_requests == 1


def test_later_write_total_keeps_the_one_hour_part() -> None:
    """When a delta changes the write total, the 1h part stays and the rest is 5m."""
    acc = UsageAccumulator()
    acc.start(
        {
            "input_tokens": 5,
            "cache_creation_input_tokens": 100,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 100},
            "output_tokens": 1,
        }
    )
    acc.delta({"output_tokens": 9, "cache_creation_input_tokens": 160})
    assert (acc.usage.cache_write_5m, acc.usage.cache_write_1h) == (60, 100)


def test_none_fields_in_delta_do_not_erase() -> None:
    """A delta field that is null does not wipe the value from message_start."""
    acc = UsageAccumulator()
    acc.start({"input_tokens": 25, "cache_read_input_tokens": 7, "output_tokens": 1})
    acc.delta({"output_tokens": 12, "input_tokens": None, "cache_read_input_tokens": None})
    assert (acc.usage.input, acc.usage.cache_read, acc.usage.output) == (25, 7, 12)


def test_sdk_usage_objects_are_accepted() -> None:
    """An anthropic.types.Usage converts exactly like the equivalent dict."""
    from anthropic.types import Usage as SDKUsage

    sdk = SDKUsage.model_validate(
        {
            "input_tokens": 3,
            "output_tokens": 4,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 6,
            "cache_creation": {"ephemeral_5m_input_tokens": 2, "ephemeral_1h_input_tokens": 4},
        }
    )
    assert usage_from_api(sdk) == Usage(input=3, output=4, cache_read=5, cache_write_5m=2, cache_write_1h=4)


def test_buckets_table_is_what_records_columns_and_rates_are_made_of(tmp_path: Path) -> None:
    """usage.BUCKETS agrees with Usage, a record's row fields, the ledger's SQL columns, report rows and price rates."""
    from dataclasses import fields

    from canny.ledger import ROW_FIELDS, AttemptRecord, GroupTotals, open_ledger
    from canny.ledger._sql import COLUMNS
    from canny.pricing import Rates
    from canny.pricing.table import RATED, RateSet
    from canny.reports import REPORT_FIELDS, ReportRow
    from canny.usage import BUCKETS, TOKEN_BUCKETS

    columns = [b.column for b in BUCKETS]
    assert [f.name for f in fields(Usage) if f.name != "iterations"] == [b.name for b in BUCKETS]
    record_fields = [f.name for f in fields(AttemptRecord)]
    assert not set(columns) & set(record_fields)  # the buckets live in record.usage alone
    start = ROW_FIELDS.index(columns[0])
    assert ROW_FIELDS[start : start + len(columns)] == tuple(columns)
    assert ROW_FIELDS[:start] + ROW_FIELDS[start + len(columns) :] == tuple(n for n in record_fields if n != "usage")
    assert COLUMNS[COLUMNS.index(columns[0]) :][: len(columns)] == tuple(columns)
    token_columns = [b.column for b in TOKEN_BUCKETS]
    assert [n for n in REPORT_FIELDS if n.endswith("_tokens")] == token_columns
    for row in (ReportRow, GroupTotals):
        names = [f.name for f in fields(row)]
        assert not [n for n in names if n.endswith("_tokens")]  # summed in row.tokens
        assert fields(row)[names.index("tokens")].type in (Usage, "Usage")
    assert list(RATED) == [f.name for f in fields(RateSet)] == [b.name for b in TOKEN_BUCKETS]
    assert {b.name for b in TOKEN_BUCKETS} <= {f.name for f in fields(Rates)}
    ledger = open_ledger(tmp_path / "l.db")
    try:
        with ledger.transaction(write=False) as tx:  # type: ignore[attr-defined]
            stored = {row[1] for row in tx.execute("PRAGMA table_info(attempts)")}
    finally:
        ledger.close()
    assert set(columns) <= stored


def test_inflight_row_keeps_the_input_side_buckets_of_the_table() -> None:
    """The in-flight row's usage columns are usage.BUCKETS' input-side columns, in table order."""
    from canny.ledger._sql import INFLIGHT_COLUMNS, PROMPT_COLUMNS

    assert PROMPT_COLUMNS == ("input_tokens", "cache_write_5m_tokens", "cache_write_1h_tokens", "cache_read_tokens")
    start = INFLIGHT_COLUMNS.index("input_tokens")
    assert INFLIGHT_COLUMNS[start : start + len(PROMPT_COLUMNS)] == PROMPT_COLUMNS
    assert not {"output_tokens", "web_search_requests"} & set(INFLIGHT_COLUMNS)


def test_usage_round_trips_through_api_shape_and_ledger_columns() -> None:
    """to_api / usage_from_api and usage_columns / usage_from_columns are inverses for every bucket."""
    from canny.usage import BUCKETS, usage_columns, usage_from_columns

    counts: dict[str, Any] = {b.name: i + 1 for i, b in enumerate(BUCKETS)}
    usage = Usage(**counts)
    assert usage_from_api(usage.to_api()) == usage
    assert list(usage_columns(usage)) == [b.column for b in BUCKETS]
    assert usage_from_columns(usage_columns(usage)) == usage
    assert "server_tool_use" not in Usage(input=1).to_api()
