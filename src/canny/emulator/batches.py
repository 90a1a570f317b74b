"""Message Batches: ``/v1/messages/batches`` (create, retrieve, list, cancel, delete, results).

A batch is held in memory. It stays ``in_progress`` for the scenario's ``batch_seconds``
(default 0: it has ended by the first look after its creation), then every request is
answered at once through the same code path as ``POST /v1/messages`` (not streamed, no
fault plan), and the results are served as JSONL at ``results_url``. A cancel marks the
batch ``canceling``; it then ends with every request ``canceled``.

Each succeeded result is the Message the Messages API would have returned, with
``usage.service_tier = "batch"``. A request the Messages API would have refused (a bad
``params``, ``stream: true``, or a ``[[fault=...]]`` directive naming an HTTP-status fault)
becomes an ``errored`` result carrying that error. ``request_counts`` move only when the
whole batch ends, as the API documents.

The store keeps the latest :data:`MAX_BATCHES` batches. This module serves the routes;
:mod:`canny.emulator.app` registers them.
"""

from __future__ import annotations

import json
import re
import secrets
import string
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request

from canny.emulator.faults import OK, Fault
from canny.emulator.fields import ApiError, only, required, typed
from canny.emulator.fields import invalid as _invalid
from canny.emulator.recorder import RecordedRequest, redact_headers
from canny.emulator.responses import api_error_script, json_script
from canny.emulator.wire import Body, Cut, Start, Step

if TYPE_CHECKING:
    from canny.emulator.app import EmulatorState

__all__ = [
    "AnswerFn",
    "BatchService",
    "Handler",
    "Route3",
    "ServiceMethod",
    "api_id",
    "base_of",
    "iso",
    "page_limit",
    "paginate",
    "record",
    "resource_routes",
    "service_handler",
]

Handler = Callable[[Request, str], Awaitable[Sequence[Step]]]
#: A route as ``(path, handler, methods)``; the app wraps the handler in its endpoint.
Route3 = tuple[str, Handler, list[str]]
#: The app's answer to one ``/v1/messages`` request: ``(request, request_id, raw, body, fault)``
#: -> ``(script, fault applied)``.
AnswerFn = Callable[[Request, str, bytes, Any, Fault], tuple[list[Step], Fault]]

_Method = TypeVar("_Method")


def resource_routes(
    collection: str,
    key: str,
    wrap: Callable[[_Method], Handler],
    handlers: tuple[_Method, _Method, _Method, _Method],
    actions: Mapping[str, tuple[str, _Method]],
) -> list[Route3]:
    """The routes of one API resource: ``handlers`` are its (create, list, retrieve, delete)
    methods, answering ``POST`` and ``GET`` on ``collection`` and ``GET`` and ``DELETE`` on
    one item (``collection/{key}``); ``actions`` maps each sub-path of an item to its HTTP
    method and handler. ``wrap`` turns a service method into a route handler."""
    create, listing, retrieve, delete = handlers
    one = f"{collection}/{{{key}}}"
    table = [
        (collection, "POST", create),
        (collection, "GET", listing),
        (one, "GET", retrieve),
        (one, "DELETE", delete),
    ]
    table += [(f"{one}/{action}", verb, method) for action, (verb, method) in actions.items()]
    return [(path, wrap(method), [verb]) for path, verb, method in table]


_ALPHABET = string.ascii_letters + string.digits
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}\Z")
_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
#: The API's limits: requests per batch and bytes per create request.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
#: Batches the emulator keeps (it is in memory): past this the oldest is forgotten.
MAX_BATCHES = 10_000
_DAY = 24 * 3600.0
_JSONL = "application/binary"
_NOT_JSON = object()


def api_id(prefix: str) -> str:
    """An id shaped like the API's (``msgbatch_01…``, ``file_011C…``): prefix, ``01``, 22 characters."""
    return prefix + "01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


