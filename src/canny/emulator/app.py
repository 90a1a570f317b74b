"""The emulator's Starlette application: routes, auth, fault selection and recording.

Routes (each also under a fault-plan prefix ``/x/{run}/{plan}``, and each also with a
trailing slash; the list is :data:`ROUTES`):

- ``POST /v1/messages``: streamed or not, with the fault for this request applied;
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": N}``;
- ``GET /v1/models`` and ``GET /v1/models/{model_id}``;
- ``GET /v1/organizations/usage_report/messages`` and ``GET /v1/organizations/cost_report``:
  the Usage and Cost Admin API over the requests answered (:mod:`canny.emulator.admin`).

Every request needs a key and an ``anthropic-version`` header (the API's 401 and 400
otherwise); every response carries ``request-id`` and the ``anthropic-ratelimit-*``
headers of its run (:mod:`canny.emulator.ratelimits`).

Which fault a ``/v1/messages`` request gets: under ``/x/{run}/{plan}``, the N-th request
of that run gets the N-th fault of the comma-separated plan, then ``ok``; without a
prefix, the server's :class:`~canny.emulator.scenario.Scenario` decides. When that says
``ok``, a ``[[fault=SPEC]]`` directive in the prompt may still pick one. Only
``/v1/messages`` consumes plan entries; the other endpoints always answer normally.
"""

from __future__ import annotations

import functools
import hmac
import json
import math
import random
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from canny.emulator import admin
from canny.emulator.batches import BatchService
from canny.emulator.cache import PromptCache, prompt_blocks
from canny.emulator.faults import OK, Fault, parse_fault, parse_plan
from canny.emulator.files import FileService
from canny.emulator.models import MODELS, resolve_model
from canny.emulator.ratelimits import RateWindow
from canny.emulator.recorder import RecordedRequest, Recorder, redact_headers
from canny.emulator.replay import replay_script
from canny.emulator.responses import (
    Answer,
    api_error_script,
    compose_answer,
    error_body,
    json_script,
    message_script,
    new_id,
    status_fault_script,
)
from canny.emulator.scenario import RateLimits, Scenario
from canny.emulator.threads import ThreadStore, keeps_reply
from canny.emulator.tokens import Directives, parse_directives
from canny.emulator.tools import plan_calls
from canny.emulator.validation import (
    LATEST_VERSION,
    ApiError,
    MessagesRequest,
    check_context_window,
    check_version,
    validate_messages,
)
from canny.emulator.wire import TRANSPORT_KEY, Start, Step, find_transport, play

__all__ = ["ROUTES", "EmulatorApp", "EmulatorState", "create_app"]

#: The Messages API's request size limit.
MAX_BODY_BYTES = 32 * 1024 * 1024
_NOT_JSON = object()

Handler = Callable[[Request, str], Awaitable[Sequence[Step]]]


@functools.lru_cache(maxsize=256)
def _plan(text: str) -> tuple[Fault, ...]:
    return parse_plan(text)


