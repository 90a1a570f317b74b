"""The fault catalogue: every way the emulator can misbehave, as data.

A *fault spec* (:class:`FaultSpec`) names a behaviour and its defaults; a *fault*
(:class:`Fault`) is a spec plus the parameters one request asked for. Faults are written
as ``name;key=value;key=value`` (in URL fault plans, scenario files and the
``[[fault=...]]`` prompt directive), for example ``rate_limit;retry_after=0.5``.

Parameters are typed (:data:`PARAMS`) and each *kind* of fault accepts its own set
(:data:`KIND_PARAMS`); anything else is a :class:`ValueError` naming the culprit. This
module is stdlib-only and does no I/O: the app in :mod:`canny.emulator.app` turns a
:class:`Fault` into bytes on the wire.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FAULTS",
    "KIND_PARAMS",
    "OK",
    "PARAMS",
    "REFUSAL_CATEGORIES",
    "Fault",
    "FaultKind",
    "FaultSpec",
    "Param",
    "ParamValue",
    "format_value",
    "make_fault",
    "parse_fault",
    "parse_plan",
]

ParamValue = int | float | str | bool

FaultKind = Literal[
    "ok",
    "status",
    "error_event",
    "stall",
    "stall_headers",
    "drop",
    "reset",
    "refusal",
    "max_tokens",
    "no_message_stop",
    "slow",
    "malformed_event",
    "redacted_thinking",
    "replay",
]

#: ``stop_details.category`` values the API documents; ``null`` sends JSON null.
REFUSAL_CATEGORIES = ("cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms", "null")


@dataclass(frozen=True, slots=True)
class Param:
    """One fault parameter: its Python type, and what it does."""

    type: type[int] | type[float] | type[str] | type[bool]
    doc: str


PARAMS: Mapping[str, Param] = {
    "delay": Param(float, "seconds to wait before sending anything"),
    "status": Param(int, "HTTP status code of the error response (400-599)"),
    "error_type": Param(str, "`error.type` in the body or error event"),
    "message": Param(str, "`error.message` in the body or error event"),
    "error_code": Param(str, "`error.details.error_code` in the body"),
    "retry_after": Param(float, "`retry-after` header, in seconds"),
    "retry_after_ms": Param(float, "`retry-after-ms` header, in milliseconds"),
    "retry_after_date": Param(float, "`retry-after` as an HTTP date this many seconds from now"),
    "should_retry": Param(bool, "send `x-should-retry: true|false`"),
    "html": Param(bool, "send an HTML body instead of the API's JSON error"),
    "after": Param(int, "deltas (text or tool input) sent before the fault strikes (0: right after message_start)"),
    "seconds": Param(float, "length of the stall, or the per-delta delay of `slow`"),
    "category": Param(str, "refusal `stop_details.category` (" + ", ".join(REFUSAL_CATEGORIES) + ")"),
    "explanation": Param(str, "refusal `stop_details.explanation`"),
    "file": Param(str, "a recorded response to replay: an exchange JSON or a raw SSE/JSON body"),
}

_STATUS_PARAMS = frozenset(
    {
        "status",
        "error_type",
        "message",
        "error_code",
        "retry_after",
        "retry_after_ms",
        "retry_after_date",
        "should_retry",
        "html",
    }
)

#: Parameters each kind accepts (``delay`` is accepted by all).
KIND_PARAMS: Mapping[FaultKind, frozenset[str]] = {
    "ok": frozenset(),
    "status": _STATUS_PARAMS,
    "error_event": frozenset({"after", "error_type", "message"}),
    "stall": frozenset({"after", "seconds"}),
    "stall_headers": frozenset({"seconds"}),
    "drop": frozenset({"after"}),
    "reset": frozenset({"after"}),
    "refusal": frozenset({"after", "category", "explanation"}),
    "max_tokens": frozenset(),
    "no_message_stop": frozenset(),
    "slow": frozenset({"seconds"}),
    "malformed_event": frozenset({"after"}),
    "redacted_thinking": frozenset(),
    "replay": frozenset({"file"}),
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """A named behaviour in the catalogue.

    ``summary`` says what the server does, ``client_sees`` what the ``anthropic`` SDK
    raises or returns, and ``retry`` whether canny's retry table (canny.retry.STATUS_RULES) retries it.
    """

    name: str
    kind: FaultKind
    summary: str
    client_sees: str
    retry: str
    defaults: Mapping[str, ParamValue] = field(default_factory=dict)

    @property
    def allowed(self) -> frozenset[str]:
        """The parameter names this fault accepts."""
        return KIND_PARAMS[self.kind] | {"delay"}

    @property
    def http_status(self) -> int | None:
        """The status line a client gets (``None``: none arrives before the fault)."""
        if self.kind == "status":
            status = self.defaults["status"]
            assert isinstance(status, int)
            return status
        return None if self.kind == "stall_headers" else 200


_REFUSAL_TEXT = "This request was declined by the emulator's scripted safety classifier."


def _status(
    name: str,
    status: int,
    error_type: str,
    message: str,
    summary: str,
    client_sees: str,
    retry: str,
    **extra: ParamValue,
) -> FaultSpec:
    defaults: dict[str, ParamValue] = {"status": status, "error_type": error_type, "message": message}
    defaults.update(extra)
    return FaultSpec(name, "status", summary, client_sees, retry, defaults)


_SPECS: tuple[FaultSpec, ...] = (
    FaultSpec("ok", "ok", "A normal answer, streamed or not.", "200 and a complete Message", "n/a"),
    _status(
        "rate_limit",
        429,
        "rate_limit_error",
        "This request would exceed your organization's rate limit. Please try again later.",
        "429 rate_limit_error with `retry-after` (default 1 s) and `x-should-retry: true`.",
        "RateLimitError; `retry-after` / `retry-after-ms` headers",
        "yes, after retry-after",
        retry_after=1,
        should_retry=True,
    ),
    _status(
        "ramp_limit",
        429,
        "rate_limit_error",
        "This request would exceed a ramp limit, which caps how fast usage can grow.",
        "429 with `error.details.error_code = ramp_limit_exceeded`, `retry-after`, `x-should-retry: true`.",
        "RampLimitExceededError (a RateLimitError)",
        "yes, after retry-after",
        retry_after=1,
        error_code="ramp_limit_exceeded",
        should_retry=True,
    ),
    _status(
        "spend_limit",
        429,
        "rate_limit_error",
        "You have reached your monthly spend limit. Access resumes at 00:00 UTC on the 1st.",
        "429 with `error.details.error_code = enforced_spend_limit_reached`, no `retry-after`.",
        "EnforcedSpendLimitReachedError (a RateLimitError)",
        "never",
        error_code="enforced_spend_limit_reached",
    ),
    _status(
        "credit_balance",
        400,
        "invalid_request_error",
        "Your credit balance is too low to access the Anthropic API.",
        "400 invalid_request_error: credit balance too low.",
        "BadRequestError",
        "never",
    ),
    _status("billing", 402, "billing_error", "Billing error.", "402 billing_error.", "PaymentRequiredError", "never"),
    _status(
        "overloaded",
        529,
        "overloaded_error",
        "Overloaded",
        "529 overloaded_error with `x-should-retry: true` (as recorded).",
        "OverloadedError",
        "yes",
        should_retry=True,
    ),
    _status(
        "server_error",
        500,
        "api_error",
        "Internal server error",
        "500 api_error.",
        "InternalServerError",
        "yes",
    ),
    _status(
        "bad_gateway",
        502,
        "api_error",
        "Bad gateway",
        "502 with an HTML body (a proxy's error page), not JSON.",
        "InternalServerError, message = the raw HTML",
        "yes",
        html=True,
    ),
    _status(
        "unavailable",
        503,
        "api_error",
        "Service unavailable",
        "503 api_error.",
        "ServiceUnavailableError (an InternalServerError)",
        "yes",
    ),
    _status(
        "gateway_timeout",
        504,
        "timeout_error",
        "Request timed out",
        "504 timeout_error.",
        "GatewayTimeoutError",
        "yes",
    ),
    _status(
        "request_timeout",
        408,
        "timeout_error",
        "Request timeout",
        "408 request timeout.",
        "RequestTimeoutError",
        "yes",
    ),
    _status("conflict", 409, "conflict_error", "Conflict", "409 conflict_error.", "ConflictError", "yes"),
    _status(
        "bad_request",
        400,
        "invalid_request_error",
        "Invalid request (injected by the emulator)",
        "400 invalid_request_error.",
        "BadRequestError",
        "never",
    ),
    _status(
        "bad_key",
        401,
        "authentication_error",
        "invalid x-api-key",
        "401 authentication_error.",
        "AuthenticationError",
        "never",
    ),
    _status(
        "permission",
        403,
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
        "403 permission_error.",
        "PermissionDeniedError",
        "never",
    ),
    _status(
        "not_found",
        404,
        "not_found_error",
        "The requested resource could not be found.",
        "404 not_found_error.",
        "NotFoundError",
        "never",
    ),
    _status(
        "too_large",
        413,
        "request_too_large",
        "Request exceeds the maximum allowed number of bytes.",
        "413 request_too_large.",
        "RequestTooLargeError",
        "never",
    ),
    _status(
        "unprocessable",
        422,
        "invalid_request_error",
        "Unprocessable entity",
        "422 unprocessable entity.",
        "UnprocessableEntityError",
        "never",
    ),
    _status(
        "x_should_retry_false",
        500,
        "api_error",
        "Internal server error",
        "500 api_error with `x-should-retry: false`.",
        "InternalServerError; the header forbids a retry",
        "never (the header wins)",
        should_retry=False,
    ),
    _status(
        "x_should_retry_true",
        400,
        "invalid_request_error",
        "Invalid request (retry allowed)",
        "400 invalid_request_error with `x-should-retry: true`.",
        "BadRequestError; the header allows a retry",
        "yes (the header wins)",
        should_retry=True,
    ),
    FaultSpec(
        "error_event",
        "error_event",
        "200, then an in-band `event: error` (overloaded_error) after `after` deltas (default 0).",
        "APIStatusError with status_code 200 and type overloaded_error, while iterating",
        "yes before the first delta, else never",
        {"after": 0, "error_type": "overloaded_error", "message": "Overloaded"},
    ),
    FaultSpec(
        "api_error_event",
        "error_event",
        "200, then an in-band `event: error` (api_error) after `after` deltas (default 0).",
        "APIStatusError with status_code 200 and type api_error, while iterating",
        "yes before the first delta, else never",
        {"after": 0, "error_type": "api_error", "message": "Internal server error"},
    ),
    FaultSpec(
        "stall",
        "stall",
        "200 + message_start, then silence for `seconds` (default 30) after `after` deltas.",
        "httpx2.ReadTimeout once the client's read timeout passes (SDK 2.17+: as APITimeoutError)",
        "yes before the first delta, else never",
        {"after": 0, "seconds": 30.0},
    ),
    FaultSpec(
        "stall_headers",
        "stall_headers",
        "Silence for `seconds` (default 30) before any header is sent.",
        "APITimeoutError (httpx2.ReadTimeout) before a response exists",
        "yes",
        {"seconds": 30.0},
    ),
    FaultSpec(
        "drop",
        "drop",
        "Close the connection mid-body after `after` deltas (default 2), no final chunk.",
        "httpx2.RemoteProtocolError (incomplete chunked read) while iterating (SDK 2.17+: as APIConnectionError)",
        "yes before the first delta, else never",
        {"after": 2},
    ),
    FaultSpec(
        "reset",
        "reset",
        "TCP RST (SO_LINGER 0) mid-body after `after` deltas (default 2).",
        "httpx2.ReadError (connection reset by peer) while iterating (SDK 2.17+: as APIConnectionError)",
        "yes before the first delta, else never",
        {"after": 2},
    ),
    FaultSpec(
        "refusal",
        "refusal",
        "200, stop_reason refusal with stop_details (category default cyber), no content.",
        "a Message with stop_reason 'refusal' and empty content",
        "never (an answer)",
        {"after": 0, "category": "cyber", "explanation": _REFUSAL_TEXT},
    ),
    FaultSpec(
        "refusal_partial",
        "refusal",
        "200, `after` text deltas (default 3), then stop_reason refusal.",
        "some text, then stop_reason 'refusal'; discard the partial text",
        "never (an answer)",
        {"after": 3, "category": "cyber", "explanation": _REFUSAL_TEXT},
    ),
    FaultSpec(
        "max_tokens",
        "max_tokens",
        "The answer runs on until it fills max_tokens: stop_reason max_tokens.",
        "a Message with stop_reason 'max_tokens', output_tokens == max_tokens",
        "never (an answer)",
    ),
    FaultSpec(
        "no_message_stop",
        "no_message_stop",
        "A complete stream whose final message_stop event is missing.",
        "a complete Message (the SDK tolerates it)",
        "n/a",
    ),
    FaultSpec(
        "slow",
        "slow",
        "A normal answer with `seconds` (default 0.1) between text deltas.",
        "a complete Message, slowly",
        "n/a",
        {"seconds": 0.1},
    ),
    FaultSpec(
        "redacted_thinking",
        "redacted_thinking",
        "A normal answer whose thinking block (with `thinking` on) is a redacted_thinking block.",
        "a complete Message starting with a RedactedThinkingBlock",
        "n/a",
    ),
    FaultSpec(
        "malformed_event",
        "malformed_event",
        "200, then an event whose data is not JSON after `after` deltas (default 1).",
        "a JSON decoding error while iterating",
        "like drop: yes before the first delta, else never",
        {"after": 1},
    ),
    FaultSpec(
        "replay",
        "replay",
        "The recorded response in `file` (an exchange JSON or a raw SSE/JSON body), byte for byte.",
        "whatever the recorded response makes it raise or return",
        "as for the recorded response",
    ),
)

#: The catalogue: fault name -> spec.
FAULTS: Mapping[str, FaultSpec] = {spec.name: spec for spec in _SPECS}

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_URL_VALUE = re.compile(r"[A-Za-z0-9_.+\-:]*\Z")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault spec with the parameters one request asked for.

    ``params`` holds only what was given explicitly; :meth:`get` falls back to the
    spec's defaults. ``str(fault)`` is the canonical ``name;key=value`` text.
    """

    name: str
    params: tuple[tuple[str, ParamValue], ...] = ()

    @property
    def spec(self) -> FaultSpec:
        """The catalogue entry."""
        return FAULTS[self.name]

    @property
    def kind(self) -> FaultKind:
        """What the server does (shared by related faults)."""
        return self.spec.kind

    def given(self, key: str) -> bool:
        """Whether ``key`` was set explicitly."""
        return any(k == key for k, _ in self.params)

    def get(self, key: str) -> ParamValue | None:
        """The explicit value of ``key``, else the spec's default, else ``None``."""
        for k, value in self.params:
            if k == key:
                return value
        return self.spec.defaults.get(key)

    def number(self, key: str, default: float = 0.0) -> float:
        """A numeric parameter as a float."""
        value = self.get(key)
        return default if value is None or isinstance(value, str) else float(value)

    def text(self, key: str, default: str = "") -> str:
        """A string parameter."""
        value = self.get(key)
        return default if value is None else str(value)

    def __str__(self) -> str:
        parts = [self.name]
        parts += [f"{key}={format_value(value)}" for key, value in self.params]
        return ";".join(parts)


