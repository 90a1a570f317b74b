"""The ``replay`` fault: a recorded response served byte for byte, from scenario files only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from canny.emulator import Scenario, load_scenario, serve_in_thread
from canny.emulator.faults import make_fault, parse_plan

KEY = "sk-ant-api03-CANARY-emulator-replay-key"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
WIRE = Path(__file__).resolve().parent / "wire"
BODY: Any = {"model": "claude-opus-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}


def _client(base_url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0, open_telemetry=False)


def test_replays_a_wire_corpus_stream_through_the_sdk() -> None:
    """A tests/wire exchange file is replayed with its status and body; the SDK assembles it."""
    path = WIRE / "claude3_opus_text_stream.json"
    recorded = json.loads(path.read_text())
    scenario = load_scenario(f'[[step]]\nfault = "replay"\nfile = {json.dumps(str(path))}\n')
    with serve_in_thread(scenario) as emu, _client(emu.base_url) as client:
        raw = httpx2.post(f"{emu.base_url}/v1/messages", json={**BODY, "stream": True}, headers=HEADERS)
        assert raw.status_code == recorded["status"] and raw.text == recorded["body"]
        assert emu.requests()[-1].fault == f"replay;file={path}"
        with client.messages.stream(**BODY) as stream:  # the scenario is over: a normal answer
            assert stream.get_final_message().stop_reason == "end_turn"


def test_replays_a_recorded_error_exchange() -> None:
    """An exchange file's error status and headers come back; the SDK raises the matching error."""
    path = WIRE / "error_529_overloaded.json"
    status = json.loads(path.read_text())["status"]
    scenario = Scenario.of(make_fault("replay", {"file": str(path)}))
    with (
        serve_in_thread(scenario) as emu,
        _client(emu.base_url) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(**BODY)
    assert caught.value.status_code == status == 529
    assert isinstance(caught.value, anthropic.OverloadedError)


def test_replays_a_raw_sse_body(tmp_path: Path) -> None:
    """A raw body starting with 'event:' is served as text/event-stream, status 200."""
    body = (WIRE / "claude3_opus_text_stream.json").read_text()
    raw_file = tmp_path / "answer.sse"
    raw_file.write_text(json.loads(body)["body"])
    with serve_in_thread(Scenario.of(f"replay;file={raw_file}")) as emu:
        response = httpx2.post(f"{emu.base_url}/v1/messages", json=BODY, headers=HEADERS)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.text == raw_file.read_text()


def test_missing_file_is_a_400(tmp_path: Path) -> None:
    """A replay file that cannot be read is a 400 naming it."""
    with serve_in_thread(Scenario.of(f"replay;file={tmp_path / 'none.sse'}")) as emu:
        response = httpx2.post(f"{emu.base_url}/v1/messages", json=BODY, headers=HEADERS)
    assert response.status_code == 400 and "none.sse" in response.json()["error"]["message"]


def test_clients_cannot_ask_for_replay(tmp_path: Path) -> None:
    """Neither a URL plan nor a prompt directive can make the server read a file."""
    with pytest.raises(ValueError, match="scenario file"):
        parse_plan("replay;file=secret")
    secret = tmp_path / "secret.json"
    secret.write_text('{"status": 200, "body": "top secret"}')
    prompt = {**BODY, "messages": [{"role": "user", "content": f"[[fault=replay;file={secret}]]"}]}
    with serve_in_thread() as emu:
        directive = httpx2.post(f"{emu.base_url}/v1/messages", json=prompt, headers=HEADERS)
        plan = httpx2.post(f"{emu.base_url}/x/r/replay/v1/messages", json=BODY, headers=HEADERS)
    assert directive.status_code == 400 and "top secret" not in directive.text
    assert plan.status_code == 400
