"""Every fault in the emulator's catalogue, streamed and not, as the real ``anthropic`` SDK sees it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import anthropic
import httpx2
import pytest
from anthropic.types import MessageParam

from canny.emulator import FAULTS, serve_in_thread
from canny.emulator.server import EmulatorHandle
from tests.conftest import transport_error

KEY = "sk-ant-api03-CANARY-emulator-test-key"
MODEL = "claude-opus-5-5"
MAX_TOKENS = 200
READ_TIMEOUT = 1.0  # well above `slow`'s 0.02 s gaps even on a loaded machine; well below a 5 s stall

#: HTTP-status faults -> the SDK exception class raised for them (streamed or not).
STATUS_ERRORS: dict[str, type[anthropic.APIStatusError]] = {
    "rate_limit": anthropic.RateLimitError,
    "ramp_limit": anthropic.RampLimitExceededError,
    "spend_limit": anthropic.EnforcedSpendLimitReachedError,
    "credit_balance": anthropic.BadRequestError,
    "billing": anthropic.PaymentRequiredError,
    "overloaded": anthropic.OverloadedError,
    "server_error": anthropic.InternalServerError,
    "bad_gateway": anthropic.InternalServerError,
    "unavailable": anthropic.ServiceUnavailableError,
    "gateway_timeout": anthropic.GatewayTimeoutError,
    "request_timeout": anthropic.RequestTimeoutError,
    "conflict": anthropic.ConflictError,
    "bad_request": anthropic.BadRequestError,
    "bad_key": anthropic.AuthenticationError,
    "permission": anthropic.PermissionDeniedError,
    "not_found": anthropic.NotFoundError,
    "too_large": anthropic.RequestTooLargeError,
    "unprocessable": anthropic.UnprocessableEntityError,
    "x_should_retry_false": anthropic.InternalServerError,
    "x_should_retry_true": anthropic.BadRequestError,
}

#: Faults whose parameters are shortened so the sweep stays fast.
SPEC = {"stall": "stall;seconds=5", "stall_headers": "stall_headers;seconds=5", "slow": "slow;seconds=0.02"}


@dataclass
class Outcome:
    """What one call produced: the text deltas seen, then a message or an exception."""

    deltas: list[str] = field(default_factory=list)
    message: anthropic.types.Message | None = None
    error: BaseException | None = None
    seconds: float = 0.0


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


def call(emu: EmulatorHandle, fault: str, *, stream: bool) -> Outcome:
    """Make one SDK call through a fault plan and record what happened."""
    outcome = Outcome()
    started = time.perf_counter()
    with anthropic.Anthropic(
        api_key=KEY,
        base_url=emu.url_for(SPEC.get(fault, fault)),
        max_retries=0,
        timeout=httpx2.Timeout(5.0, read=READ_TIMEOUT),
        open_telemetry=False,
    ) as client:
        messages: list[MessageParam] = [{"role": "user", "content": "Hello there"}]
        try:
            if stream:
                with client.messages.stream(model=MODEL, max_tokens=MAX_TOKENS, messages=messages) as s:
                    for text in s.text_stream:
                        outcome.deltas.append(text)
                    outcome.message = s.get_final_message()
            else:
                outcome.message = client.messages.create(model=MODEL, max_tokens=MAX_TOKENS, messages=messages)
        except Exception as exc:
            outcome.error = exc
    outcome.seconds = time.perf_counter() - started
    return outcome


def test_every_status_fault_is_covered() -> None:
    """The sweep below knows the expected SDK error of every HTTP-status fault."""
    assert {name for name, spec in FAULTS.items() if spec.kind == "status"} == set(STATUS_ERRORS)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
@pytest.mark.parametrize("name", sorted(STATUS_ERRORS))
def test_status_faults_raise_the_sdk_error(emu: EmulatorHandle, name: str, stream: bool) -> None:
    """An HTTP-status fault reaches the SDK as its typed error, with the catalogue's status."""
    outcome = call(emu, name, stream=stream)
    assert isinstance(outcome.error, STATUS_ERRORS[name])
    assert outcome.error.status_code == FAULTS[name].http_status
    assert outcome.error.request_id is not None
    assert outcome.error.request_id.startswith("req_")
    headers = outcome.error.response.headers
    if name == "rate_limit":
        assert headers["retry-after"] == "1"
    if name == "spend_limit":
        assert "retry-after" not in headers
    if name.startswith("x_should_retry"):
        assert headers["x-should-retry"] == name.rsplit("_", 1)[1]
    if name == "bad_gateway":
        assert headers["content-type"] == "text/html"
        assert "<html>" in outcome.error.message