class EmulatorState:
    """Everything the server remembers: config, request log, counters, prompt caches."""

    def __init__(self, scenario: Scenario | None, api_key: str | None, chunk_delay: float) -> None:
        if chunk_delay < 0:
            raise ValueError(f"chunk_delay must not be negative, not {chunk_delay!r}")
        self.scenario = scenario or Scenario()
        self.api_key = api_key
        self.chunk_delay = chunk_delay
        self.recorder = Recorder()
        #: What the answered requests billed, for the Admin API's usage and cost reports.
        self.usage = admin.UsageBook()
        #: Set when the server starts shutting down: pauses end, stalled streams are cut.
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._rng = random.Random(self.scenario.seed)
        self._caches: dict[str | None, PromptCache] = {}
        self._threads: dict[str | None, ThreadStore] = {}
        self._windows: dict[str | None, RateWindow] = {}
        self.rate_limits = self.scenario.rate_limits or RateLimits()

    def window_for(self, run: str | None) -> RateWindow:
        """The rate-limit window of a run (``None``: the unprefixed server-wide one)."""
        with self._lock:
            window = self._windows.get(run)
            if window is None:
                window = self._windows[run] = RateWindow(self.rate_limits)
            return window

    def cache_for(self, run: str | None) -> PromptCache:
        """The prompt cache of a run (``None``: the unprefixed server-wide cache)."""
        with self._lock:
            return self._caches.setdefault(run, PromptCache())

    def threads_for(self, run: str | None) -> ThreadStore:
        """The held message threads of a run (``None``: the unprefixed server-wide store)."""
        with self._lock:
            return self._threads.setdefault(run, ThreadStore())

    def fault_for(self, run: str | None, plan: str | None) -> tuple[Fault, int]:
        """Claim the next ``/v1/messages`` number for ``run`` and return its fault."""
        with self._lock:
            index = self.recorder.next_index(run)
            if run is not None and plan is not None:
                faults = _plan(plan)
                return (faults[index] if index < len(faults) else OK), index
            return self.scenario.fault_for(index, self._rng.random), index

    def authenticate(self, request: Request, *, versioned: bool = True) -> str:
        """Accept ``x-api-key`` or ``Authorization: Bearer`` (else a 401 :class:`ApiError`),
        then return the ``anthropic-version`` (else the API's 400; the Models API does not
        insist: ``versioned=False``)."""
        key = request.headers.get("x-api-key", "")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if not key and scheme.lower() == "bearer":
            key = token.strip()
        if not key:
            raise ApiError(401, "authentication_error", "x-api-key header is required")
        if self.api_key is not None and not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise ApiError(401, "authentication_error", "invalid x-api-key")
        version = request.headers.get("anthropic-version")
        return check_version(version) if versioned or version is not None else LATEST_VERSION


#: On every answer, so a client can tell the emulator from the API (canny tags such
#: attempts ``offline``, and ``canny report --exclude-offline`` leaves them out).
EMULATOR_HEADER = {"canny-emulator": "1"}


class EmulatorApp(Starlette):
    """A Starlette app that hands each connection's transport to the response scripts."""

    emulator: EmulatorState

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[TRANSPORT_KEY] = find_transport(send)
        await super().__call__(scope, receive, send)


class _Endpoint:
    """A raw ASGI endpoint: run the handler, then play its script."""

    def __init__(self, state: EmulatorState, handler: Handler) -> None:
        self._state = state
        self._handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = new_id("req_")
        steps = await self._handler(request, request_id)
        extra = {**self._state.window_for(request.path_params.get("run")).headers(), **EMULATOR_HEADER}
        steps = [_with_headers(step, extra) if isinstance(step, Start) else step for step in steps]
        await play(steps, scope, receive, send, self._state.closing)


def _with_headers(start: Start, extra: dict[str, str]) -> Start:
    return Start(start.status, (*start.headers, *extra.items()))


def _status_of(steps: Sequence[Step]) -> int:
    return next((step.status for step in steps if isinstance(step, Start)), 0)


