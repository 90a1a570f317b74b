"""Message threads in the emulator, driven by the real SDK helpers (``beta.messages.thread``
and ``beta.messages.tool_runner``) and by raw requests for the error cases."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import beta_tool

from canny.emulator import serve_in_thread
from canny.emulator.server import EmulatorHandle
from canny.emulator.threads import THREADS_BETA, TTL_SECONDS, PendingTurn, ThreadStore

KEY = "sk-ant-api03-CANARY-threads"
MODEL = "claude-opus-5"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": THREADS_BETA}

_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


def _client(url: str) -> anthropic.Anthropic:
    """An SDK client, closed after the test."""
    client = anthropic.Anthropic(api_key=KEY, base_url=url, max_retries=0)
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _post(url: str, body: dict[str, Any], headers: dict[str, str] = HEADERS) -> httpx2.Response:
    return httpx2.post(url + "/v1/messages", json=body, headers=headers, timeout=10)


def test_tool_runner_runs_several_tool_turns_on_a_thread(emu: EmulatorHandle) -> None:
    """The SDK tool runner's second and third turns continue the thread with tool results only."""
    url = emu.url_for()
    seen: list[str] = []

    @beta_tool
    def lookup(term: str) -> str:
        """Look a term up in the glossary."""
        seen.append(term)
        return f"{term}: a record of every attempt"

    runner = _client(url).beta.messages.tool_runner(
        model=MODEL,
        max_tokens=500,
        tools=[lookup],
        messages=[{"role": "user", "content": "What is a ledger? [[tool_turns=2]]"}],
    )
    replies = list(runner)
    assert [m.stop_reason for m in replies] == ["tool_use", "tool_use", "end_turn"]
    assert len(seen) == 2
    bodies = [r.body for r in emu.requests(run=url.split("/")[-2])]
    assert [b["thread"]["type"] for b in bodies] == ["create", "continue", "continue"]
    assert all("tools" not in b and len(b["messages"]) == 1 for b in bodies[1:])
    assert bodies[1]["thread"]["previous_message_id"] == replies[0].id
    inputs = [m.usage.input_tokens for m in replies]
    assert inputs[0] < inputs[1] < inputs[2]  # the held history is billed as input


def test_thread_helper_bills_the_held_history_like_the_full_request(emu: EmulatorHandle) -> None:
    """A continued thread turn bills the same input tokens as the full conversation sent unthreaded."""
    url = emu.url_for()
    client = _client(url)
    thread = client.beta.messages.thread(model=MODEL, max_tokens=300, system="Keep replies short.")
    first = thread.send({"role": "user", "content": "Hello there, what is a budget?"})
    second = thread.send({"role": "user", "content": "And a ledger?"})
    history: list[Any] = [
        {"role": "user", "content": "Hello there, what is a budget?"},
        {"role": "assistant", "content": first.content[0].text},  # type: ignore[union-attr]
        {"role": "user", "content": "And a ledger?"},
    ]
    plain = client.messages.create(model=MODEL, max_tokens=300, system="Keep replies short.", messages=history)
    assert second.usage.input_tokens == plain.usage.input_tokens > first.usage.input_tokens
    assert second.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    body = emu.requests(run=url.split("/")[-2])[1].body
    assert body["thread"] == {"type": "continue", "previous_message_id": first.id}
    assert "system" not in body and body["messages"] == [{"role": "user", "content": "And a ledger?"}]


def test_thread_stream_turns_work(emu: EmulatorHandle) -> None:
    """Streamed thread turns are held like non-streamed ones."""
    thread = _client(emu.url_for()).beta.messages.thread(model=MODEL, max_tokens=300)
    with thread.stream({"role": "user", "content": "Tell me about caching"}) as stream:
        first = stream.get_final_message()
    with thread.stream({"role": "user", "content": "More please"}) as stream:
        second = stream.get_final_message()
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


def test_unknown_previous_message_id_is_thread_not_found(emu: EmulatorHandle) -> None:
    """Continuing an id the emulator does not hold is 404 with error_code thread_not_found."""
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "thread": {"type": "continue", "previous_message_id": "msg_nope"},
    }
    response = _post(emu.url_for(), body)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error" and error["details"] == {"error_code": "thread_not_found"}


