"""Every error canny raises, in one tree.

::

    CannyError
    ├── ConfigError                 bad configuration or usage
    │   └── MissingKeyError         no API key from any source
    ├── LedgerError                 the ledger cannot be opened or written
    │   └── LedgerUnavailable       no record or budget check possible; nothing was sent
    ├── BudgetExceeded              a budget would be crossed; nothing was sent
    │   └── SessionLimitReached     an agent-loop session's next call could cross a cap
    ├── Refused                     the model declined (only from ``raise_for_outcome()``)
    ├── DriftExceeded               the ledger and the provider's cost report disagree
    └── APIError                    anything the API or the network did
        ├── AuthenticationError     401 / 403: bad, revoked or unauthorised key
        ├── RequestRejected         400, 404, 413, 422 ...: never retried
        ├── SpendLimitReached       429 for an org spend cap
        ├── TransientError          retried while no output was shown
        │   ├── RateLimited         429
        │   ├── Overloaded          529, or an in-band ``overloaded_error``
        │   ├── ServerError         500, 502, 503, 504, 408, 409, in-band ``api_error``
        │   ├── ConnectionFailed    refused, reset, dropped, DNS, TLS
        │   └── TimeoutError        connect, first-event, idle-gap or total timeout
        └── StreamInterrupted       a failure after output was shown

    CannyWarning                    something to know that does not stop the call
    └── ResponseWarning             the server sent a value canny does not know

Which status or in-band error type becomes which class, and what is retried, is one
table in :mod:`canny.retry`; the exit code of each class for the command line is one
table in ``canny.cli._exit_codes``.

A refusal is not an error: it is an answer (``CallResult.outcome == "refused"``).
``CallResult.raise_for_outcome()`` turns it into :class:`Refused` for callers that
prefer exceptions.

Error text never contains the API key: messages are built from status, type, the API's
own message and the request id, and ``__reduce__`` keeps only those fields, so pickling an
error (multiprocessing, task queues) cannot carry request headers along.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from canny.result import CallResult

__all__ = [
    "APIError",
    "AuthenticationError",
    "BudgetExceeded",
    "CannyError",
    "CannyWarning",
    "ConfigError",
    "ConnectionFailed",
    "DriftExceeded",
    "InvalidModifierError",
    "LedgerError",
    "LedgerUnavailable",
    "MissingKeyError",
    "Overloaded",
    "RateLimited",
    "Refused",
    "RequestRejected",
    "ResponseWarning",
    "ServerError",
    "SessionLimitReached",
    "SpendLimitReached",
    "StreamInterrupted",
    "TimeoutError",
    "TransientError",
    "UnpricedModelWarning",
]


class CannyError(Exception):
    """Base of every error canny raises on purpose."""

    #: What the user can do about it; the CLI prints it after the message.
    hint: str = ""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.message, dict(self._public_state())))

    def _public_state(self) -> dict[str, Any]:
        state = {k: v for k, v in vars(self).items() if k != "message"}
        if "result" in state:
            state["result"] = None  # a partial result is never pickled (its text stays here)
        return state


def _rebuild(cls: type[CannyError], message: str, state: dict[str, Any]) -> CannyError:
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.message = message
    err.__dict__.update(state)
    return err


class ConfigError(CannyError):
    """Configuration or command-line usage is wrong; nothing was sent."""


class MissingKeyError(ConfigError):
    """No API key was found as an argument, in ``ANTHROPIC_API_KEY``, the keyring or the key file."""

    hint = (
        "set one with `canny key set` (OS keyring, or a 0600 key file where there is none) "
        "or export ANTHROPIC_API_KEY; `canny ask --offline` needs no key"
    )


class LedgerError(CannyError):
    """The ledger could not be opened, migrated or written."""


class LedgerUnavailable(LedgerError):
    """The ledger could not be opened, or budgets could not be checked, before a call, so
    the call was not sent (canny fails closed: no call without a record).

    ``location`` is where the ledger is (a PostgreSQL password masked), ``reason`` what
    went wrong. Pass ``ledger=False`` (``--no-ledger``) to call without a ledger.
    """

    hint = "fix the ledger (or point CANNY_LEDGER elsewhere), or run without one: --no-ledger / ledger=False"

    def __init__(self, message: str, *, location: str = "", reason: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.location = location
        self.reason = reason


class BudgetExceeded(CannyError):
    """A call would cross a budget, so it was refused before sending.

    Attributes name the budget (``budget``), its ``limit``, what is already ``spent`` and
    ``reserved`` by calls in flight, and the worst-case cost ``needed`` by this call.
    """

    def __init__(
        self,
        message: str,
        *,
        budget: str = "",
        limit: Decimal | None = None,
        spent: Decimal | None = None,
        reserved: Decimal | None = None,
        needed: Decimal | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.budget = budget
        self.limit = limit
        self.spent = spent
        self.reserved = reserved
        self.needed = needed


class SessionLimitReached(BudgetExceeded):
    """An agent-loop session (``client.session(...)``) stopped before a call that could
    cross one of its caps; that call was not sent.

    ``reason`` is ``"cost"``, ``"iterations"`` or ``"wall_time"``; ``cap`` the cap as given;
    ``totals`` what the session used so far (a :class:`canny.session.SessionTotals`: calls,
    cost, usage, elapsed). For a cost cap, ``limit``/``spent``/``needed`` are dollars as in
    :class:`BudgetExceeded`.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        cap: Decimal | int | float,
        totals: Any = None,
        needed: Decimal | None = None,
        hint: str | None = None,
    ) -> None:
        cost = getattr(totals, "cost", None)
        super().__init__(
            message,
            budget=f"session {reason}",
            limit=cap if isinstance(cap, Decimal) else None,
            spent=cost if isinstance(cost, Decimal) else None,
            reserved=Decimal(0),
            needed=needed,
            hint=hint,
        )
        self.reason = reason
        self.cap = cap
        self.totals = totals