class _Handlers:
    """The request handlers, bound to one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def _record(
        self, request: Request, steps: Sequence[Step], *, fault: Fault | None, body: Any, index: int | None = None
    ) -> None:
        run = request.path_params.get("run")
        self.state.recorder.add(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                run=run,
                fault=None if fault is None else str(fault),
                status=_status_of(steps),
                body=None if body is _NOT_JSON else body,
                headers=redact_headers(request.headers.items()),
                received=request.state.received,
                request_id=_request_id(steps),
                index=index,
            )
        )

    async def _read(self, request: Request) -> tuple[bytes, Any]:
        request.state.received = time.monotonic()
        raw = await request.body()
        try:
            return raw, json.loads(raw) if raw else _NOT_JSON
        except (ValueError, RecursionError):
            return raw, _NOT_JSON

    async def messages(self, request: Request, request_id: str) -> Sequence[Step]:
        """``POST /v1/messages``."""
        raw, body = await self._read(request)
        run = request.path_params.get("run")
        try:
            version = self.state.authenticate(request)
        except ApiError as exc:
            steps = api_error_script(exc, request_id)
            self._record(request, steps, fault=None, body=body)
            return steps
        wait = self.state.window_for(run).admit()
        if wait is not None:
            steps = _rate_limited(request_id, wait, self.state.rate_limits)
            self._record(request, steps, fault=None, body=body)
            return steps
        try:
            fault, index = self.state.fault_for(request.path_params.get("run"), request.path_params.get("plan"))
        except ValueError as exc:
            steps = api_error_script(ApiError(400, "invalid_request_error", f"emulator fault plan: {exc}"), request_id)
            self._record(request, steps, fault=None, body=body)
            return steps
        steps, fault = self._answer(request, request_id, raw, body, fault, version)
        self._record(request, steps, fault=fault, body=body, index=index)
        return steps

    def _answer(
        self,
        request: Request,
        request_id: str,
        raw: bytes,
        body: Any,
        fault: Fault,
        version: str,
        tier: str = "standard",
    ) -> tuple[list[Step], Fault]:
        """The response script, and the fault applied (a prompt directive may have picked it)."""
        if fault.kind == "status":
            return status_fault_script(fault, request_id), fault
        threads = self.state.threads_for(request.path_params.get("run"))
        turn = None
        try:
            if fault.kind == "replay":
                return replay_script(fault, request_id), fault
            if isinstance(body, dict):
                body, turn = threads.expand(body, request.headers.get("anthropic-beta", ""))
            parsed = _parse(raw, body, version=version)
            directives, fault = _directives(parsed.last_user_text(), fault)
            if fault.kind == "status":
                return status_fault_script(fault, request_id), fault
            if fault.kind == "replay":  # a prompt must not make the server read its files
                raise ApiError(400, "invalid_request_error", "emulator directive: replay is for scenario files only")
            calls = plan_calls(parsed)
            blocks = prompt_blocks(parsed)
            check_context_window(parsed, sum(block.tokens for block in blocks))
            usage = self.state.cache_for(request.path_params.get("run")).charge(blocks)
            answer = compose_answer(parsed, fault, directives, usage, calls)
        except ApiError as exc:
            return api_error_script(exc, request_id), fault
        window = self.state.window_for(request.path_params.get("run"))
        window.charge(usage.input_tokens + usage.cache_creation, answer.output_tokens)
        message_id = new_id("msg_")
        self.state.usage.add(_charge(request, parsed, answer, tier))  # the Admin API's books
        if turn is not None and keeps_reply(fault.kind):
            threads.hold(turn, message_id, answer.content())
        return message_script(answer, parsed, fault, request_id, self.state.chunk_delay, message_id), fault

    async def _json_endpoint(
        self, request: Request, request_id: str, answer: Callable[[Any], Any], *, keep_body: bool = False
    ) -> Sequence[Step]:
        """A JSON endpoint: read the body, ``answer(body)`` (which authenticates), a 200 with
        what it returns or the API's error for the :class:`ApiError` it raises, recorded."""
        raw, body = await self._read(request)
        try:
            steps = json_script(200, answer(_Body(raw, body)), request_id)
        except ApiError as exc:
            steps = api_error_script(exc, request_id)
        self._record(request, steps, fault=None, body=body if keep_body else _NOT_JSON)
        return steps

    async def count_tokens(self, request: Request, request_id: str) -> Sequence[Step]:
        """``POST /v1/messages/count_tokens``: the cache-free input total."""

        def answer(sent: _Body) -> dict[str, int]:
            version = self.state.authenticate(request)
            parsed = _parse(sent.raw, sent.body, count_only=True, version=version)
            return {"input_tokens": sum(block.tokens for block in prompt_blocks(parsed))}

        return await self._json_endpoint(request, request_id, answer, keep_body=True)

    async def list_models(self, request: Request, request_id: str) -> Sequence[Step]:
        """``GET /v1/models``: newest first, paginated by ``after_id`` / ``before_id``."""

        def answer(_: _Body) -> dict[str, Any]:
            self.state.authenticate(request, versioned=False)
            return _model_page(request)

        return await self._json_endpoint(request, request_id, answer)

    async def get_model(self, request: Request, request_id: str) -> Sequence[Step]:
        """``GET /v1/models/{model_id}`` (aliases resolve to the dated id)."""

        def answer(_: _Body) -> dict[str, Any]:
            self.state.authenticate(request, versioned=False)
            model_id = request.path_params["model_id"]
            info = resolve_model(model_id)
            if info is None:
                raise ApiError(404, "not_found_error", f"model: {model_id}")
            return info.to_json()

        return await self._json_endpoint(request, request_id, answer)

    async def admin_report(self, request: Request, request_id: str) -> Sequence[Step]:
        """``GET /v1/organizations/usage_report/messages`` and ``.../cost_report``."""
        report = admin.cost_report if request.url.path.rstrip("/").endswith("cost_report") else admin.usage_report

        def answer(_: _Body) -> Any:
            admin.check_admin_key(request.headers.get("x-api-key", ""))
            return report(self.state.usage, request.query_params)

        return await self._json_endpoint(request, request_id, answer)


