"""The one boundary where SDK, transport and in-band stream errors become canny errors.

Every call path (sync, async, streamed, not streamed, and the iteration of a stream,
where the SDK lets raw ``httpx2`` errors escape) goes through :func:`translate`, so
``except canny.errors.APIError`` catches everything the network or the API can do.
Messages are built from the status, the API's ``error.type`` / ``error.message`` and the
request id, and scrubbed of anything key-shaped: never from request headers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from canny import errors
from canny.retry import error_class, event_error_class, parse_retry_after
from canny.secrets import redact

if TYPE_CHECKING:
    from canny.pricing import PriceTable

__all__ = ["Retirement", "error_from_event", "error_from_response", "map_exception", "retirement", "translate"]

#: The API's ``not_found_error`` message for a model it does not serve: ``model: <id>``.
_MODEL_NOT_FOUND = re.compile(r"model:\s*(\S+)")


@dataclass(frozen=True, slots=True)
class Retirement:
    """A model the price table knows as retired, and what to use instead."""

    model: str
    retired_on: date | None
    use: str | None

    def __str__(self) -> str:
        when = f" on {self.retired_on.isoformat()}" if self.retired_on else ""
        return f"{self.model} was retired{when}"

    @property
    def advice(self) -> str:
        first = f"use {self.use} instead; " if self.use else ""
        return first + "`canny models` lists the current models"


def retirement(model: str, *, today: date | None = None, table: PriceTable | None = None) -> Retirement | None:
    """The retirement of ``model`` (id or alias) if the price table knows it as retired by
    ``today``; ``None`` otherwise, also when the table cannot be read. The suggested
    replacement is the newest active model of the same line."""
    try:
        from canny.pricing import known_models, model_info, resolve_model

        resolved = resolve_model(model, table=table)
        info = model_info(resolved, table=table)
        if info is None or not info.is_retired(today or date.today()):
            return None
        current = [
            m for m in known_models(table=table) if m.status == "active" and m.family and m.family == info.family
        ]
        newest = max(current, key=lambda m: m.released or date.min, default=None)
    except errors.ConfigError:
        return None
    return Retirement(resolved, info.retires_at, newest.id if newest is not None else None)


_STATUS_WORDS = {
    400: "request rejected",
    401: "authentication failed",
    402: "billing problem",
    403: "permission denied",
    404: "not found",
    408: "request timed out",
    409: "conflict",
    413: "request too large",
    422: "request unprocessable",
    429: "rate limited",
    500: "API error",
    502: "bad gateway",
    503: "service unavailable",
    504: "gateway timeout",
    529: "API overloaded",
}


def _error_fields(body: Any) -> tuple[str | None, str | None, str | None]:
    """(error.type, error.message, error.details.error_code) from an error body."""
    if not isinstance(body, Mapping):
        return None, None, None
    err = body.get("error")
    if not isinstance(err, Mapping):
        return None, None, None
    details = err.get("details")
    code = details.get("error_code") if isinstance(details, Mapping) else None
    etype, message = err.get("type"), err.get("message")
    return (
        str(etype) if etype is not None else None,
        str(message) if message is not None else None,
        str(code) if code is not None else None,
    )


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    for key, value in headers.items():
        if key.lower() == "x-should-retry":
            return value.strip().lower() == "true"
    return None


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _redirect(status: int, headers: Mapping[str, str]) -> errors.RequestRejected:
    """A 3xx: canny follows no redirect, so the prompt and key are not re-sent elsewhere."""
    location = redact(_header(headers, "location") or "")[:300]
    where = f" to {location}" if location else " without a Location"
    return errors.RequestRejected(
        f"the base URL answered {status} with a redirect{where}; canny does not follow redirects",
        status_code=status,
        error_type="redirect",
        request_id=_header(headers, "request-id"),
        should_retry=False,
        hint="point the base URL at the address that answers the API itself, if you trust it",
    )


def error_from_response(status: int, body: Any, headers: Mapping[str, str]) -> errors.APIError:
    """Map an HTTP error response to the right canny error."""
    if 300 <= status < 400:
        return _redirect(status, headers)
    etype, api_message, code = _error_fields(body)
    request_id = headers.get("request-id") or (body.get("request_id") if isinstance(body, Mapping) else None)
    if status == 404 and etype == "not_found_error" and api_message:
        found = _MODEL_NOT_FOUND.fullmatch(api_message.strip())
        gone = retirement(found.group(1)) if found else None
        if gone is not None:
            return errors.RequestRejected(
                redact(f"{gone}: the API no longer serves it (404 not_found_error: {api_message.strip()})"),
                status_code=status,
                error_type=etype,
                error_code=code,
                request_id=str(request_id) if request_id else None,
                should_retry=False,
                hint=gone.advice,
            )
    word = _STATUS_WORDS.get(status, f"HTTP {status}")
    detail = api_message or (etype or "")
    if not detail and isinstance(body, str) and body.strip() and not body.lstrip().startswith("<"):
        detail = body.strip()[:200]
    message = redact(f"{word} ({status}{' ' + etype if etype else ''})" + (f": {detail}" if detail else ""))
    kwargs: dict[str, Any] = {
        "status_code": status,
        "error_type": etype,
        "error_code": code,
        "request_id": str(request_id) if request_id else None,
        "retry_after": parse_retry_after(headers),
        "should_retry": _should_retry_header(headers),
    }
    return error_class(status, etype, code)(message, **kwargs)


def error_from_event(payload: Mapping[str, Any], request_id: str | None) -> errors.APIError:
    """Map an in-band ``event: error`` (HTTP status 200) to a canny error."""
    etype, api_message, code = _error_fields(payload)
    text = redact(f"stream error ({etype or 'unknown'})" + (f": {api_message}" if api_message else ""))
    kwargs: dict[str, Any] = {
        "status_code": 200,
        "error_type": etype,
        "error_code": code,
        "request_id": request_id,
    }
    return event_error_class(etype)(text, **kwargs)


def map_exception(exc: BaseException) -> errors.CannyError | None:
    """The canny error for an SDK or ``httpx2`` exception; ``None`` if it is neither."""
    if isinstance(exc, errors.CannyError):
        return exc
    try:
        import anthropic
        import httpx2
    except ImportError:  # pragma: no cover - both are dependencies
        return None
    if isinstance(exc, anthropic.APIStatusError):
        return error_from_response(exc.status_code, exc.body, exc.response.headers)
    if isinstance(exc, anthropic.APITimeoutError):
        return errors.TimeoutError("the request timed out before the API answered", phase="first_event")
    if isinstance(exc, anthropic.APIConnectionError):
        cause = exc.__cause__
        if isinstance(cause, httpx2.TransportError) and not isinstance(cause, httpx2.ConnectError):
            # the connection was made: a timeout, a drop or a reset, not "could not connect"
            return map_exception(cause)
        reason = type(cause).__name__ if cause is not None else "connection error"
        return errors.ConnectionFailed(f"could not connect to the API ({reason})")
    if isinstance(exc, httpx2.TimeoutException):
        return _timeout(exc)
    if isinstance(exc, httpx2.RemoteProtocolError):
        return errors.ConnectionFailed("the connection was closed before the response was complete")
    if isinstance(exc, (httpx2.ReadError, httpx2.WriteError)):
        return errors.ConnectionFailed("the connection was reset")
    if isinstance(exc, httpx2.TransportError):
        return errors.ConnectionFailed(f"network failure ({type(exc).__name__})")
    return None


def _timeout(exc: BaseException) -> errors.TimeoutError:
    import httpx2

    if isinstance(exc, httpx2.ConnectTimeout):
        return errors.TimeoutError("timed out connecting to the API", phase="connect")
    if isinstance(exc, httpx2.PoolTimeout):
        return errors.TimeoutError("timed out waiting for a free connection", phase="connect")
    return errors.TimeoutError("no data from the API within the timeout", phase="idle")


@contextmanager
def translate() -> Iterator[None]:
    """Re-raise SDK and transport errors as canny errors, cut from the original.

    The SDK's exception keeps the request (its headers hold the key) and the raw error
    body (a proxy or gateway may echo the key in it), so it is neither the ``__cause__``
    nor the ``__context__`` of the canny error: what is useful (status, error type, request
    id, a scrubbed message) is on the canny error's attributes.
    """
    try:
        yield
    except errors.CannyError:
        raise
    except Exception as exc:
        mapped = map_exception(exc)
        if mapped is None:
            raise
        try:
            raise mapped from None
        finally:
            mapped.__context__ = None  # set by the raise above; nothing of the SDK error stays
