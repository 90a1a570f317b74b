"""OpenTelemetry spans and metrics for canny's calls (the optional ``canny[otel]`` extra).

Off unless ``otel = true`` in the profile or ``CANNY_OTEL=1``. Then every call a
:class:`canny.Client`, :class:`canny.AsyncClient`, a session or :func:`canny.meter` makes
gives one ``chat {model}`` span with one ``attempt N`` child span per HTTP attempt, and the
metrics below, named after the OpenTelemetry GenAI semantic conventions (``gen_ai.*``) plus
canny's own (``canny.*``). The books (:mod:`canny.books`) start one :class:`CallTrace` per
run; the run hands it each attempt's ledger row (:class:`~canny.ledger.AttemptRecord`, the
same figures the ledger keeps, also when the ledger is off) and says when the call ends.

Token buckets. canny's buckets are disjoint (``input`` is the uncached input only); the
conventions' ``gen_ai.usage.input_tokens`` is inclusive: it is ``input + cache_write_5m +
cache_write_1h + cache_read``, with ``gen_ai.usage.cache_creation.input_tokens`` (both
writes) and ``gen_ai.usage.cache_read.input_tokens`` as parts of it. The disjoint figures
are kept as ``canny.usage.<bucket>`` attributes and in the ``canny.tokens`` counter.

Money. A span carries the exact Decimal as a string (``canny.cost_usd``, ``"0.0101"``);
an unpriced attempt has no ``canny.cost_usd`` and ``canny.unpriced = true`` (never 0). The
``canny.cost`` counter adds a double in USD (metrics have no decimal type): fine for
dashboards, while the ledger stays the exact books.

No prompt or answer text is exported unless
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true`` (the switch OpenTelemetry's
GenAI instrumentations use).

The exporters are OTLP/HTTP (protobuf), configured by the standard environment variables
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_SERVICE_NAME``,
``OTEL_METRIC_EXPORT_INTERVAL``, ...). When the application already installed SDK tracer
and meter providers, canny uses those instead; :func:`use` gives it others (tests).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from canny.usage import BUCKETS

if TYPE_CHECKING:
    from opentelemetry.metrics import Counter, Histogram, Meter, MeterProvider
    from opentelemetry.trace import Tracer, TracerProvider

    from canny.ledger import AttemptRecord

__all__ = ["CallTrace", "Telemetry", "get", "reset", "use"]

#: The instrumentation scope canny reports under.
SCOPE = "canny"
_TRUE = frozenset({"1", "true", "yes", "on"})
#: Bucket boundaries for token counts (the conventions' advice for gen_ai.client.token.usage).
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
#: Bucket boundaries in seconds for durations (the conventions' advice).
SECONDS_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def _capture_content(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower() in _TRUE


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)


def usage_attributes(record: AttemptRecord) -> dict[str, Any]:
    """The token attributes of a row: the conventions' inclusive figures and canny's disjoint buckets."""
    usage = record.usage
    writes = usage.cache_write_5m + usage.cache_write_1h
    attributes: dict[str, Any] = {
        "gen_ai.usage.input_tokens": usage.input + writes + usage.cache_read,
        "gen_ai.usage.output_tokens": usage.output,
        "gen_ai.usage.cache_creation.input_tokens": writes,
        "gen_ai.usage.cache_read.input_tokens": usage.cache_read,
    }
    attributes.update({f"canny.usage.{b.name}": getattr(usage, b.name) for b in BUCKETS})
    return attributes


def cost_attributes(cost: Decimal | None) -> dict[str, Any]:
    """``canny.cost_usd`` as the exact decimal string, or ``canny.unpriced`` when unknown."""
    return {"canny.unpriced": True} if cost is None else {"canny.cost_usd": str(cost)}


def _histogram(meter: Meter, name: str, unit: str, description: str, bounds: Sequence[float]) -> Histogram:
    return meter.create_histogram(name, unit=unit, description=description, explicit_bucket_boundaries_advisory=bounds)


class Telemetry:
    """canny's tracer, meter and instruments."""

    def __init__(self, tracer_provider: TracerProvider, meter_provider: MeterProvider) -> None:
        from canny import __version__

        self.tracer: Tracer = tracer_provider.get_tracer(SCOPE, __version__)
        meter: Meter = meter_provider.get_meter(SCOPE, __version__)
        self.token_usage = _histogram(
            meter,
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens per attempt: input (inclusive of cache writes and reads) and output",
            TOKEN_BUCKETS,
        )
        self.duration = _histogram(
            meter,
            "gen_ai.client.operation.duration",
            "s",
            "Duration of a call, all its attempts and retry delays included",
            SECONDS_BUCKETS,
        )
        self.first_chunk = _histogram(
            meter, "gen_ai.client.operation.time_to_first_chunk", "s",
            "Time from sending an attempt to its first text", SECONDS_BUCKETS,
        )  # fmt: skip
        self.tokens: Counter = meter.create_counter(
            "canny.tokens", unit="{token}", description="Tokens and server-tool requests per canny bucket (disjoint)"
        )
        self.cost: Counter = meter.create_counter(
            "canny.cost", unit="USD", description="Cost of priced attempts in US dollars (the ledger has the exact sum)"
        )
        self.attempts: Counter = meter.create_counter(
            "canny.attempts", unit="{attempt}", description="HTTP attempts, by outcome"
        )
        self.calls: Counter = meter.create_counter("canny.calls", unit="{call}", description="Calls, by outcome")
        self.capture_content = _capture_content()

    def trace(self, *, request_model: str, max_tokens: int | None, stream: bool, prompt: str | None) -> CallTrace:
        """A :class:`CallTrace` for one call."""
        return CallTrace(self, request_model=request_model, max_tokens=max_tokens, stream=stream, prompt=prompt)


