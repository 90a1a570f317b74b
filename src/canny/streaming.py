"""Server-sent events in, a message out: the parser and accumulator every path shares.

Live calls, the meter's tap on plain SDK clients and ``canny replay`` all feed raw bytes
or lines through :class:`SSEDecoder` and the decoded events through
:class:`MessageAccumulator`, so a recorded stream is audited by exactly the code that
billed it.

Tolerated, because the real API and proxies do it: whitespace-padded JSON, ``ping``
events, comments, ``\\r\\n`` line ends, unknown event types, and a stream that ends
without ``message_stop`` (the accumulator then reports ``complete = False`` unless a
final ``message_delta`` with a ``stop_reason`` arrived, which is what ``complete``
means for billing: the answer ended).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from canny.usage import Usage, UsageAccumulator

__all__ = [
    "MAX_LINE_BYTES",
    "OUTPUT_ESTIMATE_NOTE",
    "MessageAccumulator",
    "SSEDecoder",
    "ServerSentEvent",
    "event_payload",
    "iter_events",
    "parse_body",
]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    event: str
    data: str


#: Longest line (and longest event) :class:`SSEDecoder` accepts: 16 MiB.
MAX_LINE_BYTES = 16 * 1024 * 1024


class SSEDecoder:
    """Incremental SSE decoder (WHATWG rules, the subset the API uses).

    A line longer than ``max_line`` bytes, or an event whose data lines add up to more,
    raises :class:`canny.errors.ServerError`: memory stays linear in the body and bounded
    by the cap, and an unfinished line is held as a list of chunks, joined once when its
    newline arrives (never re-scanned or re-copied per chunk).
    """

    __slots__ = ("_data", "_data_size", "_event", "_parts", "_pending", "max_line")

    def __init__(self, *, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._parts: list[bytes] = []  # the unfinished last line, in pieces
        self._pending = 0  # its length in bytes
        self._event = ""
        self._data: list[str] = []
        self._data_size = 0

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line held (never more than ``max_line``)."""
        return self._pending

    @property
    def idle(self) -> bool:
        """Between events: no unfinished line and no event half read."""
        return not self._parts and not self._data and not self._event

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Decode a chunk of bytes; returns the events it completed."""
        if (
            chunk.endswith(b"\n\n")
            and not self._parts
            and not self._data
            and not self._event
            and len(chunk) <= self.max_line
        ):
            events = _whole_events(chunk)
            if events is not None:
                return events
        if b"\n" not in chunk:
            if chunk:
                self._pending += len(chunk)
                if self._pending > self.max_line:
                    self._too_long()
                self._parts.append(chunk)
            return []
        if self._parts:
            self._parts.append(chunk)
            chunk = b"".join(self._parts)
            self._parts = []
            self._pending = 0
        lines = chunk.split(b"\n")
        tail = lines.pop()  # the unfinished last line (often b"")
        if len(chunk) > self.max_line and max(map(len, lines)) > self.max_line:
            self._too_long()
        out: list[ServerSentEvent] = []
        line = self.line
        for raw in lines:
            event = line(raw.rstrip(b"\r").decode("utf-8", errors="replace"))
            if event is not None:
                out.append(event)
        if tail:
            self._pending = len(tail)
            if self._pending > self.max_line:
                self._too_long()
            self._parts.append(tail)
        return out

    def _too_long(self) -> NoReturn:
        from canny.errors import ServerError

        self._parts = []
        self._pending = 0
        self._data = []
        self._data_size = 0

        raise ServerError(
            f"the event stream sent a line or event longer than {self.max_line:,} bytes; it is not a valid stream",
            hint="check the base URL: the API never sends lines this long",
        )

    def line(self, line: str) -> ServerSentEvent | None:
        """Decode one line (without its line end); a blank line dispatches an event."""
        if not line:
            if not self._data and not self._event:
                return None
            event = ServerSentEvent(self._event or "message", "\n".join(self._data))
            self._event = ""
            self._data = []
            self._data_size = 0
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            if self._data:  # the API sends one data line per event; more are capped in sum
                self._data_size = (self._data_size or len(self._data[0])) + len(value) + 1
                if self._data_size > self.max_line:
                    self._too_long()
            self._data.append(value)
        return None

    def flush(self) -> list[ServerSentEvent]:
        """End of input: dispatch a last event that lacked its blank line."""
        out: list[ServerSentEvent] = []
        if self._parts:
            rest = b"".join(self._parts).decode("utf-8", errors="replace")
            self._parts = []
            self._pending = 0
            for line in rest.split("\n"):
                event = self.line(line.rstrip("\r"))
                if event is not None:
                    out.append(event)
        event = self.line("")
        if event is not None:
            out.append(event)
        return out


def _whole_events(chunk: bytes) -> list[ServerSentEvent] | None:
    """The events of a chunk made only of whole events of the API's own shape, each
    ``event: NAME``, ``data: DATA``, blank line (the usual chunk: one event, or a few);
    ``None`` for anything else (comments, CR, several data lines, a missing name), which
    the line-by-line decoder takes. Both give the same events."""
    out: list[ServerSentEvent] = []
    for block in chunk[:-2].split(b"\n\n"):
        end = block.find(b"\n")
        if (
            end <= 7
            or not block.startswith(b"event: ")
            or block.find(b"data: ", end) != end + 1
            or block.find(b"\n", end + 1) != -1
            or b"\r" in block
        ):
            return None
        name = block[7:end].decode("utf-8", errors="replace")
        out.append(ServerSentEvent(name, block[end + 7 :].decode("utf-8", errors="replace")))
    return out


def iter_events(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Decoded JSON payloads of an SSE byte stream (pings included, comments dropped).

    A payload that is not JSON becomes ``{"type": "invalid", "raw": ...}`` so that a
    caller can see it without the stream dying on it.
    """
    decoder = SSEDecoder()
    for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event_payload(event)
    for event in decoder.flush():
        yield event_payload(event)


