"""OpenTelemetry (canny[otel]): a span per call, a child per attempt, GenAI metrics, for
Client, AsyncClient, sessions and canny.meter; in memory and over OTLP/HTTP."""

from __future__ import annotations

import asyncio
import gzip
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam, TextBlockParam
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import canny
from canny import telemetry
from canny.errors import ConfigError
from tests.conftest import CANARY_KEY, MemoryLedger

MODEL = "claude-sonnet-5-5"
#: claude-sonnet-5-5's rates per MTok since 2026-10-07 (prices.toml), written out by hand.
RATES = {"input": Decimal(2), "cache_write_5m": Decimal("2.50"), "cache_read": Decimal("0.10"), "output": Decimal(10)}
RULES = "Rules of the house. " * 60
SYSTEM: list[TextBlockParam] = [{"type": "text", "text": RULES, "cache_control": {"type": "ephemeral"}}]
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello there"}]


class Otel:
    """In-memory span exporter and metric reader that canny reports to."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        telemetry.use(tracer_provider, MeterProvider(metric_readers=[self.reader]))

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def total(self, name: str, **labels: Any) -> Any:
        """The sum (counters) or the sum of recorded values (histograms) over points matching ``labels``."""
        found: Any = 0
        for point in self.points(name):
            if all(point.attributes.get(k) == v for k, v in labels.items()):
                found += point.value if hasattr(point, "value") else point.sum
        return found


@pytest.fixture
def otel(monkeypatch: pytest.MonkeyPatch) -> Iterator[Otel]:
    monkeypatch.setenv("CANNY_OTEL", "1")
    yield Otel()
    telemetry.reset()


def _hand_cost(row: Any) -> Decimal:
    """A row's cost from its disjoint buckets at the rates above, per million tokens."""
    tokens = {
        "input": row.usage.input,
        "cache_write_5m": row.usage.cache_write_5m,
        "cache_read": row.usage.cache_read,
        "output": row.usage.output,
    }
    return sum((Decimal(n) * RATES[b] for b, n in tokens.items()), Decimal(0)) / 1_000_000


def _client(emulator: Any, ledger: MemoryLedger, *plan: str, run: str) -> canny.Client:
    return canny.Client(api_key=CANARY_KEY, base_url=emulator.url_for(*plan, run=run), ledger=ledger, model=MODEL)