@pytest.mark.parametrize(
    ("name", "error_type", "status"), [("error_event", "overloaded_error", 529), ("api_error_event", "api_error", 500)]
)
def test_in_band_error_events(emu: EmulatorHandle, name: str, error_type: str, status: int) -> None:
    """Streamed: a 200 then `event: error` before any text; not streamed: the matching HTTP error."""
    streamed = call(emu, name, stream=True)
    assert type(streamed.error) is anthropic.APIStatusError
    assert (streamed.error.status_code, streamed.error.type, streamed.deltas) == (200, error_type, [])
    created = call(emu, name, stream=False)
    assert isinstance(created.error, anthropic.APIStatusError)
    assert (created.error.status_code, created.error.type) == (status, error_type)


def test_error_event_after_content(emu: EmulatorHandle) -> None:
    """`after=2` puts the in-band error after two text deltas."""
    outcome = call(emu, "error_event;after=2", stream=True)
    assert isinstance(outcome.error, anthropic.APIStatusError)
    assert len(outcome.deltas) == 2


@pytest.mark.parametrize(
    ("fault", "error", "deltas"),
    [
        ("drop", httpx2.RemoteProtocolError, 2),
        ("drop;after=0", httpx2.RemoteProtocolError, 0),
        ("reset", httpx2.ReadError, 2),
        ("reset;after=1", httpx2.ReadError, 1),
        ("stall", httpx2.ReadTimeout, 0),
        ("stall;after=3;seconds=5", httpx2.ReadTimeout, 3),
    ],
)
def test_mid_stream_transport_faults(emu: EmulatorHandle, fault: str, error: type[Exception], deltas: int) -> None:
    """Drops, resets and stalls surface as httpx2 errors after exactly `after` deltas (raw up
    to SDK 2.16, the cause of the SDK's APIConnectionError from 2.17)."""
    outcome = call(emu, fault, stream=True)
    assert type(transport_error(outcome.error)) is error, outcome.error
    assert len(outcome.deltas) == deltas
    if "stall" in fault:
        assert READ_TIMEOUT <= outcome.seconds < 4.5  # cut by the read timeout, not by the 5 s stall


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("drop", anthropic.APIConnectionError),
        ("reset", anthropic.APIConnectionError),
        ("stall", anthropic.APITimeoutError),
        ("stall_headers", anthropic.APITimeoutError),
    ],
)
def test_transport_faults_without_streaming(emu: EmulatorHandle, fault: str, error: type[Exception]) -> None:
    """Not streamed, a cut body or a silent server is a connection or timeout error."""
    assert isinstance(call(emu, fault, stream=False).error, error)


def test_stall_headers_times_out_before_a_response(emu: EmulatorHandle) -> None:
    """stall_headers sends nothing at all, so even a stream request times out in the SDK's retry layer."""
    outcome = call(emu, "stall_headers", stream=True)
    assert isinstance(outcome.error, anthropic.APITimeoutError)
    assert outcome.deltas == []


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
def test_refusals_are_answers(emu: EmulatorHandle, stream: bool) -> None:
    """refusal: 200, no content, stop_details; refusal_partial: some text first."""
    refused = call(emu, "refusal", stream=stream).message
    assert refused is not None
    assert (refused.stop_reason, refused.content, refused.usage.output_tokens) == ("refusal", [], 0)
    assert refused.stop_details is not None
    assert (refused.stop_details.type, refused.stop_details.category) == ("refusal", "cyber")
    assert refused.stop_details.explanation
    partial = call(emu, "refusal_partial", stream=stream)
    assert partial.message is not None
    assert partial.message.stop_reason == "refusal"
    assert partial.message.content
    assert partial.message.usage.output_tokens > 0
    if stream:
        assert len(partial.deltas) == 3
    null = call(emu, "refusal;category=null", stream=stream).message
    assert null is not None
    assert null.stop_details is not None
    assert null.stop_details.category is None


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
def test_max_tokens_fault_fills_the_budget(emu: EmulatorHandle, stream: bool) -> None:
    """The max_tokens fault runs the answer on to exactly max_tokens output tokens."""
    message = call(emu, "max_tokens", stream=stream).message
    assert message is not None
    assert (message.stop_reason, message.usage.output_tokens) == ("max_tokens", MAX_TOKENS)