class CallTrace:
    """One call's attempts, turned into spans and metrics when the call ends."""

    def __init__(
        self, telemetry: Telemetry, *, request_model: str, max_tokens: int | None, stream: bool, prompt: str | None
    ) -> None:
        self.telemetry = telemetry
        self.request_model = request_model
        self.max_tokens = max_tokens
        self.stream = stream
        self.prompt = prompt
        self.rows: list[tuple[AttemptRecord, str | None]] = []
        self.ended = False
        self._lock = threading.Lock()

    def _common(self, record: AttemptRecord) -> dict[str, Any]:
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.system": "anthropic",
            "gen_ai.request.model": self.request_model,
            "gen_ai.response.model": record.model,
        }

    def attempt(self, record: AttemptRecord, answer: str | None = None) -> None:
        """An attempt ended: its row (as the ledger gets it) and, for content capture, its text."""
        with self._lock:
            if not self.ended:
                self.rows.append((record, answer))
        t = self.telemetry
        common = self._common(record)
        outcome = {**common, "canny.outcome": record.outcome}
        t.attempts.add(1, outcome)
        usage = usage_attributes(record)
        if usage["gen_ai.usage.input_tokens"] or usage["gen_ai.usage.output_tokens"]:
            for token_type in ("input", "output"):
                t.token_usage.record(
                    usage[f"gen_ai.usage.{token_type}_tokens"], {**common, "gen_ai.token.type": token_type}
                )
        for bucket in BUCKETS:
            count = usage[f"canny.usage.{bucket.name}"]
            if count:
                t.tokens.add(count, {**common, "canny.token.bucket": bucket.name})
        if record.cost_usd is not None and record.cost_usd:
            t.cost.add(float(record.cost_usd), common)
        if record.first_token_at is not None:
            seconds = (record.first_token_at - record.started_at).total_seconds()
            t.first_chunk.record(max(seconds, 0.0), {**common, "gen_ai.request.stream": self.stream})

    def end(self) -> None:
        """The call ended: its span, its attempts' child spans, its duration and outcome."""
        from opentelemetry import trace

        with self._lock:
            if self.ended or not self.rows:
                self.ended = True
                return
            self.ended = True
            rows = list(self.rows)
        t = self.telemetry
        first, (last, last_answer) = rows[0][0], rows[-1]
        common = self._common(last)
        attributes = {**common, **self._call_attributes(rows)}
        span = t.tracer.start_span(
            f"chat {self.request_model}",
            kind=trace.SpanKind.CLIENT,
            attributes=attributes,
            start_time=_ns(first.started_at),
        )
        if self.prompt is not None and t.capture_content:
            span.set_attribute("gen_ai.input.messages", self.prompt)
            if last_answer is not None:
                span.set_attribute("gen_ai.output.messages", _output_messages(last_answer, last.stop_reason))
        error = _error_type(last)
        if error is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, error))
        context = trace.set_span_in_context(span)
        for record, _ in rows:
            child = t.tracer.start_span(
                f"attempt {record.attempt}",
                context=context,
                kind=trace.SpanKind.CLIENT,
                attributes={**self._common(record), **_attempt_attributes(record)},
                start_time=_ns(record.started_at),
            )
            if _error_type(record) is not None:
                child.set_status(trace.Status(trace.StatusCode.ERROR, _error_type(record)))
            child.end(end_time=_ns(record.ended_at))
        span.end(end_time=_ns(last.ended_at))
        outcome = {**common, "canny.outcome": last.outcome}
        if error is not None:
            outcome["error.type"] = error
        t.calls.add(1, outcome)
        if last.outcome != "budget_refused":
            t.duration.record(max((last.ended_at - first.started_at).total_seconds(), 0.0), outcome)

    def _call_attributes(self, rows: Sequence[tuple[AttemptRecord, str | None]]) -> dict[str, Any]:
        """The call span's own attributes: totals over its attempts, and what the last one says."""
        last = rows[-1][0]
        totals: dict[str, Any] = {}
        cost: Decimal | None = Decimal(0)
        for record, _ in rows:
            for key, value in usage_attributes(record).items():
                totals[key] = totals.get(key, 0) + value
            cost = None if cost is None or record.cost_usd is None else cost + record.cost_usd
        attributes: dict[str, Any] = {
            **totals,
            **cost_attributes(cost),
            "gen_ai.request.stream": self.stream,
            "canny.call_id": last.call_id,
            "canny.attempts": len(rows),
            "canny.outcome": last.outcome,
        }
        if self.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = self.max_tokens
        attributes.update(_row_labels(last))
        if last.stop_reason:
            attributes["gen_ai.response.finish_reasons"] = [last.stop_reason]
        error = _error_type(last)
        if error is not None:
            attributes["error.type"] = error
        return attributes