def iso(moment: float | None) -> str | None:
    """An RFC 3339 UTC timestamp with microseconds and ``Z``, as the API writes them."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def base_of(request: Request) -> str:
    """The URL the client used up to ``/v1`` (fault-plan prefix included)."""
    path = request.url.path
    prefix = path[: path.find("/v1/")] if "/v1/" in path else ""
    return str(request.base_url).rstrip("/") + prefix


def page_limit(request: Request) -> int:
    """The ``limit`` query parameter (default 20, 1-1000)."""
    try:
        limit = int(request.query_params.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
    return limit


#: A service's handler of one route: ``(request, request_id, raw body, parsed body)`` -> script.
ServiceMethod = Callable[[Request, str, bytes, Any], list[Step]]


def service_handler(state: EmulatorState, method: ServiceMethod, *, json_body: bool) -> Handler:
    """The route handler of a service method: it reads the body (and parses it as JSON with
    ``json_body``; ``None`` without), checks the key, answers an :class:`ApiError` with its
    error script, and records the exchange."""

    async def handler(request: Request, request_id: str) -> Sequence[Step]:
        received = time.monotonic()
        raw = await request.body()
        body: Any = None
        if json_body:
            try:
                body = json.loads(raw) if raw else _NOT_JSON
            except (ValueError, RecursionError):
                body = _NOT_JSON
        try:
            state.authenticate(request)
            steps = method(request, request_id, raw, body)
        except ApiError as exc:
            steps = api_error_script(exc, request_id)
        record(state, request, steps, body, received)
        return steps

    return handler


def record(state: EmulatorState, request: Request, steps: Sequence[Step], body: Any, received: float) -> None:
    """Log a request that consumed no fault-plan entry."""
    status = next((step.status for step in steps if isinstance(step, Start)), 0)
    request_id = next((dict(s.headers).get("request-id", "") for s in steps if isinstance(s, Start)), "")
    state.recorder.add(
        RecordedRequest(
            method=request.method,
            path=request.url.path,
            run=request.path_params.get("run"),
            fault=None,
            status=status,
            body=None if body is _NOT_JSON else body,
            headers=redact_headers(request.headers.items()),
            received=received,
            request_id=request_id,
        )
    )


@dataclass
class _Batch:
    """One batch and what became of it."""

    id: str
    created: float
    ready_at: float
    requests: list[tuple[str, dict[str, Any]]]
    headers: list[tuple[bytes, bytes]]
    run: str | None
    cancel_at: float | None = None
    ended_at: float | None = None
    results: list[dict[str, Any]] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def status(self) -> str:
        if self.results is not None:
            return "ended"
        return "canceling" if self.cancel_at is not None else "in_progress"


class BatchService:
    """The batch store and its route handlers, bound to one emulator state."""

    def __init__(self, state: EmulatorState, answer: AnswerFn, *, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._answer = answer
        self._clock = clock
        self._lock = threading.Lock()
        self._batches: dict[str, _Batch] = {}

    def routes(self) -> list[Route3]:
        """The routes this service answers."""
        actions = {"cancel": ("POST", self.cancel), "results": ("GET", self.results)}
        handlers = (self.create, self.listing, self.retrieve, self.delete)
        return resource_routes("/v1/messages/batches", "batch_id", self._wrap, handlers, actions)

    def _wrap(self, method: ServiceMethod) -> Handler:
        return service_handler(self._state, method, json_body=True)

    # --- the endpoints -------------------------------------------------------------

    def create(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``POST /v1/messages/batches``."""
        if len(raw) > MAX_BYTES:
            raise ApiError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
        if body is _NOT_JSON:
            raise _invalid("There was an error parsing the body of your request as JSON.")
        requests = _check_create(body)
        now = self._clock()
        seconds = self._state.scenario.batch_seconds
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in (b"content-length", b"content-type")]
        batch = _Batch(api_id("msgbatch_"), now, now + seconds, requests, headers, request.path_params.get("run"))
        with self._lock:
            self._batches[batch.id] = batch
            while len(self._batches) > MAX_BATCHES:
                del self._batches[next(iter(self._batches))]
        return json_script(200, self._json(batch, request), request_id)

    def retrieve(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``GET /v1/messages/batches/{id}``."""
        return json_script(200, self._json(self._advance(request), request), request_id)

    def cancel(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``POST /v1/messages/batches/{id}/cancel``: ``canceling`` unless it has ended."""
        batch = self._advance(request)
        with self._lock:
            if batch.results is None and batch.cancel_at is None:
                batch.cancel_at = self._clock()
        return json_script(200, self._json(batch, request), request_id)

    def delete(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``DELETE /v1/messages/batches/{id}``: only once it has ended."""
        batch = self._advance(request)
        if batch.results is None:
            raise _invalid(f"Message Batch {batch.id} cannot be deleted while it is processing; cancel it first.")
        with self._lock:
            self._batches.pop(batch.id, None)
        return json_script(200, {"id": batch.id, "type": "message_batch_deleted"}, request_id)

    def results(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``GET /v1/messages/batches/{id}/results``: JSONL, one result per line, request order."""
        batch = self._advance(request)
        if batch.results is None:
            raise _invalid(f"Message Batch {batch.id} has not ended yet; results are available once it has.")
        data = "".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in batch.results)
        payload = data.encode()
        headers = (("content-type", _JSONL), ("content-length", str(len(payload))), ("request-id", request_id))
        return [Start(200, headers), Body(payload)]

    def listing(self, request: Request, request_id: str, raw: bytes, body: Any) -> list[Step]:
        """``GET /v1/messages/batches``: newest first, by ``after_id`` / ``before_id``."""
        limit = page_limit(request)
        with self._lock:
            batches = sorted(self._batches.values(), key=lambda b: b.created, reverse=True)
        for batch in batches:
            self._finish_if_due(batch)
        page, has_more = paginate([b.id for b in batches], request.query_params, limit)
        by_id = {b.id: b for b in batches}
        payload = {
            "data": [self._json(by_id[i], request) for i in page],
            "has_more": has_more,
            "first_id": page[0] if page else None,
            "last_id": page[-1] if page else None,
        }
        return json_script(200, payload, request_id)

    # --- processing ------------------------------------------------------------------

    def _advance(self, request: Request) -> _Batch:
        batch_id = request.path_params["batch_id"]
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, "not_found_error", f"message_batch: {batch_id}")
        self._finish_if_due(batch)
        return batch

    def _finish_if_due(self, batch: _Batch) -> None:
        """End the batch if it was canceled or its processing time has passed."""
        with self._lock:
            if batch.results is not None:
                return
            now = self._clock()
            if batch.cancel_at is not None:
                results: list[dict[str, Any]] = [
                    {"custom_id": cid, "result": {"type": "canceled"}} for cid, _ in batch.requests
                ]
            elif now >= batch.ready_at:
                results = [{"custom_id": cid, "result": self._process(batch, params)} for cid, params in batch.requests]
            else:
                return
            batch.results = results
            batch.ended_at = now if batch.cancel_at is not None else batch.ready_at
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            for result in results:
                counts[result["result"]["type"]] += 1
            batch.counts = counts

    def _process(self, batch: _Batch, params: dict[str, Any]) -> dict[str, Any]:
        """One request's result: the Messages API's answer, at batch shapes."""
        if params.get("stream") is True:
            return _errored("invalid_request_error", "stream: Streaming is not supported in the Message Batches API.")
        scope: dict[str, Any] = {
            "type": "http",
            "method": "POST",
            "path": "/v1/messages",
            "raw_path": b"/v1/messages",
            "query_string": b"",
            "headers": [*batch.headers, (b"content-type", b"application/json")],
            "path_params": {} if batch.run is None else {"run": batch.run},
        }
        raw = json.dumps(params).encode()
        steps, _ = self._answer(Request(scope), "req_batch", raw, params, OK)
        status = next((step.status for step in steps if isinstance(step, Start)), 500)
        data = b"".join(step.data for step in steps if isinstance(step, Body))
        cut = any(isinstance(step, Cut) for step in steps)
        try:
            payload = json.loads(data)
        except ValueError:
            payload = None
        if status == 200 and not cut and isinstance(payload, dict) and payload.get("type") == "message":
            usage = payload.get("usage")
            if isinstance(usage, dict):
                usage["service_tier"] = "batch"
            return {"type": "succeeded", "message": payload}
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict) and "type" in error:
            return {"type": "errored", "error": {"type": "error", "error": error}}
        return _errored("api_error", "Internal server error")

    def _json(self, batch: _Batch, request: Request) -> dict[str, Any]:
        with self._lock:
            status = batch.status()
            counts = dict(batch.counts) if batch.results is not None else _processing(len(batch.requests))
        ended = batch.results is not None
        results_url = f"{base_of(request)}/v1/messages/batches/{batch.id}/results" if ended else None
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": iso(batch.ended_at),
            "created_at": iso(batch.created),
            "expires_at": iso(batch.created + _DAY),
            "archived_at": None,
            "cancel_initiated_at": iso(batch.cancel_at),
            "results_url": results_url,
        }