@dataclass(frozen=True, slots=True)
class _Body:
    """A request body as read: its bytes, and its JSON (``_NOT_JSON`` when it is not JSON)."""

    raw: bytes
    body: Any


def _charge(request: Request, parsed: MessagesRequest, answer: Answer, tier: str) -> admin.Charge:
    """What one answered request bills, for :mod:`canny.emulator.admin`."""
    usage = answer.usage
    tokens = {
        "uncached_input_tokens": usage.input_tokens + answer.server_input,
        "cache_creation.ephemeral_5m_input_tokens": usage.cache_write_5m,
        "cache_creation.ephemeral_1h_input_tokens": usage.cache_write_1h,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": answer.output_tokens,
    }
    model = parsed.model
    return admin.Charge(
        at=datetime.now(UTC),
        model=model.id,
        display_name=model.display_name,
        api_key_id=admin.admin_key_id(request.headers.get("x-api-key", "")),
        tokens=tokens,
        web_search_requests=int((answer.server_counts or {}).get("web_search_requests", 0)),
        service_tier=tier,
        inference_geo="us" if parsed.raw.get("inference_geo") == "us" else "global",
        geo_priced=model.generation >= 4.6,
    )


def _request_id(steps: Sequence[Step]) -> str:
    """The ``request-id`` header of a script."""
    for step in steps:
        if isinstance(step, Start):
            return dict(step.headers).get("request-id", "")
    return ""


def _directives(prompt: str, fault: Fault) -> tuple[Directives, Fault]:
    """The prompt's directives, and the fault once ``[[fault=...]]`` is applied."""
    try:
        directives = parse_directives(prompt)
        if fault == OK and directives.fault:
            fault = parse_fault(directives.fault)
    except ValueError as exc:
        raise ApiError(400, "invalid_request_error", f"emulator directive: {exc}") from None
    return directives, fault


def _rate_limited(request_id: str, wait: float, limits: RateLimits) -> list[Step]:
    """The 429 of a spent rate-limit budget: ``retry-after`` until the window resets."""
    message = (
        f"This request would exceed the rate limit for your organization of {limits.requests} requests, "
        f"{limits.input_tokens} input tokens and {limits.output_tokens} output tokens per "
        f"{format(limits.window, 'g')} seconds (emulator scenario). Please try again later."
    )
    headers = {"retry-after": str(max(1, math.ceil(wait))), "x-should-retry": "true"}
    return json_script(429, error_body("rate_limit_error", message, request_id), request_id, headers)


def _parse(raw: bytes, body: Any, *, count_only: bool = False, version: str = LATEST_VERSION) -> MessagesRequest:
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
    if body is _NOT_JSON:
        raise ApiError(400, "invalid_request_error", "There was an error parsing the body of your request as JSON.")
    return validate_messages(body, count_only=count_only, version=version)


