"""The exception tree, its exit codes, and what errors may never contain."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from canny import errors
from canny._sdk_errors import error_from_event, error_from_response
from canny.cli._exit_codes import exit_code_for


@pytest.mark.parametrize(
    ("status", "body", "cls", "exit_code"),
    [
        (
            401,
            {"error": {"type": "authentication_error", "message": "invalid x-api-key"}},
            errors.AuthenticationError,
            3,
        ),
        (403, {"error": {"type": "permission_error", "message": "no"}}, errors.AuthenticationError, 3),
        (400, {"error": {"type": "invalid_request_error", "message": "bad"}}, errors.RequestRejected, 8),
        (404, {"error": {"type": "not_found_error", "message": "model: x"}}, errors.RequestRejected, 8),
        (413, {"error": {"type": "request_too_large", "message": "big"}}, errors.RequestRejected, 8),
        (422, None, errors.RequestRejected, 8),
        (429, {"error": {"type": "rate_limit_error", "message": "slow down"}}, errors.RateLimited, 7),
        (
            429,
            {
                "error": {
                    "type": "rate_limit_error",
                    "message": "cap",
                    "details": {"error_code": "enforced_spend_limit_reached"},
                }
            },
            errors.SpendLimitReached,
            4,
        ),
        (500, {"error": {"type": "api_error", "message": "oops"}}, errors.ServerError, 7),
        (502, "<html>bad gateway</html>", errors.ServerError, 7),
        (529, {"error": {"type": "overloaded_error", "message": "Overloaded"}}, errors.Overloaded, 7),
        (408, None, errors.ServerError, 7),
        (409, None, errors.ServerError, 7),
    ],
)
def test_status_mapping(status: int, body: object, cls: type[errors.APIError], exit_code: int) -> None:
    """Every status maps to its class and exit code, with the request id kept."""
    err = error_from_response(status, body, {"request-id": "req_abc"})
    assert type(err) is cls
    assert exit_code_for(err) == exit_code
    assert err.request_id == "req_abc"
    assert "req_abc" in str(err)
    assert "<html>" not in str(err)


def test_in_band_errors_map_by_type() -> None:
    """An SSE error event (HTTP 200) maps by error.type, not by status."""
    over = error_from_event({"error": {"type": "overloaded_error", "message": "Overloaded"}}, "req_1")
    assert isinstance(over, errors.Overloaded)
    assert over.status_code == 200
    assert isinstance(error_from_event({"error": {"type": "api_error"}}, None), errors.ServerError)


def test_key_shaped_text_is_scrubbed(canary_key: str) -> None:
    """A key echoed by a server in an error message is removed from the error text."""
    err = error_from_response(401, {"error": {"type": "authentication_error", "message": f"bad key {canary_key}"}}, {})
    assert canary_key not in str(err)
    assert canary_key not in repr(err)


def test_errors_pickle_without_state_leaks() -> None:
    """Errors survive pickling with their public fields; the partial result is dropped."""
    err = errors.RateLimited("rate limited", status_code=429, request_id="req_9", retry_after=2.0)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is errors.RateLimited
    assert (back.status_code, back.request_id, back.retry_after, str(back)) == (429, "req_9", 2.0, str(err))


def test_pickling_drops_the_partial_result_of_every_error_that_carries_one() -> None:
    """APIError and Refused alike pickle without their partial result and keep their other fields."""
    unpicklable: Any = threading.Lock()
    api = errors.StreamInterrupted("cut", status_code=200, request_id="req_3")
    api.result = unpicklable
    refused = errors.Refused("declined", category="cyber", result=unpicklable)
    api_back, refused_back = pickle.loads(pickle.dumps((api, refused)))
    assert (api_back.result, api_back.status_code, api_back.request_id) == (None, 200, "req_3")
    assert (refused_back.result, refused_back.category, refused_back.message) == (None, "cyber", "declined")
    assert api.result is unpicklable  # the live error keeps it


def test_every_error_derives_from_canny_error() -> None:
    """One tree: every public error class derives from CannyError, every warning from CannyWarning."""
    for name in errors.__all__:
        cls = getattr(errors, name)
        if issubclass(cls, Warning):
            assert issubclass(cls, errors.CannyWarning), name
        else:
            assert issubclass(cls, errors.CannyError), name


def test_exit_code_table_takes_the_most_specific_class() -> None:
    """EXIT_CODES is read along the MRO: a subclass the table does not name takes its parent's code."""

    class Custom(errors.LedgerUnavailable):
        pass

    assert exit_code_for(Custom("x")) == 9
    assert exit_code_for(errors.SessionLimitReached("x", reason="cost", cap=1)) == 4
    assert exit_code_for(errors.CannyError("x")) == 1
    assert exit_code_for(ValueError("x")) == 1