@pytest.mark.parametrize("name", ["ok", "no_message_stop", "slow"])
@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
def test_complete_answers(emu: EmulatorHandle, name: str, stream: bool) -> None:
    """ok, no_message_stop and slow all give a complete, parseable answer."""
    outcome = call(emu, name, stream=stream)
    assert outcome.error is None
    assert outcome.message is not None
    assert outcome.message.stop_reason == "end_turn"
    assert outcome.message.content
    if stream:
        assert "".join(outcome.deltas) == "".join(b.text for b in outcome.message.content if b.type == "text")
    if name == "slow" and stream:
        assert outcome.seconds >= 0.02 * (len(outcome.deltas) - 1)


def test_no_message_stop_omits_only_the_last_event(emu: EmulatorHandle) -> None:
    """The stream ends right after message_delta, with no message_stop."""
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    raw = httpx2.post(
        f"{emu.url_for('no_message_stop')}/v1/messages",
        json=body,
        headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"},
    ).text
    names = [frame.split("\n")[0] for frame in raw.split("\n\n") if frame]
    assert names[-1] == "event: message_delta"
    assert "event: message_stop" not in names


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "create"])
def test_malformed_event_breaks_json_decoding(emu: EmulatorHandle, stream: bool) -> None:
    """A frame whose data is not JSON makes the SDK's decoder fail."""
    assert isinstance(call(emu, "malformed_event", stream=stream).error, json.JSONDecodeError)


def test_every_catalogue_entry_is_exercised() -> None:
    """This module sweeps every fault the catalogue defines."""
    covered = set(STATUS_ERRORS) | {
        "ok",
        "error_event",
        "api_error_event",
        "drop",
        "reset",
        "stall",
        "stall_headers",
        "refusal",
        "refusal_partial",
        "max_tokens",
        "no_message_stop",
        "slow",
        "malformed_event",
        "redacted_thinking",  # tests/test_emulator_thinking_tools.py
        "replay",  # swept in tests/test_emulator_replay.py (it needs a recorded file)
    }
    assert covered == set(FAULTS)


def test_faults_leave_no_traceback_on_the_server(emu: EmulatorHandle, capfd: pytest.CaptureFixture[str]) -> None:
    """Drops, resets and client timeouts are silent on the server's stderr."""
    for fault in ("drop", "reset", "drop;after=0", "stall", "stall_headers"):
        call(emu, fault, stream=True)
        call(emu, fault, stream=False)
    time.sleep(0.2)
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert "Exception" not in err
    assert "socket.send" not in err


def test_shutdown_cuts_a_stalled_stream() -> None:
    """Leaving serve_in_thread ends a 30-second stall at once, dropping its client."""
    with serve_in_thread() as handle:
        body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
        client = httpx2.Client(timeout=10.0)
        request = client.build_request(
            "POST",
            f"{handle.url_for('stall')}/v1/messages",
            json=body,
            headers={"x-api-key": KEY, "anthropic-version": "2026-10-21"},
        )
        response = client.send(request, stream=True)
        chunks = response.iter_bytes()
        assert b"message_start" in next(chunks)
        started = time.perf_counter()
    assert time.perf_counter() - started < 2.0
    with pytest.raises(httpx2.RemoteProtocolError):
        list(chunks)
    response.close()
    client.close()