def test_thread_helper_replays_after_thread_not_found(emu: EmulatorHandle) -> None:
    """A thread_not_found from a fault plan makes the SDK helper replay the full history."""
    lost = "not_found;error_code=thread_not_found"
    url = emu.url_for("ok", lost)
    thread = _client(url).beta.messages.thread(model=MODEL, max_tokens=200)
    thread.send({"role": "user", "content": "First question"})
    reply = thread.send({"role": "user", "content": "Second question"})
    assert reply.stop_reason == "end_turn"
    bodies = [r.body for r in emu.requests(run=url.split("/")[-2])]
    assert [b["thread"]["type"] for b in bodies] == ["create", "continue", "create"]
    assert len(bodies[-1]["messages"]) == 3


def _create(url: str, **extra: Any) -> dict[str, Any]:
    body = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    response = _post(url, {**body, "thread": {"type": "create"}, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({}, 200, None),
        ({"model": "claude-opus-4-8"}, 400, "thread_fingerprint_mismatch"),
        ({"system": "again"}, 400, None),
        ({"tools": []}, 400, None),
    ],
)
def test_continue_rules(emu: EmulatorHandle, change: dict[str, Any], status: int, code: str | None) -> None:
    """A continue may not repeat system or tools, nor change the thread's fixed fields."""
    url = emu.url_for()
    first = _create(url)
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "again"}],
        "thread": {"type": "continue", "previous_message_id": first["id"]},
        **change,
    }
    response = _post(url, body)
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["details"] == {"error_code": code}


def test_each_reply_is_continued_once(emu: EmulatorHandle) -> None:
    """Continuing the same reply twice is 400 thread_already_continued."""
    url = emu.url_for()
    first = _create(url)
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "again"}],
        "thread": {"type": "continue", "previous_message_id": first["id"]},
    }
    assert _post(url, body).status_code == 200
    again = _post(url, body)
    assert again.status_code == 400
    assert again.json()["error"]["details"] == {"error_code": "thread_already_continued"}


def test_thread_field_needs_the_beta_header(emu: EmulatorHandle) -> None:
    """Without the message-threads beta header the thread field is rejected."""
    headers = {k: v for k, v in HEADERS.items() if k != "anthropic-beta"}
    body = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    response = _post(emu.url_for(), {**body, "thread": {"type": "create"}}, headers)
    assert response.status_code == 400 and response.json()["error"]["message"].startswith("thread:")


def test_broken_reply_is_not_held(emu: EmulatorHandle) -> None:
    """A reply whose stream dropped is not held, so continuing it is thread_not_found."""
    url = emu.url_for("drop;after=1")
    body = {"model": MODEL, "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    text = ""
    with httpx2.stream("POST", url + "/v1/messages", json={**body, "thread": {"type": "create"}}, headers=HEADERS) as r:
        try:
            for chunk in r.iter_text():
                text += chunk
        except httpx2.HTTPError:
            pass  # the drop cuts the stream
    message_id = text.split('"id": "')[1].split('"')[0]
    follow = {**body, "stream": False, "thread": {"type": "continue", "previous_message_id": message_id}}
    assert _post(url, follow).status_code == 404


def test_held_thread_expires_five_minutes_after_its_last_request() -> None:
    """A held reply is thread_not_found once its thread saw no request for 5 minutes."""
    now = [0.0]
    store = ThreadStore(clock=lambda: now[0])
    store.hold(
        PendingTurn({}, [{"role": "user", "content": "hi"}], {"model": MODEL}),
        "msg_a",
        [{"type": "text", "text": "yo"}],
    )
    continue_body = {"model": MODEL, "messages": [], "thread": {"type": "continue", "previous_message_id": "msg_a"}}
    now[0] = TTL_SECONDS - 1
    full, _ = store.expand(continue_body, THREADS_BETA)
    assert [m["role"] for m in full["messages"]] == ["user", "assistant"]
    now[0] += TTL_SECONDS - 1  # the continue above restarted the 5 minutes
    store.expand(continue_body, THREADS_BETA)
    now[0] += TTL_SECONDS
    with pytest.raises(Exception, match="no thread state"):
        store.expand(continue_body, THREADS_BETA)
