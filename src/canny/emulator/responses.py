"""What the emulator answers: the model's reply, and the response scripts that carry it.

:func:`compose_answer` decides the text, tool calls, stop reason and usage of a reply (a
pure function of the request, the fault, the planned tool calls and the input usage). The
``*_script`` functions turn answers and errors into :mod:`~canny.emulator.wire` scripts,
with the fault's stalls, drops and in-band errors placed at the right event.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import secrets
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from canny.emulator import sse
from canny.emulator.cache import InputUsage
from canny.emulator.faults import Fault, format_value
from canny.emulator.servertools import plan_server_tools, stream_server_block
from canny.emulator.structured import output_schema, structured_text
from canny.emulator.thinking import reports_thinking_tokens, stream_thinking, thinking_block, thinking_plan
from canny.emulator.tokens import Directives, count_tokens, generate_text, split_deltas, truncate_to_tokens
from canny.emulator.tools import ToolCall, input_chunks, preface, run_on
from canny.emulator.validation import ApiError, MessagesRequest
from canny.emulator.wire import Body, Cut, Pause, Start, Step

__all__ = [
    "Answer",
    "api_error_script",
    "compose_answer",
    "error_body",
    "json_script",
    "message_script",
    "new_id",
    "status_fault_script",
]

_ALPHABET = string.ascii_letters + string.digits
_JSON = "application/json"
_SSE = "text/event-stream; charset=utf-8"
#: Status an in-band error type would have had before the headers (non-streamed requests).
_EVENT_STATUS = {"overloaded_error": 529, "api_error": 500, "timeout_error": 504, "rate_limit_error": 429}


#: Recorded id shapes: ``msg_01`` + 22 base62 characters, ``req_011C`` + 20 (28 in all).
_ID_HEADS = {"msg_": "msg_01", "req_": "req_011C"}


def new_id(prefix: str) -> str:
    """A random API-style id: ``msg_01…`` and ``req_011C…`` shaped like recorded ones (28
    characters), other prefixes followed by 24 base62 characters."""
    head = _ID_HEADS.get(prefix, prefix)
    size = 28 - len(head) if prefix in _ID_HEADS else 24
    return head + "".join(secrets.choice(_ALPHABET) for _ in range(size))


@dataclass(frozen=True, slots=True)
class Answer:
    """A reply: its text, its tool calls, why it stopped, and its usage; ``lead`` holds the
    blocks before the text (thinking, server tool calls and their results)."""

    text: str
    stop_reason: str
    stop_sequence: str | None
    usage: InputUsage
    output_tokens: int
    stop_details: Mapping[str, Any] | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    lead: tuple[Mapping[str, Any], ...] = ()
    #: Output tokens spent thinking (part of ``output_tokens``).
    thinking_tokens: int = 0
    #: ``usage.output_tokens_details`` is reported (models from Opus 5 on).
    report_thinking: bool = False
    #: Input tokens the server tools' results add (final usage only).
    server_input: int = 0
    #: ``usage.server_tool_use`` (``None``: the request has no server tool).
    server_counts: Mapping[str, int] | None = None
    #: The reply ran code: it carries a ``container``.
    container: bool = False

    def content(self) -> list[dict[str, Any]]:
        """The ``content`` blocks of the message."""
        blocks: list[dict[str, Any]] = [dict(block) for block in self.lead]
        blocks += [{"type": "text", "text": self.text}] if self.text else []
        return blocks + [call.block() for call in self.tool_calls]


def compose_answer(
    request: MessagesRequest,
    fault: Fault,
    directives: Directives,
    usage: InputUsage,
    calls: tuple[ToolCall, ...] = (),
) -> Answer:
    """The reply to ``request`` under ``fault`` (``ok``-like faults give the normal reply);
    ``calls`` are the planned tool calls (none: a text answer). Raises :class:`ApiError`
    for a ``thinking`` or ``output_config`` the API would reject."""
    plan = thinking_plan(request, redacted=directives.thinking == "redacted" or fault.kind == "redacted_thinking")
    schema = output_schema(request)
    run = plan_server_tools(request)
    limit = request.max_tokens
    lead: list[Mapping[str, Any]] = []
    spent = thinking = 0
    ran = False
    if fault.kind != "refusal" and limit > 0:
        if plan is not None:
            block, thinking = thinking_block(request, plan, request.last_user_text(), limit)
            lead.append(block)
            spent += thinking
        if spent < limit and run.blocks:
            ran = True
            lead += run.blocks
            spent += sum(count_tokens(json.dumps(b["input"])) for b in run.blocks if b["type"] == "server_tool_use")
    extras: dict[str, Any] = {
        "lead": tuple(lead),
        "thinking_tokens": thinking,
        "report_thinking": plan is not None and reports_thinking_tokens(request),
        "server_input": run.input_tokens if ran else 0,
        "server_counts": run.counts or None,
        "container": run.container and ran,
    }
    if spent >= limit > 0:
        return Answer("", "max_tokens", None, usage, limit, **extras)
    body = _compose_body(request, fault, directives, usage, calls, limit - spent, schema)
    return replace(body, output_tokens=body.output_tokens + spent, **extras)


def _compose_body(
    request: MessagesRequest,
    fault: Fault,
    directives: Directives,
    usage: InputUsage,
    calls: tuple[ToolCall, ...],
    limit: int,
    schema: Mapping[str, Any] | None,
) -> Answer:
    """The text and tool calls of the reply, within ``limit`` output tokens."""
    prompt = request.last_user_text()
    if calls and fault.kind != "refusal":
        answer = _tool_answer(request, fault, usage, calls, limit)
        if answer is not None:
            return answer
    if fault.kind == "max_tokens":
        text = truncate_to_tokens(generate_text(prompt, directives, max_tokens=limit, run_on=True), limit)
        return Answer(text, "max_tokens", None, usage, count_tokens(text))
    text = generate_text(prompt, directives, max_tokens=limit) if schema is None else structured_text(request, schema)
    stop_reason, stop_sequence = "end_turn", None
    if count_tokens(text) > limit:
        text, stop_reason = truncate_to_tokens(text, limit), "max_tokens"
    stop = _first_stop(text, request.stop_sequences) if schema is None else None
    if stop is not None:
        # The model generated the stop sequence too: it is billed, though not returned.
        billed = count_tokens(text[: stop[0] + len(stop[1])])
        return Answer(text[: stop[0]], "stop_sequence", stop[1], usage, billed)
    if fault.kind == "refusal":
        after = int(fault.number("after"))
        text = "".join(split_deltas(text)[:after])
        category = fault.text("category", "cyber")
        details = {
            "type": "refusal",
            "category": None if category == "null" else category,
            "explanation": fault.text("explanation"),
        }
        return Answer(text, "refusal", None, usage, count_tokens(text), details)
    return Answer(text, stop_reason, stop_sequence, usage, count_tokens(text))


def _tool_answer(
    request: MessagesRequest, fault: Fault, usage: InputUsage, calls: tuple[ToolCall, ...], limit: int
) -> Answer | None:
    """A reply that calls tools: an optional preface, then the calls, cut by ``limit``.

    Under the ``max_tokens`` fault the first string of the inputs runs on until the limit
    cuts it (``None`` when no input holds a string: the text answer runs on instead).
    """
    if fault.kind == "max_tokens":
        filler = generate_text(request.last_user_text(), Directives(), max_tokens=limit, run_on=True)
        for i, call in enumerate(calls):
            long = run_on(call, filler)
            if long is not None:
                calls = (*calls[:i], long, *calls[i + 1 :])
                break
        else:
            return None
    text = preface(request, calls)
    stop = _first_stop(text, request.stop_sequences)
    if stop is not None:
        billed = count_tokens(text[: stop[0] + len(stop[1])])
        return Answer(text[: stop[0]], "stop_sequence", stop[1], usage, billed)
    if count_tokens(text) >= limit:  # no room left for a tool call
        text = truncate_to_tokens(text, limit)
        return Answer(text, "max_tokens", None, usage, count_tokens(text))
    remaining = limit - count_tokens(text)
    sent: list[ToolCall] = []
    stop_reason = "tool_use"
    for call in calls:
        if remaining <= 0:
            stop_reason = "max_tokens"
            break
        if call.tokens > remaining:
            sent.append(call.cut(remaining))
            stop_reason = "max_tokens"
            break
        sent.append(call)
        remaining -= call.tokens
    output = count_tokens(text) + sum(call.tokens for call in sent)
    return Answer(text, stop_reason, None, usage, output, tool_calls=tuple(sent))


def _first_stop(text: str, stop_sequences: tuple[str, ...]) -> tuple[int, str] | None:
    """Where the first stop sequence to complete starts in ``text``, and which one."""
    matches = [(text.find(s) + len(s), text.find(s), s) for s in stop_sequences if s in text]
    if not matches:
        return None
    _, start, sequence = min(matches)
    return start, sequence


def _usage(
    usage: InputUsage, output_tokens: int, inference_geo: str = "global", *, details: bool = False
) -> dict[str, Any]:
    """The usage object; ``details`` adds ``output_tokens_details`` (models that report it)."""
    result: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "cache_creation_input_tokens": usage.cache_creation,
        "cache_read_input_tokens": usage.cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_5m,
            "ephemeral_1h_input_tokens": usage.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
        "inference_geo": inference_geo,
    }
    if details:
        result["output_tokens_details"] = {"thinking_tokens": 0}
    return result


def _inference_geo(request: MessagesRequest) -> str:
    """``usage.inference_geo`` as the API reports it: ``not_available`` for the models that
    report so in recordings, otherwise where the request asked to run (``global`` by default)."""
    reported = request.model.inference_geo
    if reported == "not_available":
        return reported
    asked = request.raw.get("inference_geo")
    return asked if asked in ("global", "us") else reported


def _message(answer: Answer, request: MessagesRequest, message_id: str, *, head: bool = False) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.model.id,
        "content": [] if head else answer.content(),
        "stop_reason": None if head else answer.stop_reason,
        "stop_sequence": None if head else answer.stop_sequence,
        "stop_details": None if head else answer.stop_details,
    }
    if answer.container and not head:
        message["container"] = _container(message_id)
    # message_start's placeholder is 1 output token, 0 for a refusal before any output.
    placeholder = 0 if answer.stop_reason == "refusal" and not answer.text else 1
    output = placeholder if head else answer.output_tokens
    message["usage"] = _usage(answer.usage, output, _inference_geo(request), details=_details(request) and not head)
    if not head:
        _add_extra_usage(message["usage"], answer)
    return message


def _add_extra_usage(usage: dict[str, Any], answer: Answer) -> None:
    """The final usage's server tool counts, result input tokens and thinking tokens."""
    usage["input_tokens"] += answer.server_input
    if answer.server_counts is not None:
        usage["server_tool_use"] = dict(answer.server_counts)
    if answer.report_thinking:
        usage["output_tokens_details"] = {"thinking_tokens": answer.thinking_tokens}