def _row_labels(record: AttemptRecord) -> dict[str, Any]:
    """Who the call was for: project, tags, session, price version (only those set)."""
    labels: dict[str, Any] = {
        "canny.project": record.project,
        "canny.session_id": record.session_id,
        "canny.price_version": record.price_version,
    }
    if record.tags:
        labels["canny.tags"] = list(record.tags)
    return {k: v for k, v in labels.items() if v is not None}


def _attempt_attributes(record: AttemptRecord) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        **usage_attributes(record),
        **cost_attributes(record.cost_usd),
        "canny.call_id": record.call_id,
        "canny.attempt": record.attempt,
        "canny.outcome": record.outcome,
    }
    if record.status_code is not None:
        attributes["http.response.status_code"] = record.status_code
    if record.request_id:
        attributes["canny.request_id"] = record.request_id
    if record.stop_reason:
        attributes["gen_ai.response.finish_reasons"] = [record.stop_reason]
    if record.refusal_category:
        attributes["canny.refusal_category"] = record.refusal_category
    if record.first_token_at is not None:
        seconds = (record.first_token_at - record.started_at).total_seconds()
        attributes["gen_ai.response.time_to_first_chunk"] = max(seconds, 0.0)
    error = _error_type(record)
    if error is not None:
        attributes["error.type"] = error
    return attributes


