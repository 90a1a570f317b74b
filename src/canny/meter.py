"""``canny.meter``: the ledger and budgets of :class:`canny.Client` for an existing SDK client.

::

    client = canny.meter(anthropic.Anthropic())      # or AsyncAnthropic: same type back
    client.messages.create(...)                      # unchanged; now priced and recorded

:func:`meter` returns ``client.with_middleware(Meter(...))``, a copy sharing the connection
pool. :class:`Meter` runs once per HTTP attempt inside the SDK's retry loop, for
``POST /v1/messages`` only (beta too). Per attempt it reserves the worst case against the
budgets in scope (raising :class:`~canny.errors.BudgetExceeded` before sending), tees the
body through :class:`~canny.streaming.SSEDecoder` / ``MessageAccumulator`` as the SDK reads
it, writes one ledger row through the same books as :class:`canny.Client`
(:class:`canny.books.Books`) when the attempt ends, and settles the reservation with its
cost. The caller gets exactly what the plain SDK gives.
It fails closed: a ledger that cannot be opened, or budgets that cannot be checked, raise
:class:`~canny.errors.LedgerUnavailable` before sending; a row that cannot be written is
spooled (:mod:`canny.ledger.spool`). Placed before other middleware, it still meters each
HTTP attempt they send. Other failures inside the meter are a
:class:`~canny.errors.CannyWarning`. See ``docs/meter.md``.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import types
import warnings
import zlib
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack, cast
from urllib.parse import urlsplit

import anthropic
import httpx2

from canny import errors
from canny._call import CallRun, CallSpec, answer_outcome, failure_outcome
from canny._sdk_errors import error_from_response, map_exception
from canny.books import Books
from canny.errors import CannyWarning
from canny.ids import new_id
from canny.pricing import default_table
from canny.streaming import MessageAccumulator, ServerSentEvent, SSEDecoder, event_payload

if TYPE_CHECKING:
    from anthropic import APIRequest, APIResponse, AsyncAPIResponse, AsyncCallNext, CallNext

    from canny._call import Attempt
    from canny.budget import Reservation, Reserver
    from canny.config import Settings
    from canny.ledger import Ledger
    from canny.result import Outcome

__all__ = ["Meter", "MeterOptions", "meter"]

ClientT = TypeVar("ClientT", bound="anthropic.Anthropic | anthropic.AsyncAnthropic")

#: Calls whose attempt count is remembered (to number the SDK's retries of one call).
_RECENT_CALLS = 4096
_End = Literal["read", "closed", "failed"]

#: Events that carry neither usage nor a stop reason: the tap keeps them undecoded and
#: decodes them only when the row needs them (see :class:`_Tap`).
_CONTENT_EVENTS = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})
_CONTENT_EVENT_NAMES = frozenset(name.encode() for name in _CONTENT_EVENTS)
_EVENT_PREFIX = b"event: "
_CONTENT_PREFIX = b"event: content_block_"
_DELTA = ord("d")
#: A chunk the tees keep as it is while skimming starts with this (:meth:`_Tap.see`).
_DELTA_EVENT = b"event: content_block_delta\ndata: "


class MeterOptions(TypedDict, total=False):
    """What :func:`meter` passes on to :class:`Meter` (see its parameters)."""

    ledger: Ledger | str | Path | Literal[False] | None
    budget: Reserver | None
    project: str | None
    tags: Iterable[str]
    log_content: bool | None
    session_id: str | None


def meter(client: ClientT, **options: Unpack[MeterOptions]) -> ClientT:
    """A copy of ``client`` (``anthropic.Anthropic`` or ``AsyncAnthropic``) whose Messages
    calls are priced, written to the ledger and held to budgets, one row per HTTP attempt.

    ``ledger``: ``None`` for the configured ledger, a path or URL, a ledger object, or
    ``False`` for none. ``budget``: a :class:`~canny.budget.Reserver` used instead of the
    ledger's stored budgets. ``project``, ``tags`` and ``log_content`` default to the
    config; ``session_id`` groups the rows. A client that is already metered gets its meter
    replaced, not doubled.
    """
    api_key = getattr(client, "api_key", None)
    fingerprint = None
    if isinstance(api_key, str) and api_key:
        from canny.secrets import Secret

        fingerprint = Secret(api_key).fingerprint
    endpoint = urlsplit(str(client.base_url)).netloc or None
    middleware = Meter(**options, endpoint=endpoint, key_fingerprint=fingerprint)
    existing = tuple(client.middleware)
    if any(isinstance(m, Meter) for m in existing):
        kept = [m for m in existing if not isinstance(m, Meter)]
        return cast(ClientT, client.with_options(middleware=[*kept, middleware]))
    return cast(ClientT, client.with_middleware(middleware))


def _metered(request: APIRequest) -> bool:
    return request.method.lower() == "post" and request.url.rstrip("/").endswith("/v1/messages")


def _warn(what: str, exc: BaseException) -> None:
    detail = exc.message if isinstance(exc, errors.CannyError) else type(exc).__name__
    warnings.warn(f"canny.meter: {what} ({detail})", CannyWarning, stacklevel=3)


class Meter(anthropic.Middleware):
    """The metering middleware (sync and async). :func:`meter` is the usual way in;
    ``anthropic.Anthropic(middleware=[Meter()])`` works too."""

    def __init__(
        self,
        *,
        ledger: Ledger | str | Path | Literal[False] | None = None,
        budget: Reserver | None = None,
        project: str | None = None,
        tags: Iterable[str] = (),
        log_content: bool | None = None,
        session_id: str | None = None,
        endpoint: str | None = None,
        key_fingerprint: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        from canny.config import load_settings

        self.books = Books(
            settings or load_settings(),
            ledger=ledger,
            budget=budget,
            project=project,
            tags=tags,
            log_content=log_content,
        )
        self.settings = self.books.settings
        self.budget = budget
        self.project = self.books.project
        self.tags = self.books.tags
        self.log_content = self.books.log_content
        self.session_id = session_id
        self.endpoint = endpoint
        self.key_fingerprint = key_fingerprint
        self._lock = threading.Lock()
        self._calls: OrderedDict[str, list[Any]] = OrderedDict()

    @property
    def ledger(self) -> Ledger | None:
        """The ledger (opened on first use); ``None`` when disabled with ``ledger=False``.
        Raises :class:`~canny.errors.LedgerUnavailable` when it cannot be opened (tried
        again on the next request)."""
        return self.books.ledger

    def flush(self) -> None:
        """Wait until every metered attempt so far is in the ledger (rows are written behind
        the call: :mod:`canny.ledger.writer`); warnings for spooled rows are shown now."""
        self.books.flush()

    def close(self) -> None:
        """Close the ledger if the meter opened it (a path, or the configured one)."""
        self.books.close()

    # -- the middleware -----------------------------------------------------------------
    def handle(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        if not _metered(request):
            return call_next(request)
        return cast("APIResponse[Any]", _chain(call_next, self._attempt)(request))

    def _attempt(self, request: APIRequest, call_next: CallNext) -> APIResponse[Any]:
        """Meter one HTTP attempt: ``call_next`` sends it."""
        tap = self._begin(request)
        try:
            response = call_next(tap.request)
        except BaseException as exc:
            tap.raised(exc)
            raise
        http = _http_response(response)
        raw = _read(http) if http is not None and not http.is_success else None
        tap.arrived(http, raw, _SyncTee)
        return response

    async def handle_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        if not _metered(request):
            return await call_next(request)
        return cast("AsyncAPIResponse[Any]", await _chain(call_next, self._attempt_async)(request))

    async def _attempt_async(self, request: APIRequest, call_next: AsyncCallNext) -> AsyncAPIResponse[Any]:
        tap = self._begin(request)
        try:
            response = await call_next(tap.request)
        except BaseException as exc:
            tap.raised(exc)
            raise
        http = _http_response(response)
        raw = await _aread(http) if http is not None and not http.is_success else None
        tap.arrived(http, raw, _AsyncTee)
        return response

    # -- one attempt --------------------------------------------------------------------
    def _number(self, request: APIRequest) -> tuple[str, int]:
        """(call id, attempt number): the SDK reuses one idempotency key for a call's
        attempts, so the attempts of one call share an id and count up from 1."""
        key = request.options.idempotency_key
        if key is None:
            return new_id(), request.retries_taken + 1
        with self._lock:
            slot = self._calls.get(key)
            if slot is None:
                slot = self._calls[key] = [new_id(), 0]
                if len(self._calls) > _RECENT_CALLS:
                    self._calls.popitem(last=False)
            else:
                self._calls.move_to_end(key)
            slot[1] += 1
            return str(slot[0]), int(slot[1])

    def _begin(self, request: APIRequest) -> _Tap:
        """Reserve the budgets and start the attempt; raises ``BudgetExceeded``, or
        ``LedgerUnavailable`` (and whatever opening the ledger raises) before sending."""
        body = request.json
        if not isinstance(body, Mapping):
            return _Tap(request, None)
        ledger = self.ledger  # fails closed: a ledger that cannot be opened stops the request here
        try:
            call_id, number = self._number(request)
            spec = self.books.spec(
                str(body.get("model") or "unknown"),
                dict(body),
                stream=request.stream,
                endpoint=self.endpoint,
                key_fingerprint=self.key_fingerprint,
                session_id=self.session_id,
                call_id=call_id,
                table=default_table(),  # one look at the price file for the whole attempt
            )
            asked = spec.params.get("max_tokens")
            reservation = self._reserve(spec, ledger, number)
            if reservation is not None and spec.params.get("max_tokens") != asked:
                request = request.copy(body=spec.params)
            run = self.books.run(spec, ledger, reservation=reservation)
            return _Tap(request, run, run.start_attempt(number))
        except (errors.BudgetExceeded, errors.LedgerUnavailable, errors.ConfigError):
            raise  # fail closed: nothing is sent that cannot be checked and recorded
        except Exception as exc:  # otherwise the meter never breaks a call
            _warn("this attempt is not metered", exc)
            return _Tap(request, None)

    def _reserve(self, spec: CallSpec, ledger: Ledger | None, number: int) -> Reservation | None:
        max_tokens = spec.params.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return None  # the API rejects it; nothing to reserve
        return self.books.reserve(spec, ledger, attempt=number)  # as canny.Client does


def _closure(fn: object) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    cells = getattr(fn, "__closure__", None) or ()
    names = getattr(code, "co_freevars", ())
    found: dict[str, Any] = {}
    for name, cell in zip(names, cells, strict=False):
        try:
            found[name] = cell.cell_contents
        except ValueError:  # an empty cell
            continue
    return found


def _split_chain(call_next: Any) -> tuple[list[Any], Any]:
    """The handlers of the middleware after the meter in the SDK's chain, outermost
    first, and the link that sends one HTTP attempt at its end.

    The SDK links each middleware as a closure over ``handler`` (its ``handle``) and
    ``call_next`` (the rest of the chain); from 2.17 the ``call_next`` a handler is given
    is a forwarding closure over ``call_next`` alone (and the request), which is stepped
    over. When the chain does not have that shape (the meter is last, or an SDK that
    links differently), no handler is found and ``call_next`` is metered as one attempt.
    """
    handlers: list[Any] = []
    link = call_next
    for _ in range(512):
        cells = _closure(link)
        handler, rest = cells.get("handler"), cells.get("call_next")
        if not callable(rest):
            break
        if handler is None:  # a forwarder (SDK 2.17+): the next link is behind it
            link = rest
            continue
        if not callable(handler):
            break
        handlers.append(handler)
        link = rest
    if not handlers:  # nothing after the meter: its own call_next sends the attempt
        return [], call_next
    return handlers, link


def _chain(call_next: Any, attempt: Any) -> Any:
    """What runs a metered request: ``attempt(request, call_next=...)`` for each HTTP
    attempt. Middleware after this one may send several (a refusal fallback, a hedge):
    it runs over a chain whose last link meters each attempt it sends."""
    later, send = _split_chain(call_next)
    chain: Any = functools.partial(attempt, call_next=send)
    for handler in reversed(later):
        chain = _link(handler, chain)
    return chain


def _link(handler: Any, call_next: Any) -> Any:
    """One link of a chain: ``handler(request, call_next)``."""

    def link(request: APIRequest) -> Any:
        return handler(request, call_next)

    return link


def _http_response(response: object) -> httpx2.Response | None:
    """``None`` when a later middleware answered without sending (e.g. from a cache)."""
    http = getattr(response, "http_response", None)
    return http if isinstance(http, httpx2.Response) else None


def _read(http: httpx2.Response) -> bytes | None:
    """The error body (small), read for its ``error.type``; a failed read is replayed to
    the SDK, which then fails exactly as it would have without the meter."""
    if http.is_closed:
        return http.content
    try:
        return http.read()
    except Exception as exc:
        _replay_failure(http, exc)
        return None


async def _aread(http: httpx2.Response) -> bytes | None:
    if http.is_closed:
        return http.content
    try:
        return await http.aread()
    except Exception as exc:
        _replay_failure(http, exc)
        return None


def _replay_failure(http: httpx2.Response, exc: Exception) -> None:
    http.stream = _Failing(exc)
    http.is_closed = http.is_stream_consumed = False


class _Failing(httpx2.SyncByteStream, httpx2.AsyncByteStream):
    """A body whose reading raises ``exc`` again."""

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def __iter__(self) -> Iterator[bytes]:
        yield from ()
        raise self.exc

    async def __aiter__(self) -> AsyncIterator[bytes]:
        nothing: tuple[bytes, ...] = ()
        for chunk in nothing:
            yield chunk
        raise self.exc


class _Tap:
    """One attempt's accounting: what arrived, and the row once it ended. Never raises.

    A stream's usage and stop reason arrive in ``message_start`` and ``message_delta``;
    content events (most of a stream) are kept in order, undecoded, once the first text
    has been seen (its time is the row's ``first_token_at``). They are decoded only when
    the row needs them: the stream did not end normally (its output may be estimated from
    the text shown, and a malformed event must be found where it was), or the content is
    logged. Then every event is fed again, in order, to a fresh accumulator, so the row is
    exactly what decoding every event as it came would have made.
    """

    __slots__ = (
        "_decoder",
        "_event_error",
        "_json",
        "_limit_error",
        "_log",
        "_parts",
        "_skipped",
        "_sse",
        "attempt",
        "done",
        "request",
        "run",
        "skimming",
    )

    def __init__(self, request: APIRequest, run: CallRun | None, attempt: Attempt | None = None) -> None:
        self.request = request
        self.run = run
        self.attempt = attempt
        self.done = run is None
        self._sse = SSEDecoder()
        self._decoder: Any = None
        self._json = False
        self._parts: list[bytes] = []
        self._event_error: errors.APIError | None = None
        self._limit_error: errors.APIError | None = None
        #: Every event in order (decoded, or raw bytes of whole content events), kept while
        #: content events are skipped (``None`` when the content is logged: all decoded).
        self._log: list[ServerSentEvent | bytes] | None = None if run is None or run.spec.log_content else []
        self._skipped = False
        #: The tees' chunks that are one whole ``content_block_delta`` are kept as they are
        #: (:meth:`see`): the first text was seen, and the decoder is between events.
        self.skimming = False

    # -- what the attempt saw -----------------------------------------------------------
    def arrived(self, http: httpx2.Response | None, raw: bytes | None, tee: type[_SyncTee | _AsyncTee]) -> None:
        """The response arrived: record it, or wrap its body in ``tee`` to see it as the SDK reads it."""
        if self.observe(http, raw) and http is not None:
            if isinstance(http.stream, tee.wraps):
                http.stream = tee(http.stream, self)
            else:
                self.untappable()

    def observe(self, http: httpx2.Response | None, raw: bytes | None) -> bool:
        """The response arrived: record it now, or return ``True`` to tee its body."""
        if http is None:
            self.no_attempt()
        elif not http.is_success:
            self.error_status(http, raw)
        elif http.is_closed:
            self.whole_body(http)
        else:
            return self.headers(http)
        return False

    def headers(self, http: httpx2.Response) -> bool:
        """A 2xx whose body is still to be read: get ready to tee it (``False``: no need)."""
        if self.attempt is None:
            return False
        try:
            self.attempt.headers(http.headers)
            self._json = "event-stream" not in http.headers.get("content-type", "")
            codings = [c.strip().lower() for c in http.headers.get_list("content-encoding", split_commas=True)]
            codings = [c for c in codings if c and c != "identity"]
            if codings:  # the tee sees the bytes before httpx2 decodes them
                self._decoder = _Decoder(codings)
        except Exception as exc:
            self._fail(exc)
            return False
        return True

    def untappable(self) -> None:
        if not self.done:
            self._fail(TypeError("the response body cannot be observed"))

    def chunk(self, data: bytes) -> None:
        """Raw body bytes as the SDK reads them."""
        if self.done or self.attempt is None:
            return
        try:
            if self._decoder is None:
                self._take(data)
                self.skimming = (
                    self._log is not None
                    and not self._json
                    and self._event_error is None
                    and self.attempt.first_token_at is not None
                    and self._sse.idle
                )
            else:
                for piece in self._decoder.decode(data):
                    self._take(piece)
        except Exception as exc:
            self._fail(exc)

    def see(self, data: bytes) -> None:
        """Raw body bytes as the SDK reads them, from the tees: while :attr:`skimming`, a
        chunk that is exactly one ``content_block_delta`` event (one event line, one data
        line) is kept undecoded here, with only the checks :meth:`_skim` would make of
        it (the tees call this for every chunk of a long answer); anything else goes to
        :meth:`chunk`."""
        if (
            self.skimming
            and data.startswith(_DELTA_EVENT)
            and data.endswith(b"\n\n")
            and data.count(b"\n") == 3
            and len(data) <= self._sse.max_line
        ):
            self._log.append(data)  # type: ignore[union-attr]  # skimming: the log is kept
            self._skipped = True
            return
        self.chunk(data)

    def _take(self, data: bytes) -> None:
        if self._json:
            self._parts.append(data)
        elif self._event_error is None:
            if self._log is not None and self._skim(data):
                return
            try:
                events = self._sse.feed(data)
            except errors.APIError as exc:  # the decoder's own limits (an over-long line)
                self._event_error = self._limit_error = exc
                return
            self._events(events)

    def _skim(self, data: bytes) -> bool:
        """Keep a chunk that is exactly one whole content event, undecoded (``True``)."""
        attempt, log = self.attempt, self._log
        assert attempt is not None
        assert log is not None
        if not data.startswith(_CONTENT_PREFIX) or attempt.first_token_at is None:
            return False
        end = data.find(b"\n\n")
        if (
            end != len(data) - 2
            or data[len(_EVENT_PREFIX) : data.find(b"\n")] not in _CONTENT_EVENT_NAMES
            or b"\nevent" in data
            or end > self._sse.max_line
            or not self._sse.idle
        ):
            return False
        if data[len(_CONTENT_PREFIX)] == _DELTA:  # content_block_delta
            attempt.acc.shown = True
        log.append(data)
        self._skipped = True
        return True

    def _events(self, events: Iterable[ServerSentEvent]) -> None:
        assert self.attempt is not None
        log = self._log
        for event in events:
            if event.event == "ping":
                continue
            if log is not None:
                log.append(event)
                if event.event in _CONTENT_EVENTS and self.attempt.first_token_at is not None:
                    if event.event == "content_block_delta":
                        self.attempt.acc.shown = True
                    self._skipped = True
                    continue
            if not self._feed(event):
                return

    def _feed(self, event: ServerSentEvent) -> bool:
        assert self.attempt is not None
        try:
            self.attempt.feed(event_payload(event))
        except errors.APIError as exc:  # an in-band error event, or a malformed one
            self._event_error = exc
            return False
        return True

    def _replay(self) -> None:
        """Feed every event again, in order, to a fresh accumulator (content included)."""
        assert self.attempt is not None
        assert self._log is not None
        self.attempt.acc = MessageAccumulator()
        self._event_error = None
        decoder = SSEDecoder()
        for item in self._log:
            events = decoder.feed(item) if isinstance(item, bytes) else (item,)
            if not all(self._feed(event) for event in events if event.event != "ping"):
                return
        self._event_error = self._limit_error

    def end(self, how: _End, exc: BaseException | None = None) -> None:
        """The body was read to its end, closed by the caller, or broke with ``exc``."""
        if self.done or self.attempt is None:
            return
        try:
            if how == "read":
                self._drain()
            if self._skipped and (how != "read" or self._event_error is not None or not self.attempt.acc.complete):
                self._replay()
            error: errors.CannyError | None = self._event_error
            if error is None and how == "failed" and exc is not None:
                error = map_exception(exc) or _unknown(exc)
            if error is not None:
                self._failed(error)
            elif self.attempt.acc.complete:
                self._finish(answer_outcome(self.attempt.acc))
            elif how == "read":
                self._failed(errors.ConnectionFailed("the stream ended before the answer was complete"))
            else:
                self._finish("cancelled")
        except errors.CannyError as body_error:  # a 2xx body that is not a message
            self._failed(body_error)
        except Exception as failure:
            self._fail(failure)

    def _drain(self) -> None:
        """The body ended: take what the decoders still hold."""
        assert self.attempt is not None
        if self._decoder is not None:
            for piece in self._decoder.flush():
                self._take(piece)
        if self._json:
            self.attempt.body(b"".join(self._parts))
        elif self._event_error is None:
            self._events(self._sse.flush())

    def whole_body(self, http: httpx2.Response) -> None:
        """A 2xx response whose body the SDK already read."""
        if self.attempt is None:
            return
        try:
            self.attempt.headers(http.headers)
            self.attempt.body(http.content)
        except errors.CannyError as error:
            self._failed(error)
        except Exception as exc:
            self._fail(exc)
        else:
            self._finish(answer_outcome(self.attempt.acc))

    def error_status(self, http: httpx2.Response, raw: bytes | None) -> None:
        if self.attempt is None:
            return
        try:
            self.attempt.headers(http.headers)
            body: Any = None
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", errors="replace")
            error = error_from_response(http.status_code, body, http.headers)
        except Exception as exc:
            self._fail(exc)
        else:
            self._failed(error)

    def raised(self, exc: BaseException) -> None:
        """``call_next`` raised: no response (connection, timeout) or the caller stopped."""
        if isinstance(exc, Exception):
            self._failed(map_exception(exc) or _unknown(exc))
        else:
            self._finish("cancelled")

    def no_attempt(self) -> None:
        """A later middleware answered without an HTTP request: nothing to record."""
        self.done, self.skimming = True, False
        if self.run is not None and self.attempt is not None:
            self.run.not_sent(self.attempt)  # nor anything in flight
        if self.run is not None and self.run.reservation is not None:
            try:
                self.run.reservation.release()
            except Exception as exc:
                _warn("budget reservation not released", exc)

    # -- the row ------------------------------------------------------------------------
    def _failed(self, error: errors.CannyError) -> None:
        self._finish(failure_outcome(self.attempt) if self.attempt is not None else "error", error)

    def _finish(self, outcome: Outcome, error: errors.CannyError | None = None) -> None:
        if self.done or self.run is None or self.attempt is None:
            return
        self.done, self.skimming = True, False
        try:
            self.run.record(self.attempt, outcome, error)
        except Exception as exc:
            _warn("ledger not written", exc)

    def _fail(self, exc: BaseException) -> None:
        """The meter itself failed on this attempt: record what is known, and warn."""
        _warn("could not read this response", exc)
        self._finish("error", _unknown(exc))


class _Decoder:
    """Undo a body's ``Content-Encoding`` (gzip, deflate; applied in order, undone in
    reverse) as the tee sees the bytes before httpx2 decodes them for the SDK. A coding
    it does not know (``br``, ``zstd``) fails the attempt's metering with a warning: the
    row is recorded, unpriced. (httpx2 offers no public incremental decoder.)"""

    def __init__(self, codings: list[str]) -> None:
        self._steps = [self._step(c) for c in reversed(codings)]

    @staticmethod
    def _step(coding: str) -> Any:
        if coding in ("gzip", "x-gzip"):
            return zlib.decompressobj(zlib.MAX_WBITS | 16)
        if coding == "deflate":
            return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib-wrapped or not: detected
        raise ValueError(f"content-encoding {coding!r} cannot be read by the meter")

    def decode(self, data: bytes) -> list[bytes]:
        for step in self._steps:
            data = step.decompress(data)
        return [data] if data else []

    def flush(self) -> list[bytes]:
        data = b""
        for step in self._steps:
            data = step.decompress(data) + step.flush()
        return [data] if data else []


def _unknown(exc: BaseException) -> errors.APIError:
    return errors.APIError(f"the request failed ({type(exc).__name__})", error_type=type(exc).__name__)


class _Tee:
    """What both tees share: the body they wrap and the tap they feed."""

    def __init__(self, body: Any, tap: _Tap) -> None:
        self._body = body
        self._tap = tap
        # The SDK looks for it on every chunk: an attribute, not a trip through __getattr__.
        self.stream_observer = getattr(body, "stream_observer", None)

    def __getattr__(self, name: str) -> Any:
        # Whatever else the body offers (``elapsed``, an SDK tracing observer) stays visible.
        if name == "_body":
            raise AttributeError(name)
        return getattr(self._body, name)

    def __del__(self) -> None:
        # A response dropped unread and unclosed: its attempt still happened.
        if not sys.is_finalizing():
            self._tap.end("closed")


class _SyncTee(_Tee, httpx2.SyncByteStream):
    """The response body, teed into a :class:`_Tap` as the SDK reads it."""

    _body: httpx2.SyncByteStream
    wraps = httpx2.SyncByteStream

    def __iter__(self) -> Iterator[bytes]:
        tap = self._tap
        try:
            for chunk in self._body:
                tap.see(chunk)
                yield chunk
        except Exception as exc:
            tap.end("failed", exc)
            raise
        tap.end("read")

    def close(self) -> None:
        self._tap.end("closed")
        self._body.close()


class _AsyncTee(_Tee, httpx2.AsyncByteStream):
    """The async twin of :class:`_SyncTee`."""

    _body: httpx2.AsyncByteStream
    wraps = httpx2.AsyncByteStream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        tap = self._tap
        chunks = self._body.__aiter__()
        try:
            async for chunk in chunks:
                tap.see(chunk)
                yield chunk
        except Exception as exc:
            tap.end("failed", exc)
            raise
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        tap.end("read")

    async def aclose(self) -> None:
        self._tap.end("closed")
        await self._body.aclose()


class _MeterModule(types.ModuleType):
    """``canny.meter`` names both this module and :func:`meter`: importing the module
    (``import canny.meter``) makes it the package's ``meter`` attribute, so the module
    itself calls :func:`meter` and ``canny.meter(client)`` works either way."""

    def __call__(self, client: ClientT, **options: Any) -> ClientT:
        return meter(client, **options)


sys.modules[__name__].__class__ = _MeterModule