def _container(message_id: str) -> dict[str, Any]:
    """The code execution container of a reply (expires an hour from now)."""
    expires = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    return {"id": "container_011C" + message_id[-20:], "expires_at": expires.isoformat().replace("+00:00", "Z")}


def _details(request: MessagesRequest) -> bool:
    """Whether usage reports ``output_tokens_details`` (in JSON bodies and message_delta,
    never message_start): recorded when the model thinks, by default (Opus 4.8, 5.x) or
    because the request turned thinking on."""
    thinking = request.raw.get("thinking")
    asked = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    return request.model.output_details or asked


def error_body(error_type: str, message: str, request_id: str, error_code: str | None = None) -> dict[str, Any]:
    """The API's error object."""
    details = {"error_code": error_code} if error_code else None
    error: dict[str, Any] = {"type": error_type, "message": message, "details": details}
    return {"type": "error", "error": error, "request_id": request_id}


def json_script(status: int, payload: object, request_id: str, headers: Mapping[str, str] | None = None) -> list[Step]:
    """A complete JSON response (compact, like the API's)."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return _fixed_script(status, data, _JSON, request_id, headers)


def _fixed_script(
    status: int, data: bytes, content_type: str, request_id: str, headers: Mapping[str, str] | None = None
) -> list[Step]:
    all_headers = {"content-type": content_type, "content-length": str(len(data)), "request-id": request_id}
    all_headers.update(headers or {})
    return [Start(status, tuple(all_headers.items())), Body(data)]


def api_error_script(error: ApiError, request_id: str) -> list[Step]:
    """An :class:`ApiError` as the API's error response."""
    code = getattr(error, "error_code", None)
    return json_script(error.status, error_body(error.error_type, error.message, request_id, code), request_id)