def event_payload(event: ServerSentEvent) -> dict[str, Any]:
    try:
        data = json.loads(event.data) if event.data.strip() else {}
    except (ValueError, RecursionError):  # not JSON, a number of over 4,300 digits, too deep
        return {"type": "invalid", "event": event.event, "raw": event.data}
    if not isinstance(data, dict):
        return {"type": "invalid", "event": event.event, "raw": event.data}
    if "type" not in data:
        data["type"] = event.event
    return data


#: The ledger note (``extra["output_tokens"]``) on a row whose output tokens are estimated.
OUTPUT_ESTIMATE_NOTE = "estimated: characters / 4 (no final message_delta)"


@dataclass(slots=True)
class MessageAccumulator:
    """Builds the final message from raw stream events, and knows what was shown.

    ``feed`` returns the text of a ``text_delta`` (``""`` otherwise) so the caller can
    print it as it arrives.
    """

    message: dict[str, Any] = field(default_factory=dict)
    usage_acc: UsageAccumulator = field(default_factory=UsageAccumulator)
    #: True once any content delta arrived: from then on nothing may be re-sent.
    shown: bool = False
    #: ``message_stop`` arrived.
    stopped: bool = False
    #: The payload of an in-band ``error`` event, if one arrived.
    error: dict[str, Any] | None = None
    _text_parts: list[str] = field(default_factory=list)
    _json_parts: dict[int, list[str]] = field(default_factory=dict)

    def feed(self, event: Mapping[str, Any]) -> str:
        kind = event.get("type")
        if kind == "message_start":
            start = event.get("message")
            if isinstance(start, (dict, Mapping)):
                self.message = {k: v for k, v in start.items() if k != "usage"}
                self.message["content"] = list(start.get("content") or [])
            self.usage_acc.feed(event)
        elif kind == "content_block_start":
            index = _index(event, len(self._content))
            raw_block = event.get("content_block")
            block = dict(raw_block) if isinstance(raw_block, (dict, Mapping)) else {}
            while len(self._content) <= index:
                self._content.append({})
            self._content[index] = block
        elif kind == "content_block_delta":
            return self._delta(event)
        elif kind == "content_block_stop":
            self._finish_block(_index(event, -1))
        elif kind == "message_delta":
            delta = event.get("delta")
            delta = delta if isinstance(delta, (dict, Mapping)) else {}
            for key in ("stop_reason", "stop_sequence", "stop_details", "container"):
                if key in delta:
                    self.message[key] = delta[key]
            self.usage_acc.feed(event)
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            self.error = dict(event)
        return ""

    @property
    def _content(self) -> list[dict[str, Any]]:
        content = self.message.setdefault("content", [])
        assert isinstance(content, list)
        return content

    def _delta(self, event: Mapping[str, Any]) -> str:
        self.shown = True
        index = _index(event, 0)
        raw = event.get("delta")
        delta = raw if isinstance(raw, (dict, Mapping)) else {}
        while len(self._content) <= index:
            self._content.append({"type": "text", "text": ""})
        block = self._content[index]
        dtype = delta.get("type")
        if dtype == "text_delta":
            text = str(delta.get("text", ""))
            block["text"] = block.get("text", "") + text
            self._text_parts.append(text)
            return text
        if dtype == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + str(delta.get("thinking", ""))
        elif dtype == "signature_delta":
            block["signature"] = str(delta.get("signature", ""))
        elif dtype == "input_json_delta":
            self._json_parts.setdefault(index, []).append(str(delta.get("partial_json", "")))
        elif dtype == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))
        return ""

    def _finish_block(self, index: int) -> None:
        parts = self._json_parts.pop(index, None)
        if parts is None or not (0 <= index < len(self._content)):
            return
        raw = "".join(parts)
        try:
            self._content[index]["input"] = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            self._content[index]["input"] = {}
            self._content[index]["partial_json"] = raw

    @property
    def text(self) -> str:
        """All text deltas so far, concatenated (thinking excluded)."""
        return "".join(self._text_parts)

    @property
    def usage(self) -> Usage:
        return self.usage_acc.usage

    def billed_usage(self) -> tuple[Usage, str | None]:
        """The usage to bill, and a note when part of it is an estimate.

        A stream cut before its final ``message_delta`` never said how many output tokens
        it produced: the text shown is billed at characters / 4 (when that is more than
        ``message_start`` reported). Every path (clients, meter, replay) uses this rule."""
        usage = self.usage
        if self.complete or self.usage_acc.seen_delta:
            return usage, None
        estimate = math.ceil(len(self.text) / 4)
        if estimate <= usage.output:
            return usage, None
        return self.usage_acc.with_output(estimate), OUTPUT_ESTIMATE_NOTE

    @property
    def stop_reason(self) -> str | None:
        value = self.message.get("stop_reason")
        return str(value) if value is not None else None

    @property
    def complete(self) -> bool:
        """The answer ended normally: a stop reason arrived and no error event did."""
        return self.error is None and (self.stopped or self.stop_reason is not None)

    @property
    def refusal_category(self) -> str | None:
        details = self.message.get("stop_details")
        if isinstance(details, (dict, Mapping)):
            category = details.get("category")
            return str(category) if category is not None else None
        return None

    def final_message(self) -> dict[str, Any]:
        """The message in the API's non-streamed shape, with the merged usage."""
        for index in list(self._json_parts):
            self._finish_block(index)
        message = dict(self.message)
        message.setdefault("type", "message")
        message.setdefault("role", "assistant")
        message.setdefault("stop_reason", None)
        message.setdefault("stop_sequence", None)
        message["usage"] = self.usage.to_api()
        return message