def test_client_create_and_stream_give_a_call_span_with_attempt_children_and_cache_tokens(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """Client.create (one retry) then Client.stream (a cache read) give spans, inclusive input tokens and exact cost."""
    with _client(emulator, memory_ledger, "overloaded", "ok", "ok", run=run_id) as client:
        first = client.create("Hello there", system=SYSTEM)
        with client.stream("Hello there", system=SYSTEM) as stream:
            text = "".join(stream)
        second = stream.result
    assert second is not None
    assert text and first.attempts == 2 and second.attempts == 1
    error_row, write_row, read_row = memory_ledger.rows
    assert (error_row.outcome, write_row.outcome, read_row.outcome) == ("error", "ok", "ok")
    assert write_row.usage.cache_write_5m > 0 and write_row.usage.cache_read == 0
    assert read_row.usage.cache_read == write_row.usage.cache_write_5m and read_row.usage.cache_write_5m == 0
    for row in (write_row, read_row):
        assert row.cost_usd == _hand_cost(row)

    spans = otel.finished()
    assert len(spans) == 5
    created, streamed = sorted((s for s in spans if s.parent is None), key=lambda s: s.start_time or 0)
    assert [s.name for s in spans if s.parent and s.parent.span_id == created.context.span_id] == [
        "attempt 1",
        "attempt 2",
    ]
    a = dict(created.attributes or {})
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == a["gen_ai.system"] == "anthropic"
    assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.request.stream"] is False and a["canny.attempts"] == 2 and a["canny.outcome"] == "ok"
    inclusive = write_row.usage.input + write_row.usage.cache_write_5m
    assert a["gen_ai.usage.input_tokens"] == inclusive
    assert a["gen_ai.usage.cache_creation.input_tokens"] == write_row.usage.cache_write_5m
    assert a["gen_ai.usage.cache_read.input_tokens"] == 0
    assert a["gen_ai.usage.output_tokens"] == write_row.usage.output
    assert a["canny.usage.input"] == write_row.usage.input
    assert Decimal(str(a["canny.cost_usd"])) == _hand_cost(write_row)
    assert a["gen_ai.response.finish_reasons"] == ("end_turn",)
    b = dict(streamed.attributes or {})
    assert b["gen_ai.request.stream"] is True
    assert b["gen_ai.usage.cache_read.input_tokens"] == read_row.usage.cache_read
    assert b["gen_ai.usage.input_tokens"] == read_row.usage.input + read_row.usage.cache_read
    assert Decimal(str(b["canny.cost_usd"])) == _hand_cost(read_row)
    failed = next(s for s in spans if s.name == "attempt 1")
    assert dict(failed.attributes or {})["error.type"] == "overloaded_error"
    assert dict(failed.attributes or {})["http.response.status_code"] == 529
    for span in spans:
        assert RULES not in str(span.attributes) and "Hello there" not in str(span.attributes)

    assert otel.total("canny.tokens", **{"canny.token.bucket": "cache_read"}) == read_row.usage.cache_read
    assert otel.total("canny.tokens", **{"canny.token.bucket": "cache_write_5m"}) == write_row.usage.cache_write_5m
    assert otel.total("gen_ai.client.token.usage", **{"gen_ai.token.type": "input"}) == (
        inclusive + read_row.usage.input + read_row.usage.cache_read
    )
    cost = otel.total("canny.cost")
    assert Decimal(str(cost)).quantize(Decimal("1e-12")) == (_hand_cost(write_row) + _hand_cost(read_row))
    assert otel.total("canny.attempts", **{"canny.outcome": "error"}) == 1
    assert otel.total("canny.attempts", **{"canny.outcome": "ok"}) == 2
    assert otel.total("canny.calls", **{"canny.outcome": "ok"}) == 2
    assert sum(p.count for p in otel.points("gen_ai.client.operation.duration")) == 2
    assert sum(p.count for p in otel.points("gen_ai.client.operation.time_to_first_chunk")) == 2


def test_async_client_and_session_calls_are_traced(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """AsyncClient calls, in and out of a session, each give one call span with its session id."""

    async def go() -> None:
        async with canny.AsyncClient(
            api_key=CANARY_KEY, base_url=emulator.url_for(run=run_id), ledger=memory_ledger, model=MODEL
        ) as client:
            await client.create("one")
            async with client.session(max_iterations=3) as session:
                await session.create("two")

    asyncio.run(go())
    plain, in_session = sorted((s for s in otel.finished() if s.parent is None), key=lambda s: s.start_time or 0)
    assert "canny.session_id" not in (plain.attributes or {})
    assert (in_session.attributes or {})["canny.session_id"] == memory_ledger.rows[1].session_id
    for span, row in zip((plain, in_session), memory_ledger.rows, strict=True):
        assert (span.attributes or {})["canny.call_id"] == row.call_id
        assert Decimal(str((span.attributes or {})["canny.cost_usd"])) == _hand_cost(row)
    assert otel.total("canny.calls", **{"canny.outcome": "ok"}) == 2


def test_meter_attempts_are_traced_with_cost_and_tokens(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """canny.meter reports through the same books: a span and metrics per metered HTTP attempt."""
    sdk = anthropic.Anthropic(api_key=CANARY_KEY, base_url=emulator.url_for("overloaded;retry_after_ms=1", run=run_id))
    with sdk:
        message = canny.meter(sdk, ledger=memory_ledger).messages.create(
            model=MODEL, max_tokens=100, system=SYSTEM, messages=HELLO
        )
    error_row, ok_row = memory_ledger.rows
    assert ok_row.usage.cache_write_5m == message.usage.cache_creation_input_tokens
    assert ok_row.usage.cache_write_5m > 0
    spans = otel.finished()
    calls = [s for s in spans if s.parent is None]
    assert len(calls) == 2 and len(spans) == 4
    assert {(s.attributes or {})["canny.call_id"] for s in calls} == {ok_row.call_id}  # the SDK's retry, one call
    ok = next(s for s in calls if (s.attributes or {})["canny.outcome"] == "ok")
    attributes = dict(ok.attributes or {})
    assert attributes["gen_ai.usage.input_tokens"] == message.usage.input_tokens + ok_row.usage.cache_write_5m
    assert attributes["gen_ai.usage.cache_creation.input_tokens"] == ok_row.usage.cache_write_5m
    assert Decimal(str(attributes["canny.cost_usd"])) == _hand_cost(ok_row)
    assert otel.total("canny.attempts", **{"canny.outcome": "error"}) == 1
    assert error_row.outcome == "error"
    assert otel.total("canny.tokens", **{"canny.token.bucket": "output"}) == message.usage.output_tokens


def test_budget_refused_call_is_a_span_and_an_outcome_without_tokens(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, run_id: str
) -> None:
    """A call refused by max_cost gives one span with outcome budget_refused, cost 0 and no token metrics."""
    with _client(emulator, memory_ledger, run=run_id) as client, pytest.raises(canny.errors.BudgetExceeded):
        client.create("hello", max_cost="0.00000001")
    spans = otel.finished()
    [span] = [s for s in spans if s.parent is None]
    assert len(spans) == 2  # the call and its one (unsent) attempt
    attributes = dict(span.attributes or {})
    assert (attributes["canny.outcome"], attributes["error.type"]) == ("budget_refused", "BudgetExceeded")
    assert attributes["canny.cost_usd"] == "0"
    assert otel.points("gen_ai.client.token.usage") == []
    assert otel.total("canny.calls", **{"canny.outcome": "budget_refused"}) == 1


def test_content_is_exported_only_when_asked(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> None:
    """Prompt and answer text go on the span only with OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true."""
    with _client(emulator, memory_ledger, run=run_id) as client:
        client.create("a private question")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    otel.__init__()  # type: ignore[misc]  # picks the switch up, as a new process would
    with _client(emulator, memory_ledger, run=run_id) as client:
        result = client.create("a private question")
    [span] = [s for s in otel.finished() if s.parent is None]
    attributes = dict(span.attributes or {})
    assert "a private question" in str(attributes["gen_ai.input.messages"])
    assert result.text in str(attributes["gen_ai.output.messages"])


def test_otel_is_off_by_default_and_canny_otel_zero_beats_the_profile(
    otel: Otel, emulator: Any, memory_ledger: MemoryLedger, monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    """Without CANNY_OTEL nothing is traced; otel = true in config traces; CANNY_OTEL=0 turns it off again."""
    monkeypatch.delenv("CANNY_OTEL")
    assert canny.Client(api_key=CANARY_KEY, ledger=False).books.telemetry is None
    (clean_env / "config.toml").write_text("otel = true\n")
    assert canny.Client(api_key=CANARY_KEY, ledger=False).books.telemetry is not None
    monkeypatch.setenv("CANNY_OTEL", "0")
    assert canny.Client(api_key=CANARY_KEY, ledger=False).books.telemetry is None
    monkeypatch.setenv("CANNY_OTEL", "maybe")
    with pytest.raises(ConfigError, match="CANNY_OTEL"):
        canny.Client(api_key=CANARY_KEY, ledger=False)


# -- OTLP/HTTP ------------------------------------------------------------------------------


class Receiver(BaseHTTPRequestHandler):
    """A collector on 127.0.0.1: keeps the decoded OTLP/HTTP protobuf export requests."""

    traces: list[Any]
    metrics: list[Any]
    lock = threading.Lock()

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        assert self.headers.get("content-type") == "application/x-protobuf"
        with self.lock:
            if self.path == "/v1/traces":
                self.traces.append(ExportTraceServiceRequest.FromString(body))
            elif self.path == "/v1/metrics":
                self.metrics.append(ExportMetricsServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet
        return None


def _value(any_value: Any) -> Any:
    return getattr(any_value, any_value.WhichOneof("value"))


def test_metered_run_exports_spans_and_metrics_over_otlp_http(
    emulator: Any, memory_ledger: MemoryLedger, monkeypatch: pytest.MonkeyPatch, run_id: str
) -> None:
    """With CANNY_OTEL=1 and an OTLP endpoint, a collector gets the spans and metrics, cache tokens and cost right."""
    Receiver.traces, Receiver.metrics = [], []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("CANNY_OTEL", "1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-bot")
    telemetry.reset()
    try:
        trace_provider, meter_provider = telemetry._own_providers()
        telemetry.use(trace_provider, meter_provider)
        sdk = anthropic.Anthropic(api_key=CANARY_KEY, base_url=emulator.url_for(run=run_id))
        metered = canny.meter(sdk, ledger=memory_ledger)
        for _ in range(2):
            metered.messages.create(model=MODEL, max_tokens=50, system=SYSTEM, messages=HELLO)
        sdk.close()
        telemetry.flush(trace_provider, meter_provider)  # what runs at exit
    finally:
        telemetry.reset()
        server.shutdown()
        server.server_close()
    write_row, read_row = memory_ledger.rows
    assert read_row.usage.cache_read == write_row.usage.cache_write_5m > 0

    spans = [
        span
        for request in Receiver.traces
        for rs in request.resource_spans
        for ss in rs.scope_spans
        if ss.scope.name == "canny"
        for span in ss.spans
    ]
    services = {
        _value(a.value) for r in Receiver.traces for rs in r.resource_spans for a in rs.resource.attributes
        if a.key == "service.name"
    }  # fmt: skip
    assert services == {"billing-bot"}
    calls = sorted((s for s in spans if not s.parent_span_id), key=lambda s: s.start_time_unix_nano)
    assert len(calls) == 2 and len(spans) == 4
    for span, row in zip(calls, (write_row, read_row), strict=True):
        attributes = {a.key: _value(a.value) for a in span.attributes}
        assert attributes["gen_ai.usage.cache_read.input_tokens"] == row.usage.cache_read
        assert attributes["gen_ai.usage.cache_creation.input_tokens"] == row.usage.cache_write_5m
        assert attributes["gen_ai.usage.input_tokens"] == row.usage.input + row.usage.cache_write_5m + (
            row.usage.cache_read
        )
        assert Decimal(attributes["canny.cost_usd"]) == _hand_cost(row) == row.cost_usd
        assert [c.name for c in spans if c.parent_span_id == span.span_id] == ["attempt 1"]

    sums: dict[tuple[str, str], float] = {}
    for request in Receiver.metrics:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    for point in getattr(metric, kind).data_points:
                        labels = {a.key: _value(a.value) for a in point.attributes}
                        key = (metric.name, str(labels.get("canny.token.bucket") or labels.get("gen_ai.token.type")))
                        value = point.sum if kind == "histogram" else point.as_double or point.as_int
                        sums[key] = value  # cumulative: the last export holds the totals
    assert sums[("canny.tokens", "cache_read")] == read_row.usage.cache_read
    assert sums[("canny.tokens", "cache_write_5m")] == write_row.usage.cache_write_5m
    inclusive = sum(r.usage.input + r.usage.cache_write_5m + r.usage.cache_read for r in (write_row, read_row))
    assert sums[("gen_ai.client.token.usage", "input")] == inclusive
    expected = _hand_cost(write_row) + _hand_cost(read_row)
    assert Decimal(str(sums[("canny.cost", "None")])).quantize(Decimal("1e-12")) == expected


def test_a_client_with_otel_off_never_imports_opentelemetry() -> None:
    """Building a client and its books with otel off imports neither opentelemetry nor canny.telemetry."""
    import json
    import subprocess
    import sys

    script = (
        "import sys, json, canny\n"
        f"canny.Client(api_key={CANARY_KEY!r}, ledger=False).books\n"
        "print(json.dumps(sorted(m for m in sys.modules if 'telemetry' in m)))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