def _model_page(request: Request) -> dict[str, Any]:
    params = request.query_params
    try:
        limit = int(params.get("limit", "20"))
    except ValueError:
        raise ApiError(400, "invalid_request_error", "limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise ApiError(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
    wanted = {v for key in ("lifecycle", "lifecycle[]") for raw in params.getlist(key) for v in raw.split(",") if v}
    wanted = wanted or {"active", "deprecated"}
    models = [info for info in MODELS.values() if info.lifecycle in wanted]
    ids = [info.id for info in models]
    start, end = 0, len(models)
    if "after_id" in params:
        start = ids.index(params["after_id"]) + 1 if params["after_id"] in ids else len(ids)
        end = min(len(models), start + limit)
    elif "before_id" in params:
        end = ids.index(params["before_id"]) if params["before_id"] in ids else 0
        start = max(0, end - limit)
    else:
        end = min(len(models), limit)
    page = models[start:end]
    has_more = end < len(models) if "before_id" not in params else start > 0
    return {
        "data": [info.to_json() for info in page],
        "has_more": has_more,
        "first_id": page[0].id if page else None,
        "last_id": page[-1].id if page else None,
    }


async def _http_error(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    error_type = {404: "not_found_error", 405: "invalid_request_error"}.get(status, "api_error")
    message = {404: "Not Found", 405: "Method Not Allowed"}.get(status, "Internal server error")
    request_id = new_id("req_")
    body = json.dumps(error_body(error_type, message, request_id), separators=(",", ":"))
    headers = {"request-id": request_id}
    state = getattr(request.app, "emulator", None)
    if isinstance(state, EmulatorState):
        headers.update(state.window_for(None).headers())
    return Response(body, status_code=status, media_type="application/json", headers=headers)


#: Every endpoint: (method, path, handler method of ``_Handlers``). Each is also served with
#: a trailing slash and under ``/x/{run}/{plan}``.
ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "/v1/messages", "messages"),
    ("POST", "/v1/messages/count_tokens", "count_tokens"),
    ("GET", "/v1/models", "list_models"),
    ("GET", "/v1/models/{model_id}", "get_model"),
    ("GET", "/v1/organizations/usage_report/messages", "admin_report"),
    ("GET", "/v1/organizations/cost_report", "admin_report"),
)


def create_app(
    scenario: Scenario | None = None, *, api_key: str | None = None, chunk_delay: float = 0.0
) -> EmulatorApp:
    """The emulator as an ASGI app (serve it with uvicorn; see :func:`serve_in_thread`).

    ``scenario`` scripts unprefixed requests; ``api_key``, when given, is the only key
    accepted (otherwise any non-empty key is); ``chunk_delay`` is the pause in seconds
    between streamed text deltas.
    """
    state = EmulatorState(scenario, api_key, chunk_delay)
    handlers = _Handlers(state)
    v1 = [
        Route(path + slash, _Endpoint(state, getattr(handlers, name)), methods=[method])
        for method, path, name in ROUTES
        for slash in ("", "/")
    ]

    # Message Batches and Files (canny.emulator.batches / .files).
    def batch_answer(
        request: Request, request_id: str, raw: bytes, body: Any, fault: Fault
    ) -> tuple[list[Step], Fault]:
        """A batch's request, answered under the version its batch was created with."""
        version = request.headers.get("anthropic-version") or LATEST_VERSION
        return handlers._answer(request, request_id, raw, body, fault, version, tier="batch")

    extra = (*BatchService(state, batch_answer).routes(), *FileService(state).routes())
    v1 += [Route(path, _Endpoint(state, handler), methods=methods) for path, handler, methods in extra]
    app = EmulatorApp(
        routes=[*v1, Mount("/x/{run}/{plan}", routes=v1)],
        exception_handlers={404: _http_error, 405: _http_error},
    )
    app.emulator = state
    return app
