"""Message Batches and Files in the emulator, through the official ``anthropic`` SDK."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

from canny.emulator import Scenario, load_scenario, serve_in_thread
from canny.emulator.server import EmulatorHandle

KEY = "sk-ant-api03-CANARY-emulator-batches-key"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MODEL = "claude-opus-5-5"


def _params(text: str = "Hello there", **extra: object) -> Any:
    return {"model": MODEL, "max_tokens": 200, "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread(Scenario(files_downloadable=True)) as handle:
        yield handle


_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(base_url: str) -> anthropic.Anthropic:
    client = anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=0, open_telemetry=False)
    _OPEN.append(client)
    return client


def test_batch_ends_and_results_are_messages_at_batch_tier(emu: EmulatorHandle) -> None:
    """A batch answers each request like /v1/messages, with usage.service_tier 'batch', as JSONL."""
    client = _client(emu.base_url)
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": "ok-1", "params": _params()},
            {"custom_id": "bad-model", "params": _params(model="claude-nope-9")},
            {"custom_id": "streamed", "params": _params(stream=True)},
        ]
    )
    assert batch.id.startswith("msgbatch_01") and batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3 and batch.results_url is None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (1, 2)
    assert ended.results_url == f"{emu.base_url}/v1/messages/batches/{batch.id}/results"
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    ok = results["ok-1"]
    assert ok.type == "succeeded"
    assert ok.message.usage.service_tier == "batch" and ok.message.content[0].type == "text"
    direct = client.messages.create(**_params())
    assert ok.message.content[0].text == direct.content[0].text
    bad = results["bad-model"]
    assert bad.type == "errored" and bad.error.error.type == "not_found_error"
    assert results["streamed"].type == "errored"


def test_batch_stays_in_progress_for_the_scenario_time() -> None:
    """batch_seconds keeps a batch in_progress that long; results before the end are a 400."""
    with serve_in_thread(Scenario(batch_seconds=2.0)) as emu:  # room for a loaded machine
        client = _client(emu.base_url)
        batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": _params()}])
        assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
        response = httpx2.get(f"{emu.base_url}/v1/messages/batches/{batch.id}/results", headers=HEADERS)
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
        time.sleep(2.05)
        assert client.messages.batches.retrieve(batch.id).request_counts.succeeded == 1


def test_cancel_ends_with_every_request_canceled() -> None:
    """Cancel answers 'canceling'; the batch then ends with each request canceled, and can be deleted."""
    with serve_in_thread(Scenario(batch_seconds=60)) as emu:
        client = _client(emu.base_url)
        batch = client.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": _params()} for i in range(3)])
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.delete(batch.id)
        canceled = client.messages.batches.cancel(batch.id)
        assert canceled.processing_status == "canceling" and canceled.cancel_initiated_at is not None
        ended = client.messages.batches.retrieve(batch.id)
        assert ended.processing_status == "ended" and ended.request_counts.canceled == 3
        assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}
        assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(batch.id)


def test_batch_list_pages_newest_first(emu: EmulatorHandle) -> None:
    """The SDK's auto-pagination walks every batch, newest first."""
    client = _client(emu.base_url)
    made = [client.messages.batches.create(requests=[{"custom_id": "x", "params": _params()}]).id for _ in range(3)]
    listed = [b.id for b in client.messages.batches.list(limit=1)]
    assert [i for i in listed if i in made] == made[::-1]


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"requests": []}, "at least 1 item"),
        ({"requests": [{"custom_id": "a b", "params": {}}]}, "requests.0.custom_id"),
        ({"requests": [{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}]}, "Duplicate custom_id"),
        ({"requests": [{"custom_id": "a"}]}, "requests.0.params: Field required"),
        ({"requests": [], "extra": 1}, "extra: Extra inputs are not permitted"),
    ],
)
def test_bad_batch_is_a_400(emu: EmulatorHandle, body: dict[str, object], needle: str) -> None:
    """A malformed create body is a 400 invalid_request_error naming the field."""
    response = httpx2.post(f"{emu.base_url}/v1/messages/batches", json=body, headers=HEADERS)
    assert response.status_code == 400
    assert needle in response.json()["error"]["message"]