def _retry_headers(fault: Fault) -> dict[str, str]:
    headers: dict[str, str] = {}
    numeric = fault.get("retry_after")
    explicit_other = fault.given("retry_after_ms") or fault.given("retry_after_date")
    if numeric is not None and (fault.given("retry_after") or not explicit_other):
        headers["retry-after"] = format_value(fault.number("retry_after"))
    if fault.get("retry_after_ms") is not None:
        headers["retry-after-ms"] = format_value(fault.number("retry_after_ms"))
    if fault.get("retry_after_date") is not None:
        headers["retry-after"] = email.utils.formatdate(time.time() + fault.number("retry_after_date"), usegmt=True)
    should_retry = fault.get("should_retry")
    if should_retry is not None:
        headers["x-should-retry"] = "true" if should_retry else "false"
    return headers


def status_fault_script(fault: Fault, request_id: str) -> list[Step]:
    """An HTTP error response from a ``status`` fault (JSON, or HTML for ``html=true``)."""
    status = int(fault.number("status", 500))
    headers = _retry_headers(fault)
    if fault.get("html"):
        phrase = f"{status} {_phrase(status)}"
        page = f"<html>\r\n<head><title>{phrase}</title></head>\r\n<body>\r\n<center><h1>{phrase}</h1></center>\r\n"
        page += "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
        steps = _fixed_script(status, page.encode(), "text/html", request_id, headers)
    else:
        error_code = fault.get("error_code")
        body = error_body(fault.text("error_type"), fault.text("message"), request_id, str(error_code or "") or None)
        steps = json_script(status, body, request_id, headers)
    return _delayed(fault, steps)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _delayed(fault: Fault, steps: list[Step]) -> list[Step]:
    delay = fault.number("delay")
    return [Pause(delay), *steps] if delay > 0 else steps