def _error_type(record: AttemptRecord) -> str | None:
    """``error.type`` of a row that is not an answer: the API's error type, else the outcome."""
    if record.outcome in ("ok", "max_tokens", "refused"):
        return None
    return record.error_type or record.outcome


def _output_messages(answer: str, stop_reason: str | None) -> str:
    parts = [{"type": "text", "content": answer}]
    return json.dumps([{"role": "assistant", "parts": parts, "finish_reason": stop_reason or ""}], ensure_ascii=False)


# -- the providers ---------------------------------------------------------------------
_lock = threading.Lock()
_current: dict[str, Telemetry] = {}  # "telemetry" -> the one in use
#: id(tracer provider) -> the exporters of canny's own providers (stopped by :func:`flush`).
_exporters: dict[int, tuple[Any, ...]] = {}


def get() -> Telemetry:
    """canny's :class:`Telemetry` (made on first use: the application's SDK providers when it
    installed them, else canny's own OTLP/HTTP exporters, configured by ``OTEL_*``)."""
    with _lock:
        if "telemetry" not in _current:
            _current["telemetry"] = Telemetry(*_providers())
        return _current["telemetry"]


#: The longest a process waits at exit for canny's own exporters (a collector that is
#: down must not hold ``canny ask`` for the exporters' retries, 10 s each by default).
EXIT_FLUSH_SECONDS = 5.0


def flush(tracer_provider: Any, meter_provider: Any, seconds: float = EXIT_FLUSH_SECONDS) -> None:
    """Export what canny's own providers hold, waiting at most ``seconds``, then stop their
    exporters (which ends any retry still waiting)."""
    providers = (tracer_provider, meter_provider)

    def export() -> None:
        for provider in providers:
            provider.force_flush(int(seconds * 1000))

    worker = threading.Thread(target=export, name="canny-otel-flush", daemon=True)
    worker.start()
    worker.join(seconds)
    for exporter in _exporters.get(id(tracer_provider), ()):
        exporter.shutdown()
    worker.join(1.0)


def use(tracer_provider: TracerProvider, meter_provider: MeterProvider) -> Telemetry:
    """Make canny report to these providers from now on (an in-memory exporter in tests)."""
    with _lock:
        _current["telemetry"] = Telemetry(tracer_provider, meter_provider)
        return _current["telemetry"]


def reset() -> None:
    """Forget the providers: the next traced call picks them again."""
    with _lock:
        _current.clear()


def _providers() -> tuple[TracerProvider, MeterProvider]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    tracer_provider: TracerProvider = trace.get_tracer_provider()
    meter_provider: MeterProvider = metrics.get_meter_provider()
    if isinstance(tracer_provider, SdkTracerProvider) and isinstance(meter_provider, SdkMeterProvider):
        return tracer_provider, meter_provider  # the application set OpenTelemetry up: report there
    tracer_provider, meter_provider = _own_providers()
    atexit.register(flush, tracer_provider, meter_provider)
    return tracer_provider, meter_provider


def _own_providers() -> tuple[TracerProvider, MeterProvider]:
    """canny's own providers, exporting over OTLP/HTTP, flushed when the process exits."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    resource = Resource.create({} if named else {"service.name": "canny"})
    span_exporter, metric_exporter = OTLPSpanExporter(), OTLPMetricExporter()
    # Not the SDK's own shutdown at exit (it waits out every retry): :func:`flush`, bounded.
    tracer_provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter)
    meter_provider = SdkMeterProvider(resource=resource, metric_readers=[reader], shutdown_on_exit=False)
    _exporters[id(tracer_provider)] = (span_exporter, metric_exporter)
    return tracer_provider, meter_provider