def _processing(total: int) -> dict[str, int]:
    return {"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


def _errored(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": error_type, "message": message}}}


def _check_create(body: Any) -> list[tuple[str, dict[str, Any]]]:
    """The ``(custom_id, params)`` pairs of a create body; raise a 400 for a bad one."""
    if not isinstance(body, dict):
        raise _invalid("Input should be a valid dictionary")
    only(body, frozenset({"requests"}), "")
    requests = required(body, "requests", "list")
    if not requests:
        raise _invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > MAX_REQUESTS:
        raise _invalid(f"requests: List should have at most {MAX_REQUESTS} items after validation, not {len(requests)}")
    seen: set[str] = set()
    pairs: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        typed(item, "dictionary", where)
        only(item, frozenset({"custom_id", "params"}), where)
        for key in ("custom_id", "params"):
            if key not in item:
                raise _invalid(f"{where}.{key}: Field required")
        custom_id: str = typed(item["custom_id"], "string", f"{where}.custom_id")
        params: dict[str, Any] = item["params"]
        if not _CUSTOM_ID.match(custom_id):
            raise _invalid(f"{where}.custom_id: String should match pattern '{_PATTERN}'")
        if custom_id in seen:
            raise _invalid(f"Duplicate custom_id {custom_id!r}: each request in a batch needs a unique custom_id.")
        typed(params, "dictionary", f"{where}.params")
        seen.add(custom_id)
        pairs.append((custom_id, params))
    return pairs


def paginate(ids: Sequence[str], params: Mapping[str, str], limit: int) -> tuple[list[str], bool]:
    """One page of ``ids`` (newest first) by ``after_id`` / ``before_id``, and whether more remain."""
    start, end = 0, len(ids)
    if "after_id" in params:
        start = ids.index(params["after_id"]) + 1 if params["after_id"] in ids else len(ids)
        end = min(len(ids), start + limit)
        return list(ids[start:end]), end < len(ids)
    if "before_id" in params:
        end = ids.index(params["before_id"]) if params["before_id"] in ids else 0
        start = max(0, end - limit)
        return list(ids[start:end]), start > 0
    end = min(len(ids), limit)
    return list(ids[:end]), end < len(ids)
