"""The SSE decoder and the message accumulator shared by live calls and replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from canny.streaming import MessageAccumulator, SSEDecoder, iter_events, parse_body

PADDED = (Path(__file__).parent / "fixtures" / "basic_padded.sse").read_bytes()


def _accumulate(body: bytes, chunk: int) -> MessageAccumulator:
    acc = MessageAccumulator()
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    for event in iter_events(pieces):
        acc.feed(event)
    return acc


def test_padded_stream_with_pings_accumulates() -> None:
    """The docs' verbatim stream (padded JSON, a ping) gives text, stop reason and usage."""
    acc = _accumulate(PADDED, 4096)
    assert acc.text == "Hello!"
    assert acc.stop_reason == "end_turn"
    assert acc.complete and acc.stopped
    assert (acc.usage.input, acc.usage.output) == (25, 15)
    assert acc.final_message()["content"] == [{"type": "text", "text": "Hello!"}]


@given(st.integers(min_value=1, max_value=64))
def test_any_chunking_gives_the_same_result(chunk: int) -> None:
    """Splitting the byte stream anywhere (even mid-UTF-8 or mid-line) changes nothing."""
    acc = _accumulate(PADDED.replace(b"Hello", "Héllo ✓".encode()), chunk)
    assert acc.text == "Héllo ✓!"
    assert acc.usage.output == 15


def test_crlf_line_ends_and_comments() -> None:
    """CRLF line ends and comment lines are handled."""
    body = b': keep-alive\r\nevent: message_stop\r\ndata: {"type": "message_stop"}\r\n\r\n'
    assert list(iter_events([body])) == [{"type": "message_stop"}]


def test_missing_message_stop_still_complete_when_stop_reason_came() -> None:
    """A stream whose message_stop is missing still ended if message_delta had a stop reason."""
    body = PADDED.split(b"event: message_stop")[0]
    acc = _accumulate(body, 100)
    assert acc.complete
    assert not acc.stopped


def test_truncated_stream_is_incomplete() -> None:
    """A stream cut before message_delta is not complete; output stays the placeholder."""
    body = PADDED.split(b"event: content_block_stop")[0]
    acc = _accumulate(body, 100)
    assert not acc.complete
    assert acc.shown
    assert acc.text == "Hello!"
    assert acc.usage.output == 1


def test_in_band_error_is_captured() -> None:
    """An `event: error` is kept as the accumulator's error and makes it incomplete."""
    body = PADDED.split(b"event: content_block_delta")[0] + (
        b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
    )
    acc = _accumulate(body, 100)
    assert acc.error is not None
    assert acc.error["error"]["type"] == "overloaded_error"
    assert not acc.complete
    assert not acc.shown


def test_tool_use_json_is_assembled() -> None:
    """input_json_delta pieces become the tool_use block's input object."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": "m", "content": [], "usage": {"input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a": '}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "[1, 2]}"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
    ]
    acc = MessageAccumulator()
    for event in events:
        acc.feed(event)
    assert acc.final_message()["content"][0]["input"] == {"a": [1, 2]}
    assert acc.text == ""


def test_thinking_is_not_text() -> None:
    """Thinking deltas are kept in their block but are not part of the text."""
    acc = MessageAccumulator()
    acc.feed({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    acc.feed({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}})
    acc.feed({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})
    acc.feed({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Answer"}})
    assert acc.text == "Answer"
    assert acc.final_message()["content"][0]["thinking"] == "hmm"


def test_json_body_is_parsed() -> None:
    """A non-streamed JSON response gives the same fields as a stream."""
    body = json.dumps(
        {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5",
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "usage": {"input_tokens": 4, "output_tokens": 2, "cache_read_input_tokens": 8},
        }
    ).encode()
    acc = parse_body(body)
    assert (acc.text, acc.stop_reason, acc.usage.cache_read) == ("Hi", "end_turn", 8)


def test_invalid_json_data_does_not_raise() -> None:
    """A data line that is not JSON becomes an 'invalid' event instead of an exception."""
    assert next(iter_events([b"event: x\ndata: {not json\n\n"]))["type"] == "invalid"


@given(st.binary(max_size=400))
def test_decoder_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    """Fuzz: arbitrary bytes never crash the decoder or the accumulator."""
    acc = MessageAccumulator()
    for event in iter_events([data]):
        acc.feed(event)
    decoder = SSEDecoder()
    decoder.feed(data)
    decoder.flush()


_leaf = st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4)
_field = (
    _leaf | st.lists(_leaf, max_size=2) | st.dictionaries(st.sampled_from(["type", "text", "index"]), _leaf, max_size=2)
)
_event = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta"]
        )
    },
    optional={"index": _field, "delta": _field, "message": _field, "usage": _field, "content_block": _field},
)


@given(st.lists(_event, max_size=8))
def test_accumulator_survives_malformed_events(events: list[dict[str, object]]) -> None:
    """Fuzz: events with malformed fields never raise in the accumulator."""
    acc = MessageAccumulator()
    for event in events:
        acc.feed(event)
    acc.final_message()
    _ = acc.usage


_sse_text = st.text(alphabet=st.sampled_from(["a", "é", ":", " ", "\r", "\n", "{", "☃"]), max_size=6)
_sse_line = st.one_of(
    st.builds(lambda n: f"event: {n}", _sse_text),
    st.builds(lambda d: f"data: {d}", _sse_text),
    st.builds(lambda d: f"data:{d}", _sse_text),
    st.builds(lambda c: f": {c}", _sse_text),
    _sse_text,
)
_sse_block = st.one_of(
    st.builds(lambda n, d: f"event: {n}\ndata: {d}", _sse_text, _sse_text),
    st.lists(_sse_line, max_size=4).map("\n".join),
)


@given(st.lists(_sse_block, max_size=6))
def test_whole_event_chunks_decode_as_byte_by_byte_feeding_does(blocks: list[str]) -> None:
    """A chunk of whole events (the fast path) yields the events the line-by-line path does."""
    body = "".join(block + "\n\n" for block in blocks).encode()
    whole = SSEDecoder()
    at_once = whole.feed(body) + whole.flush()
    single = SSEDecoder()
    by_byte = [event for i in range(len(body)) for event in single.feed(body[i : i + 1])] + single.flush()
    assert at_once == by_byte