def _index(event: Mapping[str, Any], default: int) -> int:
    value = event.get("index", default)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10_000:
        return value
    return default if default >= 0 else -1


def parse_body(body: bytes) -> MessageAccumulator:
    """Read a whole recorded response, SSE or JSON, into an accumulator. A body that is
    neither (an HTML page, an empty body) is a :class:`ValueError`."""
    stripped = body.lstrip()
    acc = MessageAccumulator()
    if stripped.startswith(b"{"):
        try:
            data = json.loads(body)
        except RecursionError:
            raise ValueError("the JSON body is nested too deeply") from None
        if data.get("type") == "error" or (isinstance(data.get("error"), Mapping) and "content" not in data):
            acc.error = data
            return acc
        acc.message = {k: v for k, v in data.items() if k != "usage"}
        acc.usage_acc.start(data.get("usage"))
        content = data.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, Mapping) and block.get("type") == "text":
                acc._text_parts.append(str(block.get("text", "")))
        acc.shown = bool(acc._text_parts)
        acc.stopped = True
        return acc
    events = 0
    for event in iter_events([body]):
        acc.feed(event)
        events += 1
    if not events:  # an HTML page, plain text, an empty body: not a response of the API
        raise ValueError("neither a JSON object nor a stream of server-sent events")
    return acc