def test_batches_need_a_key(emu: EmulatorHandle) -> None:
    """Batch and file endpoints answer 401 without a key, and log the request."""
    for path in ("/v1/messages/batches", "/v1/files"):
        assert httpx2.get(f"{emu.base_url}{path}").status_code == 401
    assert emu.requests()[-1].status == 401


def test_files_upload_list_retrieve_download_delete(emu: EmulatorHandle) -> None:
    """The SDK's beta.files helpers round-trip a file's bytes and metadata."""
    client = _client(emu.base_url)
    data = b"line one\r\nline two\n\x00\xff"
    uploaded = client.beta.files.upload(file=("dir/notes.txt", data, "text/plain"))
    assert uploaded.id.startswith("file_01") and uploaded.filename == "notes.txt"
    assert (uploaded.mime_type, uploaded.size_bytes, uploaded.downloadable) == ("text/plain", len(data), True)
    assert client.beta.files.retrieve_metadata(uploaded.id) == uploaded
    assert uploaded.id in [f.id for f in client.beta.files.list(limit=1)]
    assert client.beta.files.download(uploaded.id).read() == data
    assert client.beta.files.delete(uploaded.id).type == "file_deleted"
    with pytest.raises(anthropic.NotFoundError):
        client.beta.files.retrieve_metadata(uploaded.id)
    key_free = "".join(str(r.headers) for r in emu.requests())
    assert KEY not in key_free


def test_uploads_are_not_downloadable_by_default() -> None:
    """As documented, an uploaded file has downloadable false and its download is a 400."""
    with serve_in_thread() as emu:
        client = _client(emu.base_url)
        uploaded = client.beta.files.upload(file=("a.pdf", b"%PDF-1.4", "application/octet-stream"))
        assert uploaded.downloadable is False and uploaded.mime_type == "application/pdf"
        with pytest.raises(anthropic.BadRequestError):
            client.beta.files.download(uploaded.id)


def test_upload_without_a_file_part_is_a_400(emu: EmulatorHandle) -> None:
    """An upload that is not multipart, or has no 'file' part, is a 400."""
    url = f"{emu.base_url}/v1/files"
    assert httpx2.post(url, json={"file": "x"}, headers=HEADERS).status_code == 400
    response = httpx2.post(url, data={"other": "1"}, files={"x": ("a", b"1")}, headers=HEADERS)
    assert response.status_code == 400 and "file" in response.json()["error"]["message"]


def test_scenario_file_sets_batch_seconds_and_downloads() -> None:
    """batch_seconds and files_downloadable load from a scenario file; bad values name the key."""
    scenario = load_scenario("batch_seconds = 2.5\nfiles_downloadable = true\n")
    assert (scenario.batch_seconds, scenario.files_downloadable) == (2.5, True)
    with pytest.raises(ValueError, match="batch_seconds"):
        load_scenario("batch_seconds = -1\n")
    with pytest.raises(ValueError, match="files_downloadable"):
        load_scenario("files_downloadable = 'yes'\n")


def test_serve_writes_the_port_file(tmp_path: Path) -> None:
    """serve --port 0 --port-file writes the bound port once it listens; requests then work."""
    port_file = tmp_path / "port"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "canny", "emulator", "serve", "--port", "0", "--port-file", str(port_file)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while not port_file.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        port = int(port_file.read_text())
        response = httpx2.get(f"http://127.0.0.1:{port}/v1/models", headers=HEADERS)
        assert response.status_code == 200
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_stores_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the file store's bound an upload is a 413; past the batch bound the oldest batch is gone."""
    monkeypatch.setattr("canny.emulator.files.MAX_STORE_BYTES", 10)
    monkeypatch.setattr("canny.emulator.batches.MAX_BATCHES", 2)
    with serve_in_thread() as emu:
        client = _client(emu.base_url)
        client.beta.files.upload(file=("a.txt", b"123456", "text/plain"))
        with pytest.raises(anthropic.APIStatusError) as caught:
            client.beta.files.upload(file=("b.txt", b"123456", "text/plain"))
        assert caught.value.status_code == 413
        ids = [client.messages.batches.create(requests=[{"custom_id": "a", "params": _params()}]).id for _ in range(3)]
        with pytest.raises(anthropic.NotFoundError):
            client.messages.batches.retrieve(ids[0])
        assert client.messages.batches.retrieve(ids[2]).id == ids[2]