class DriftExceeded(CannyError):
    """``canny reconcile``: the provider's cost differs from the ledger's by more than the
    tolerance (``drift`` and ``tolerance`` in USD)."""

    hint = "the rows above name the likely cause of each difference"

    def __init__(self, message: str, *, drift: Decimal, tolerance: Decimal, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.drift = drift
        self.tolerance = tolerance


class APIError(CannyError):
    """The API answered with an error, or could not be reached.

    ``status_code`` is the HTTP status (200 for an error event inside a stream, ``None``
    when no response arrived), ``error_type`` the API's ``error.type``, ``error_code`` its
    ``error.details.error_code``, ``request_id`` the ``request-id`` header.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status_code = status_code
        self.error_type = error_type
        self.error_code = error_code
        self.request_id = request_id
        #: Seconds the server asked us to wait (``retry-after-ms`` / ``retry-after``).
        self.retry_after = retry_after
        #: The server's ``x-should-retry`` header, when it sent one.
        self.should_retry = should_retry
        #: The partial result of the attempt that failed, when there is one.
        self.result: CallResult | None = None

    def __str__(self) -> str:
        parts = [self.message]
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class AuthenticationError(APIError):
    """The API rejected the key (401) or the key lacks permission (403)."""

    hint = "check the key with `canny key status`, or replace it with `canny key set`"


class RequestRejected(APIError):
    """The API rejected the request itself (400, 404, 413, 422 ...). Never retried."""

    hint = "fix the request (model name, parameters, size); retrying will not help"


class SpendLimitReached(APIError):
    """The organisation reached a spend limit (429 ``*_spend_limit_reached``). Never retried."""

    hint = "raise the spend limit in the Claude Console, or wait for it to reset"


class TransientError(APIError):
    """A failure that may pass: retried while no output has been shown."""

    hint = "try again later; canny already retried with backoff"


class RateLimited(TransientError):
    """429: a rate or acceleration limit."""


class Overloaded(TransientError):
    """529, or an in-band ``overloaded_error`` event: the API is overloaded."""


class ServerError(TransientError):
    """5xx, 408, 409, or an in-band ``api_error`` event."""


class ConnectionFailed(TransientError):
    """The connection could not be made or broke (refused, reset, dropped, DNS, TLS)."""

    hint = "check the network and the base URL"


class TimeoutError(TransientError):  # noqa: A001 - canny.errors.TimeoutError is deliberate
    """A connect, first-event, idle-gap or total timeout passed."""

    def __init__(self, message: str, *, phase: str = "total", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        #: ``connect``, ``first_event``, ``idle`` or ``total``.
        self.phase = phase


class StreamInterrupted(APIError):
    """The stream failed after output was shown. It is not re-sent: the text would repeat.

    ``result`` holds the partial text and the usage seen so far (billed by the API);
    ``__cause__`` is the underlying error.
    """

    hint = "the answer above is incomplete; run the request again if you need all of it"


class Refused(CannyError):
    """The model declined to answer (``stop_reason: refusal``).

    Raised only by ``CallResult.raise_for_outcome()``; ``category`` is
    ``stop_details.category`` (may be ``None``).
    """

    hint = "rephrase the request or start a new conversation; the refused turn must not be resent"

    def __init__(self, message: str, *, category: str | None = None, result: CallResult | None = None) -> None:
        super().__init__(message)
        self.category = category
        self.result = result


# --------------------------------------------------------------------------- warnings


class CannyWarning(UserWarning):
    """Something the user should know that does not stop the call."""


class ResponseWarning(CannyWarning):
    """The server sent a value canny does not know (an ``inference_geo``, ``speed``,
    ``service_tier``, ``stop_reason``, content block type, usage field or model).

    The response is a fact: the call goes on, the value is recorded as sent and the cost
    is computed from what is known (unpriced when an unknown part could change it).
    Emitted once per field and value per process.
    """


class UnpricedModelWarning(CannyWarning):
    """A cost could not be computed: unknown model, or no confirmed rate for that date or mode."""


class InvalidModifierError(ConfigError, ValueError):
    """A modifier the API rejects for this model (``inference_geo="us"`` before Claude 4.6,
    ``speed="fast"`` without fast mode or in a batch). A :class:`ValueError` for callers of
    the pricing functions, and a :class:`ConfigError` (exit 2) for the CLI."""

    hint = "drop the setting or choose a model that supports it; `canny prices --model M` shows what applies"