def message_script(
    answer: Answer,
    request: MessagesRequest,
    fault: Fault,
    request_id: str,
    chunk_delay: float = 0.0,
    message_id: str | None = None,
) -> list[Step]:
    """The reply as a response script, streamed or not, with the fault applied
    (``message_id``: the reply's id, a new one by default)."""
    message_id = message_id or new_id("msg_")
    gap = chunk_delay + (fault.number("seconds") if fault.kind == "slow" else 0.0)
    if request.stream:
        steps = _stream_steps(answer, request, fault, message_id, request_id, gap)
    else:
        steps = _json_steps(answer, request, fault, message_id, request_id, gap)
    return _delayed(fault, steps)


def _json_steps(
    answer: Answer, request: MessagesRequest, fault: Fault, message_id: str, request_id: str, gap: float
) -> list[Step]:
    kind = fault.kind
    if kind == "error_event":
        error_type = fault.text("error_type")
        status = _EVENT_STATUS.get(error_type, 500)
        return json_script(status, error_body(error_type, fault.text("message"), request_id), request_id)
    if kind == "malformed_event":
        return _fixed_script(
            200, b'{"id": "' + message_id.encode() + b'", "type": "message", "content": [', _JSON, request_id
        )
    steps = json_script(200, _message(answer, request, message_id), request_id)
    deltas = len(split_deltas(answer.text)) + sum(len(input_chunks(call.json)) for call in answer.tool_calls)
    generation = gap * max(0, deltas - 1)
    if kind in ("stall", "stall_headers"):
        generation += fault.number("seconds")
    if generation > 0:
        steps.insert(0, Pause(generation))
    if kind in ("drop", "reset"):
        start, body = steps[-2], steps[-1]
        assert isinstance(body, Body)
        steps[-2:] = [start, Body(body.data[: len(body.data) // 2]), Cut(reset=kind == "reset")]
    return steps


def _stream_steps(
    answer: Answer, request: MessagesRequest, fault: Fault, message_id: str, request_id: str, gap: float
) -> list[Step]:
    kind = fault.kind
    if kind == "stall_headers":
        return [
            Pause(fault.number("seconds")),
            *_stream_steps(answer, request, Fault("ok"), message_id, request_id, gap),
        ]
    steps: list[Step] = [Body(sse.message_start(_message(answer, request, message_id, head=True)))]
    marks: list[int] = []  # positions just after each delta (text or input JSON)
    for index, (block, deltas) in enumerate(_stream_blocks(answer)):
        steps.append(Body(sse.content_block_start(index, block)))
        if index == 0:
            steps.append(Body(sse.ping()))
        for delta in deltas:
            if marks and gap > 0:
                steps.append(Pause(gap))
            steps.append(Body(delta))
            marks.append(len(steps))
        steps.append(Body(sse.content_block_stop(index)))
    if not answer.text and not answer.tool_calls and not answer.lead:
        steps.append(Body(sse.ping()))
    usage = _usage(answer.usage, answer.output_tokens, details=_details(request))
    usage.pop("cache_creation")
    usage.pop("service_tier")
    usage.pop("inference_geo")  # message_start carries it; recorded message_delta usage does not
    _add_extra_usage(usage, answer)
    delta = sse.message_delta(answer.stop_reason, answer.stop_sequence, usage, answer.stop_details)
    if answer.container:
        delta = _with_container(delta, message_id)
    steps.append(Body(delta))
    if kind != "no_message_stop":
        steps.append(Body(sse.message_stop()))
    after = int(fault.number("after"))
    cut = 1 if after == 0 or not marks else marks[min(after, len(marks)) - 1]
    injected: list[Step] = []
    if kind == "error_event":
        steps[cut:] = [Body(sse.error(fault.text("error_type"), fault.text("message")))]
    elif kind in ("drop", "reset"):
        steps[cut:] = [Cut(reset=kind == "reset")]
    elif kind == "stall":
        injected = [Pause(fault.number("seconds"))]
    elif kind == "malformed_event":
        injected = [Body(sse.malformed())]
    steps[cut:cut] = injected
    headers = (("content-type", _SSE), ("cache-control", "no-cache"), ("request-id", request_id))
    return [Start(200, headers), *steps]


def _with_container(frame: bytes, message_id: str) -> bytes:
    """A ``message_delta`` frame with the reply's ``container`` added to its delta."""
    _, _, data = frame.decode().partition("\ndata: ")
    payload = json.loads(data)
    payload["delta"]["container"] = _container(message_id)
    return sse.encode("message_delta", payload, compact=True)


def _stream_blocks(answer: Answer) -> list[tuple[dict[str, Any], list[bytes]]]:
    """Each content block's ``content_block_start`` payload and its delta events."""
    blocks: list[tuple[dict[str, Any], list[bytes]]] = []
    for block in answer.lead:
        index = len(blocks)
        if block["type"] in ("thinking", "redacted_thinking"):
            blocks.append(stream_thinking(index, block))
            continue
        start, partial = stream_server_block(block)
        deltas = [] if partial is None else [sse.input_json_delta(index, p) for p in ["", *input_chunks(partial)]]
        blocks.append((start, deltas))
    if answer.text:
        index = len(blocks)
        blocks.append(({"type": "text", "text": ""}, [sse.text_delta(index, d) for d in split_deltas(answer.text)]))
    for call in answer.tool_calls:
        index = len(blocks)
        start = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}, "caller": {"type": "direct"}}
        # The API opens every tool_use block with an empty partial_json delta (recorded).
        pieces = ["", *input_chunks(call.json)]
        blocks.append((start, [sse.input_json_delta(index, piece) for piece in pieces]))
    return blocks
