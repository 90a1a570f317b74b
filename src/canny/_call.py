"""One call's state: its attempts, their ledger rows, the retry decision and the result.

Sync and async clients (and streamed and non-streamed calls) drive the same
:class:`CallRun`; only the I/O differs. Each attempt's ledger row is written in
``finally`` by :meth:`CallRun.close_attempt`, whatever happened.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from canny import errors
from canny._sdk_errors import error_from_event, map_exception
from canny.errors import CannyWarning
from canny.ids import new_id
from canny.ledger import AttemptRecord
from canny.prefixes import prefix_hashes
from canny.result import CallResult, Outcome
from canny.retry import Attempts, RetryPolicy, RetryState
from canny.streaming import MessageAccumulator, parse_body
from canny.usage import BUCKETS, Usage

#: ``canny ask -v`` shows the response headers of each attempt (request id, rate limits).
_http_log = logging.getLogger("canny.http")
_UNLOGGED_HEADERS = frozenset({"set-cookie", "cookie", "authorization", "x-api-key"})

if TYPE_CHECKING:
    from canny.budget import Reservation
    from canny.config import Timeouts
    from canny.ledger import Ledger
    from canny.pricing import PriceTable

__all__ = [
    "LOST_MARGIN",
    "CallObserver",
    "CallRun",
    "CallSpec",
    "answer_outcome",
    "budget_refused_record",
    "failure_outcome",
    "lease_for",
    "sent_max_tokens",
]

#: Seconds added to an attempt's longest possible run (its total timeout, checked between
#: events, plus one idle gap) to make the lease of its row in flight.
LOST_MARGIN = 60.0
#: The lease of a row in flight with the default timeouts (900 s total, 60 s idle).
DEFAULT_LEASE = 900.0 + 60.0 + LOST_MARGIN


def lease_for(timeouts: Timeouts) -> float:
    """Seconds an attempt stays in flight before it may be recorded as ``lost``."""
    return timeouts.total + timeouts.idle + LOST_MARGIN


@dataclass(slots=True)
class CallSpec:
    """What is being asked, and how it is accounted."""

    model: str
    params: dict[str, Any]
    stream: bool
    project: str | None = None
    tags: tuple[str, ...] = ()
    session_id: str | None = None
    log_content: bool = False
    endpoint: str | None = None
    key_fingerprint: str | None = None
    max_cost: Decimal | None = None
    call_id: str = field(default_factory=new_id)
    #: The price table read once for the whole call (``None``: the default table).
    table: PriceTable | None = None
    #: The model asked once more after a refusal (opt-in: :mod:`canny.fallback`).
    fallback_model: str | None = None
    #: A request of a Message Batch: priced at batch rates (:mod:`canny.batches`).
    batch: bool = False
    #: The prompt's hash when the prompt itself is no longer at hand (a batch's results).
    prompt_sha256: str | None = None

    @property
    def max_tokens(self) -> int:
        return int(self.params["max_tokens"])

    #: :attr:`prompt_json`, made once (the call's system, messages and tools never change).
    _prompt_json: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def prompt_json(self) -> str:
        if self._prompt_json is None:
            keys = ("system", "messages", "tools")
            prompt = {k: self.params.get(k) for k in keys}
            self._prompt_json = json.dumps(prompt, sort_keys=True, ensure_ascii=False, default=str)
        return self._prompt_json

    @property
    def prompt_hash(self) -> str:
        """The SHA-256 of :attr:`prompt_json` (the ledger's ``prompt_hash``), worked out once;
        ``prompt_sha256`` when the call gave it (a batch's results, whose prompt is gone)."""
        if self.prompt_sha256 is None:
            self.prompt_sha256 = hashlib.sha256(self.prompt_json.encode()).hexdigest()
        return self.prompt_sha256

    def estimated_input_tokens(self) -> int:
        """A deliberately high local estimate (UTF-8 bytes / 3) for worst-case budgeting."""
        return math.ceil(len(self.prompt_json.encode()) / 3) + 16

    @property
    def cache_ttl(self) -> str | None:
        """The longest cache TTL the request asks for (writes cost more than plain input)."""
        # Markers sit in the system, messages and tools (the prompt JSON, made once) or at the top.
        top = self.params.get("cache_control")
        text = self.prompt_json + ("" if top is None else json.dumps(top, default=str))
        if '"cache_control"' not in text and top is None:
            return None
        return "1h" if '"ttl": "1h"' in text else "5m"

    def worst_case(self, max_tokens: int | None = None) -> Decimal | None:
        """Input estimate at the input (or cache-write) rate plus ``max_tokens`` at the output rate."""
        from canny.pricing import worst_case_cost

        return worst_case_cost(
            self.model,
            input_tokens=self.estimated_input_tokens(),
            max_tokens=self.max_tokens if max_tokens is None else max_tokens,
            inference_geo=self.params.get("inference_geo"),
            speed=self.params.get("speed"),
            cache_ttl=self.cache_ttl,
            batch=self.batch,
            table=self.table,
        )


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class Attempt:
    """One HTTP attempt and what it saw."""

    number: int
    started_at: datetime
    acc: MessageAccumulator = field(default_factory=MessageAccumulator)
    request_id: str | None = None
    first_token_at: datetime | None = None
    error: errors.CannyError | None = None
    outcome: Outcome | None = None
    recorded: bool = False
    usage: Usage = field(default_factory=Usage)
    cost: Decimal | None = None
    #: Remarks stored with the ledger row (``AttemptRecord.extra``).
    notes: dict[str, str] = field(default_factory=dict)
    #: The answer came from canny's emulator (its ``canny-emulator`` header): tagged ``offline``.
    emulated: bool = False
    #: Called once when ``message_start`` arrives (the CallRun records the attempt in flight).
    on_start: Callable[[Attempt], None] | None = None

    def headers(self, headers: Mapping[str, str]) -> None:
        self.request_id = headers.get("request-id") or self.request_id
        if headers.get("canny-emulator"):  # answered by canny's emulator, not the API
            self.emulated = True
        if _http_log.isEnabledFor(logging.DEBUG):
            shown = "; ".join(f"{k}: {v}" for k, v in headers.items() if k.lower() not in _UNLOGGED_HEADERS)
            _http_log.debug("attempt %d response headers: %s", self.number, shown)

    def feed(self, event: Mapping[str, Any]) -> str:
        """Apply one stream event; raises the in-band error (or a malformed event) as a canny error."""
        if event.get("type") == "invalid":  # not JSON, or not an object: part of the answer is lost
            name = event.get("event")
            raise errors.ServerError(
                f"the API sent a malformed {name or 'stream'} event",
                status_code=200,
                error_type="malformed_event",
                request_id=self.request_id,
            )
        text = self.acc.feed(event)
        if self.on_start is not None and event.get("type") == "message_start":
            on_start, self.on_start = self.on_start, None
            on_start(self)
        if self.acc.error is not None:
            raise error_from_event(self.acc.error, self.request_id)
        if text and self.first_token_at is None:
            self.first_token_at = _now()
        return text

    def end_of_stream(self) -> None:
        """The body ended: fine if the answer ended, a broken connection otherwise."""
        if not self.acc.complete:
            raise errors.ConnectionFailed("the stream ended before the answer was complete")

    def body(self, raw: bytes) -> None:
        """Take a whole non-streamed response body."""
        try:
            self.acc = parse_body(raw)
        except (ValueError, UnicodeDecodeError):
            raise errors.ServerError("the API sent a response that is not JSON") from None
        if self.acc.error is not None:
            raise error_from_event(self.acc.error, self.request_id)
        self.first_token_at = _now()


class CallObserver(Protocol):
    """Watches a run (telemetry): each attempt's row as it closes, then the call's end."""

    def attempt(self, record: AttemptRecord, answer: str | None = None) -> None: ...

    def end(self) -> None: ...


class CallRun:
    """Drives one call: attempts, retry decisions, ledger rows, the final result."""

    def __init__(
        self,
        spec: CallSpec,
        *,
        policy: RetryPolicy | None = None,
        ledger: Ledger | None,
        reservation: Reservation | None = None,
        lease: float = DEFAULT_LEASE,
        observer: CallObserver | None = None,
    ) -> None:
        self.spec = spec
        #: Told of every attempt's row and of the call's end (``None``: telemetry is off).
        self.observer = observer
        #: Unused by callers that retry elsewhere (the meter: the SDK's own retry loop).
        self.policy = policy = policy or RetryPolicy()
        self.ledger = ledger
        self.reservation = reservation
        self.retry: RetryState = policy.start()
        self.attempts: list[Attempt] = []
        self.ledger_errors: list[errors.LedgerError] = []
        self._settled = False
        self._prefix_hashes: str | None = None  # worked out for the first row only
        #: Seconds an attempt's row in flight lives (:func:`lease_for`).
        self.lease = lease
        self._begin_attempt: Callable[..., None] | None = getattr(ledger, "begin_attempt", None)
        #: A ledger writing behind the call (canny.ledger.writer) takes the row in flight
        #: as a function that builds it, and settles the budget after the row is written.
        self._begin_later: Callable[..., None] | None = getattr(ledger, "begin_attempt_later", None)
        self._defer: Callable[[Callable[[], object]], None] | None = getattr(ledger, "defer", None)

    # -- attempts -----------------------------------------------------------------------
    def retrying(self) -> Attempts[Attempt, CallResult]:
        """The call's attempt loop (:class:`canny.retry.Attempts`): ``for attempt in
        run.retrying(): with attempt as state: ...``, SDK errors mapped to canny's."""
        return Attempts(self, translate=map_exception)

    def start_attempt(self, number: int | None = None) -> Attempt:
        """A new attempt, numbered by the retry state unless ``number`` is given (the meter
        numbers the attempts the SDK makes)."""
        attempt = Attempt(number=self.retry.begin_attempt() if number is None else number, started_at=_now())
        if attempt.number > 1 and self.reservation is not None and not self._settled:
            self.reservation.renew()  # a retry must not outlive the budget lease
        self.attempts.append(attempt)
        if self._begin_attempt is not None:
            if self.spec.stream:
                attempt.on_start = self._in_flight  # message_start reports the input usage
            else:
                self._in_flight(attempt)  # nothing comes back before the answer: the estimate
        return attempt

    def _in_flight(self, attempt: Attempt) -> None:
        """Put the attempt on the record as in flight, with its input-side usage and their
        cost, so a process killed before its row is written leaves a ``lost`` row. The row
        itself is built by whoever writes it: a ledger writing behind the call builds it on
        its own thread, and never when the attempt's own row comes first."""
        assert self._begin_attempt is not None
        if attempt.recorded:
            return
        notes: dict[str, str] = {}
        if self.spec.stream:
            seen = attempt.acc.usage_acc.later()  # as at message_start; built only if written

            def prompt_usage() -> Usage:
                now = seen()
                return Usage(**{b.name: getattr(now, b.name) for b in BUCKETS if b.kind == "prompt"})
        else:
            estimate = Usage(input=self.spec.estimated_input_tokens())
            notes["input_tokens"] = "estimated: local estimate before sending (UTF-8 bytes / 3)"

            def prompt_usage() -> Usage:
                return estimate

        model = self._attempt_model(attempt)
        reported = attempt.acc.usage_acc.reported  # a copy: later events may add to it

        def build() -> AttemptRecord:
            usage = prompt_usage()
            return self._row(
                attempt,
                ended_at=attempt.started_at,
                model=model,
                outcome="lost",
                request_id=attempt.request_id,
                cost_usd=self._cost(model, usage, reported, attempt.started_at, notes),
                inference_geo=self.spec.params.get("inference_geo"),
                speed=self.spec.params.get("speed"),
                extra=notes,
                usage=usage,
            )

        lease_until = _now() + timedelta(seconds=self.lease)
        # A failure here is not the call's: the attempt's own row reports a ledger that
        # cannot be written.
        with contextlib.suppress(errors.LedgerError):
            if self._begin_later is not None:
                key = (self.spec.call_id, attempt.number)
                self._begin_later(build, key, lease_until=lease_until, reservation_id=_reservation_id(self.reservation))
            else:
                self._begin_attempt(build(), lease_until=lease_until, reservation_id=_reservation_id(self.reservation))

    def not_sent(self, attempt: Attempt) -> None:
        """The attempt was never sent after all (the meter: a later middleware answered):
        no row, and its row in flight goes."""
        attempt.recorded = True
        attempt.on_start = None
        forget = getattr(self.ledger, "forget_attempt", None)
        if forget is not None and not self.spec.stream:
            with contextlib.suppress(errors.LedgerError):
                forget(self.spec.call_id, attempt.number)

    def release(self) -> None:
        """Nothing was sent (the stream was closed before it started): free the budgets."""
        if not self._settled and not self.attempts:
            self._settled = True
            if self.reservation is not None:
                self.reservation.release()

    def check_deadline(self, started_monotonic: float, total: float) -> None:
        if self.policy.clock() - started_monotonic > total:
            raise errors.TimeoutError(f"the attempt took longer than the {total:.0f} s total timeout", phase="total")

    def failed(self, attempt: Attempt, error: errors.CannyError) -> float:
        """An attempt failed: return the delay before the next one, or raise the final error."""
        attempt.error = error
        if isinstance(error, errors.APIError) and error.request_id is None:
            error.request_id = attempt.request_id
        attempt.outcome = failure_outcome(attempt)
        if attempt.outcome == "interrupted":
            self.close_attempt(attempt)
            self._settle()
            interrupted = errors.StreamInterrupted(
                f"the stream broke after output was shown: {error.message}",
                status_code=getattr(error, "status_code", None),
                error_type=getattr(error, "error_type", None),
                request_id=attempt.request_id,
            )
            interrupted.result = self.result(attempt)
            raise interrupted from error
        self.close_attempt(attempt)
        delay = self.retry.next_delay(error)
        if delay is None:
            self._settle()
            if isinstance(error, errors.APIError):
                why = self.retry.gave_up_because
                if isinstance(error, errors.TransientError) and why and why != "not retryable":
                    error.message = f"{error.message}; {why}"
                error.result = self.result(attempt)
            raise error
        return delay

    def aborted(self, attempt: Attempt) -> None:
        """The caller stopped (closed the stream, Ctrl-C, cancelled task)."""
        attempt.outcome = "cancelled"
        self.close_attempt(attempt)
        self._settle()

    def succeeded(self, attempt: Attempt) -> CallResult:
        attempt.outcome = answer_outcome(attempt.acc)
        self.close_attempt(attempt)
        self._settle()
        return self.result(attempt)

    def record(self, attempt: Attempt, outcome: Outcome, error: errors.CannyError | None = None) -> None:
        """Write the row of an attempt whose fate was decided elsewhere (the meter, where
        the SDK retries), and settle the reservation: no retry decision, nothing raised."""
        if error is not None:
            attempt.error = error
            if isinstance(error, errors.APIError) and error.request_id is None:
                error.request_id = attempt.request_id
        attempt.outcome = outcome
        self.close_attempt(attempt)
        self._settle()

    # -- accounting ---------------------------------------------------------------------
    def _attempt_usage(self, attempt: Attempt) -> Usage:
        usage, note = attempt.acc.billed_usage()
        if note is not None:
            attempt.notes["output_tokens"] = note
        return usage

    def _attempt_cost(self, attempt: Attempt, usage: Usage) -> Decimal | None:
        """The attempt's cost by the one rule (:func:`canny.pricing.cost`): what the usage
        reports is billed, refusals included, at the rates of the model and modifiers the
        server reports. Never raises: a cost that cannot be computed is unpriced, noted."""
        model = self._attempt_model(attempt)
        return self._cost(model, usage, attempt.acc.usage_acc.reported, attempt.started_at, attempt.notes)

    def _cost(
        self, model: str, usage: Usage, reported: Mapping[str, Any], at: datetime, notes: dict[str, str]
    ) -> Decimal | None:
        """:meth:`_attempt_cost` from its parts; why a cost is unpriced goes to ``notes``."""
        if usage.is_empty:
            return Decimal(0)
        from canny.pricing import cost

        try:
            return cost(
                model,
                usage,
                inference_geo=self.spec.params.get("inference_geo"),
                speed=self.spec.params.get("speed"),
                reported=reported,
                batch=self.spec.batch,
                at=at,
                table=self.spec.table,
            )
        except (ValueError, ArithmeticError) as exc:  # the request's own modifiers, or odd counts
            notes["unpriced"] = str(exc)[:200]
            return None

    def _attempt_model(self, attempt: Attempt) -> str:
        """The model the server says answered (recorded as sent), else the one asked for."""
        model = attempt.acc.message.get("model")
        return model if isinstance(model, str) and model else self.spec.model

    def close_attempt(self, attempt: Attempt) -> None:
        """Write the attempt's ledger row (once)."""
        if attempt.recorded:
            return
        attempt.recorded = True
        try:
            attempt.usage = self._attempt_usage(attempt)
            attempt.cost = self._attempt_cost(attempt, attempt.usage)
        except Exception as exc:  # a response we cannot read is still an attempt on the record
            attempt.cost = None
            attempt.notes["unpriced"] = f"usage could not be read: {type(exc).__name__}"
        if self.ledger is None and self.observer is None:
            return
        error = attempt.error
        reported = attempt.acc.usage_acc.reported
        record = self._row(
            attempt,
            ended_at=_now(),
            model=self._attempt_model(attempt),
            outcome=attempt.outcome or "error",
            first_token_at=attempt.first_token_at,
            status_code=getattr(error, "status_code", None) if error else 200,
            error_type=(getattr(error, "error_type", None) or type(error).__name__) if error else None,
            error_code=getattr(error, "error_code", None) if error else None,
            request_id=attempt.request_id or (getattr(error, "request_id", None) if error else None),
            stop_reason=attempt.acc.stop_reason,
            refusal_category=attempt.acc.refusal_category,
            cost_usd=attempt.cost,
            inference_geo=_reported_str(reported, "inference_geo") or self.spec.params.get("inference_geo"),
            speed=_reported_str(reported, "speed") or self.spec.params.get("speed"),
            batch=self.spec.batch or reported.get("service_tier") == "batch",
            prompt_text=self.spec.prompt_json if self.spec.log_content else None,
            response_text=attempt.acc.text if self.spec.log_content else None,
            extra=dict(attempt.notes),
            usage=attempt.usage.totals,
        )
        if self.ledger is not None:
            self.write(record)
        if self.observer is not None:
            _observe(self.observer.attempt, record, attempt.acc.text)

    def _row(self, attempt: Attempt, **fields: Any) -> AttemptRecord:
        """The row of ``attempt``: what the call's spec says (ids, session, route, project,
        tags, prompt hash, price version), and ``fields``."""
        from canny.pricing import price_version

        return AttemptRecord(
            call_id=self.spec.call_id,
            attempt=attempt.number,
            started_at=attempt.started_at,
            session_id=self.spec.session_id,
            price_version=price_version(table=self.spec.table),
            streamed=self.spec.stream,
            endpoint=self.spec.endpoint,
            project=self.spec.project,
            tags=self.spec.tags + (("offline",) if attempt.emulated and "offline" not in self.spec.tags else ()),
            key_fingerprint=self.spec.key_fingerprint,
            prompt_hash=self.spec.prompt_hash,
            max_tokens=sent_max_tokens(self.spec.params),
            prefix_hashes=self._prefixes(),
            **fields,
        )

    def _prefixes(self) -> str:
        """The prompt's prefix hashes (:func:`canny.prefixes.prefix_hashes`), worked out when
        the first row needs them: a call without a ledger never pays for them."""
        if self._prefix_hashes is None:
            spec = self.spec
            self._prefix_hashes = prefix_hashes(
                spec.model, spec.params, body_chars=len(spec.prompt_json), table=spec.table
            )
        return self._prefix_hashes

    def write(self, record: AttemptRecord) -> None:
        """Write ``record`` to the ledger; if the ledger fails (locked, disk full, server
        gone), keep it in the local spool, written into the ledger on its next open."""
        assert self.ledger is not None
        try:
            self.ledger.record(record)
        except errors.LedgerError as exc:
            self.ledger_errors.append(exc)
            from canny.ledger.spool import keep

            warnings.warn(keep(self.ledger, record, exc), CannyWarning, stacklevel=2)

    def write_unsent(self, record: AttemptRecord) -> None:
        """Write the one row of a call that was never sent (``budget_refused``); the
        observer sees it as the call's only attempt, and the call ends there."""
        self.write(record)
        self._settled = True
        if self.observer is not None:
            _observe(self.observer.attempt, record)
            _observe(self.observer.end)

    def _settle(self) -> None:
        if self._settled:
            return
        self._settled = True
        if self.observer is not None:
            _observe(self.observer.end)
        if self.reservation is not None:
            settle = partial(self.reservation.settle, self.total_cost())
            if self._defer is not None:
                self._defer(settle)  # after the row, on the ledger's writer when it has one
            else:
                settle()

    def total_usage(self) -> Usage:
        if len(self.attempts) == 1:  # the usual call: nothing to add up
            return self.attempts[0].usage
        total = Usage()
        for attempt in self.attempts:
            total = total + attempt.usage
        return total

    def total_cost(self) -> Decimal | None:
        if len(self.attempts) == 1:
            return self.attempts[0].cost
        total = Decimal(0)
        for attempt in self.attempts:
            if attempt.cost is None:
                return None
            total += attempt.cost
        return total

    def result(self, attempt: Attempt) -> CallResult:
        from canny.pricing import price_version

        acc = attempt.acc
        outcome: Outcome = attempt.outcome or "error"
        return CallResult(
            outcome=outcome,
            model=self._attempt_model(attempt),
            text=acc.text,
            message=acc.final_message(),
            usage=self.total_usage(),
            cost=self.total_cost(),
            attempts=len(self.attempts),
            call_id=self.spec.call_id,
            last_usage=attempt.usage,
            stop_reason=acc.stop_reason,
            refusal_category=acc.refusal_category,
            request_id=attempt.request_id,
            price_version=price_version(table=self.spec.table),
            complete=acc.complete,
        )


def _observe(step: Callable[..., None], *args: Any) -> None:
    """Tell the observer; telemetry never breaks a call (a failure is warned about once)."""
    try:
        step(*args)
    except Exception as exc:
        if not _OBSERVER_WARNED:
            _OBSERVER_WARNED.add(type(exc).__name__)
            warnings.warn(f"telemetry failed and is skipped: {type(exc).__name__}: {exc}", CannyWarning, stacklevel=2)


_OBSERVER_WARNED: set[str] = set()


def _reported_str(reported: Mapping[str, Any], name: str) -> str | None:
    value = reported.get(name)
    return value[:64] if isinstance(value, str) and value else None


#: Stop reasons the API documents; any other is recorded as sent and warned about once.
KNOWN_STOP_REASONS = frozenset(
    {
        "end_turn",
        "max_tokens",
        "stop_sequence",
        "tool_use",
        "pause_turn",
        "refusal",
        "model_context_window_exceeded",
        "compaction",
    }
)


def _reservation_id(reservation: Reservation | None) -> int | None:
    """The id of the budget reservation (held in the ledger) among a call's reservations."""
    for candidate in (reservation, *getattr(reservation, "reservations", ())):
        rid = getattr(candidate, "id", None)
        if isinstance(rid, int) and not isinstance(rid, bool):
            return rid
    return None


def answer_outcome(acc: MessageAccumulator) -> Outcome:
    """The outcome of an attempt that got an answer: ``refused``, ``max_tokens`` or ``ok``."""
    reason = acc.stop_reason
    if reason is not None and reason not in KNOWN_STOP_REASONS:
        from canny.pricing import warn_unexpected

        warn_unexpected(f"an unknown stop_reason {reason!r}")
    if reason == "refusal":
        return "refused"
    if reason in ("max_tokens", "model_context_window_exceeded"):
        return "max_tokens"
    return "ok"


def failure_outcome(attempt: Attempt) -> Outcome:
    """THE rule for an attempt that failed: ``interrupted`` once any of its text was shown
    (it is never re-sent, the text would repeat), ``error`` otherwise (it may be retried)."""
    return "interrupted" if attempt.acc.shown else "error"


def budget_refused_record(spec: CallSpec, error: errors.BudgetExceeded) -> AttemptRecord:
    """The ledger row of a call refused before sending."""
    now = _now()
    return AttemptRecord(
        call_id=spec.call_id,
        attempt=1,
        started_at=now,
        ended_at=now,
        model=spec.model,
        outcome="budget_refused",
        session_id=spec.session_id,
        status_code=None,
        error_type="BudgetExceeded",
        error_code=error.budget or None,
        cost_usd=Decimal(0),
        streamed=spec.stream,
        endpoint=spec.endpoint,
        project=spec.project,
        tags=spec.tags,
        key_fingerprint=spec.key_fingerprint,
        prompt_hash=spec.prompt_hash,
        max_tokens=sent_max_tokens(spec.params),
        prefix_hashes=prefix_hashes(spec.model, spec.params, table=spec.table),
    )


def sent_max_tokens(params: Mapping[str, Any]) -> int | None:
    """The request's ``max_tokens`` when it is a whole number (else ``None``: unknown)."""
    value = params.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