OK = Fault("ok")


def format_value(value: ParamValue) -> str:
    """A parameter value as written in a fault spec (``1.0`` as ``1``, booleans lower-case)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _coerce(fault: str, key: str, value: object) -> ParamValue:
    """Check one parameter's value and convert it to the parameter's type."""
    param = PARAMS[key]
    where = f"fault {fault!r}: parameter {key!r}"
    result: ParamValue
    if param.type is bool:
        if isinstance(value, bool):
            result = value
        elif isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            result = value.lower() in _TRUE
        else:
            raise ValueError(f"{where} must be true or false, not {value!r}")
    elif param.type is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, not {value!r}")
        result = value
    else:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{where} must be a number, not {value!r}")
        try:
            number = float(value) if param.type is float else int(value)
        except (ValueError, OverflowError):
            raise ValueError(
                f"{where} must be {'a number' if param.type is float else 'an integer'}, not {value!r}"
            ) from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ValueError(f"{where} must be finite, not {value!r}")
        if param.type is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where} must be an integer, not {value!r}")
        result = number
    _check_range(where, key, result)
    return result


def _check_range(where: str, key: str, value: ParamValue) -> None:
    if key == "status" and not (isinstance(value, int) and 400 <= value <= 599):
        raise ValueError(f"{where} must be an HTTP error status between 400 and 599, not {value!r}")
    if key in {"after", "seconds", "delay", "retry_after_date"} and isinstance(value, int | float) and value < 0:
        raise ValueError(f"{where} must not be negative, not {value!r}")
    if key == "category" and value not in REFUSAL_CATEGORIES:
        raise ValueError(f"{where} must be one of {', '.join(REFUSAL_CATEGORIES)}, not {value!r}")


def make_fault(name: str, params: Mapping[str, object] | None = None) -> Fault:
    """Build a :class:`Fault` from a name and typed parameters (scenario files use this).

    Raises :class:`ValueError` naming an unknown fault, an unknown parameter or a bad value.
    """
    if not isinstance(name, str) or name not in FAULTS:
        known = ", ".join(sorted(FAULTS))
        raise ValueError(f"unknown fault {name!r} (known faults: {known})")
    spec = FAULTS[name]
    checked: list[tuple[str, ParamValue]] = []
    for key, value in (params or {}).items():
        if key not in spec.allowed:
            allowed = ", ".join(sorted(spec.allowed))
            raise ValueError(f"fault {name!r}: unknown parameter {key!r} (allowed: {allowed})")
        checked.append((key, _coerce(name, key, value)))
    return Fault(name, tuple(checked))


def parse_fault(text: str) -> Fault:
    """Parse ``name;key=value;...`` (the form used in URLs, scenarios and prompts)."""
    if not isinstance(text, str):
        raise ValueError(f"a fault must be a string like 'rate_limit;retry_after=1', not {text!r}")
    name, *pairs = [part.strip() for part in text.strip().split(";")]
    if not _NAME.match(name):
        raise ValueError(f"bad fault {text!r}: expected a name like 'rate_limit' before any ';'")
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"bad fault {text!r}: parameter {pair!r} is not key=value")
        if key in params:
            raise ValueError(f"bad fault {text!r}: parameter {key!r} given twice")
        params[key] = value.strip()
    return make_fault(name, params)


def parse_plan(text: str) -> tuple[Fault, ...]:
    """Parse a comma-separated fault plan, e.g. ``"rate_limit;retry_after=0.01,ok"``.

    Values in a plan travel in a URL path, so they are limited to letters, digits and
    ``_ . + - :``.
    """
    faults = []
    for item in text.split(","):
        fault = parse_fault(item)
        if fault.kind == "replay":
            raise ValueError("fault 'replay' reads a file on the server: use it in a scenario file, not a URL")
        for key, value in fault.params:
            if isinstance(value, str) and not _URL_VALUE.match(value):
                raise ValueError(f"fault {fault.name!r}: parameter {key!r} value {value!r} cannot go in a URL")
        faults.append(fault)
    return tuple(faults)
