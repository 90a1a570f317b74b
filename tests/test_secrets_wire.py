"""No cleartext key and no prompt leave the machine: proxies for plain-http base URLs,
``--offline`` and proxy variables, redirects, and SDK errors that echo the key.

Every server here is a real HTTP server on 127.0.0.1 that records what it receives.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import pickle
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import canny
from canny import errors
from canny.cli import main
from canny.config import plain_http_proxy
from canny.retry import RetryPolicy
from tests.conftest import CANARY_KEY

GATEWAY_TOKEN = "gw-token-CANARY-not-shaped-like-an-anthropic-key-42"
REMOTE_PROXY = "http://proxy.invalid:3128"
MODEL = "claude-sonnet-4-6"

_MESSAGE = {
    "id": "msg_local",
    "type": "message",
    "role": "assistant",
    "model": MODEL,
    "content": [{"type": "text", "text": "Hello from the local server."}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 6},
}


@dataclass
class Seen:
    """One request a local server received."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    """A loopback HTTP server; ``seen`` lists every request it received."""

    url: str
    seen: list[Seen] = field(default_factory=list)


Reply = Callable[[BaseHTTPRequestHandler, Seen], None]


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], Server]]:
    """Start loopback servers answering with a given function; all stopped at the end."""
    started: list[ThreadingHTTPServer] = []

    def start(reply: Reply) -> Server:
        server_box: list[Server] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def _any(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, b"")
                seen.body = self.rfile.read(length) if length else b""
                server_box[0].seen.append(seen)
                reply(self, seen)

            do_POST = do_GET = do_CONNECT = _any

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        started.append(httpd)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        server = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
        server_box.append(server)
        return server

    yield start
    for httpd in started:
        httpd.shutdown()
        httpd.server_close()


def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
    handler.send_response(status)
    for name, value in {"content-type": "application/json", **(headers or {})}.items():
        handler.send_header(name, value)
    handler.send_header("content-length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def answer_message(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
    """A valid non-streamed Messages answer."""
    _send(handler, 200, json.dumps(_MESSAGE).encode(), {"request-id": "req_local"})


def refuse_connect(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
    """A proxy that refuses every CONNECT (and answers anything else 502)."""
    _send(handler, 502, b"")


def _echoed(seen: Seen) -> str:
    return (
        f"invalid header: authorization={seen.headers.get('authorization')} x-api-key={seen.headers.get('x-api-key')}"
    )


def echo_key_error(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
    """A gateway that quotes the request's credentials in its 400 error body."""
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": _echoed(seen)}}
    _send(handler, 400, json.dumps(body).encode(), {"request-id": "req_echo"})


def echo_key_in_stream(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
    """A 200 stream that quotes the credentials in an in-band error before any text."""
    events = [
        ("message_start", {"type": "message_start", "message": {**_MESSAGE, "content": [], "stop_reason": None}}),
        ("error", {"type": "error", "error": {"type": "api_error", "message": _echoed(seen)}}),
    ]
    body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
    _send(handler, 200, body, {"content-type": "text/event-stream"})


def redirect_to(target: str, status: int = 307) -> Reply:
    def reply(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        _send(handler, status, b"", {"location": target + seen.target})

    return reply


def _client(base_url: str, **kwargs: Any) -> canny.Client:
    kwargs.setdefault("api_key", CANARY_KEY)
    return canny.Client(base_url=base_url, ledger=False, retry=RetryPolicy(max_attempts=1), **kwargs)


def _call(client: canny.Client, *, streamed: bool, prompt: str = "a private prompt") -> Any:
    """One call, streamed or not; returns the result."""
    if streamed:
        with client.stream(prompt, model=MODEL) as stream:
            return stream.final()
    return client.create(prompt, model=MODEL)


def _secret_free(text: str) -> None:
    assert CANARY_KEY not in text
    assert GATEWAY_TOKEN not in text
    assert CANARY_KEY[len("sk-ant-api03-") :] not in text


# -- proxies and plain http ----------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"])
@pytest.mark.parametrize("streamed", [False, True])
def test_plain_http_through_a_remote_proxy_is_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server], variable: str, streamed: bool
) -> None:
    """A plain-http base URL with a proxy on another host is a ConfigError; nothing is sent."""
    server = serve(answer_message)
    monkeypatch.setenv(variable, REMOTE_PROXY)
    with _client(server.url) as client, pytest.raises(errors.ConfigError) as caught:
        _call(client, streamed=streamed)
    assert "proxy.invalid:3128" in caught.value.message
    assert variable in caught.value.message
    assert "NO_PROXY" in caught.value.hint
    assert server.seen == []
    _secret_free(str(caught.value))


def test_async_client_refuses_a_remote_proxy_for_plain_http(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server]
) -> None:
    """AsyncClient refuses the same route as Client."""
    server = serve(answer_message)
    monkeypatch.setenv("ALL_PROXY", REMOTE_PROXY)

    async def run() -> None:
        async with canny.AsyncClient(api_key=CANARY_KEY, base_url=server.url, ledger=False) as client:
            await client.create("a private prompt", model=MODEL)

    with pytest.raises(errors.ConfigError, match=r"proxy\.invalid"):
        asyncio.run(run())
    assert server.seen == []


@pytest.mark.parametrize(
    "no_proxy", ["127.0.0.1", "localhost,127.0.0.1", "127.0.0.0/8", "*", " example.com , 127.0.0.1 ", "{port}"]
)
def test_no_proxy_sends_a_loopback_base_url_direct(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server], no_proxy: str
) -> None:
    """NO_PROXY covering the base URL's host (name, IP, CIDR, '*', host:port) sends direct."""
    server = serve(answer_message)
    monkeypatch.setenv("HTTP_PROXY", REMOTE_PROXY)
    monkeypatch.setenv("NO_PROXY", no_proxy.format(port="127.0.0.1:" + server.url.rsplit(":", 1)[1]))
    with _client(server.url) as client:
        result = client.create("hello", model=MODEL)
    assert result.text == "Hello from the local server."
    assert [s.target for s in server.seen] == ["/v1/messages"]  # origin form: not a proxy request


def test_no_proxy_for_another_port_or_host_does_not_exempt() -> None:
    """NO_PROXY entries for another port or another host leave the remote proxy refused."""
    for no_proxy in ("127.0.0.1:1", "example.com", "10.0.0.0/8", ".localhost"):
        env = {"HTTP_PROXY": REMOTE_PROXY, "NO_PROXY": no_proxy}
        with pytest.raises(errors.ConfigError):
            plain_http_proxy("http://127.0.0.1:8080", env)


def test_lower_case_proxy_variable_wins_and_credentials_are_not_shown() -> None:
    """http_proxy beats HTTP_PROXY (as curl reads them); proxy credentials stay out of the message."""
    env = {"http_proxy": "http://user:hunter2-password@proxy.invalid:3128", "HTTP_PROXY": "http://127.0.0.1:1"}
    with pytest.raises(errors.ConfigError) as caught:
        plain_http_proxy("http://localhost:8080", env)
    assert "hunter2" not in str(caught.value)
    assert "http://proxy.invalid:3128" in caught.value.message
    assert plain_http_proxy("http://localhost:8080", {"HTTP_PROXY": "127.0.0.1:3128"}) == "http://127.0.0.1:3128"
    assert plain_http_proxy("https://api.anthropic.com", {"HTTPS_PROXY": REMOTE_PROXY}) is None
    assert plain_http_proxy("http://localhost:8080", {}) is None


def test_loopback_proxy_for_plain_http_is_used(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server]
) -> None:
    """A proxy on this machine stays allowed for a plain-http base URL, and is really used."""
    proxy = serve(answer_message)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    with _client("http://127.0.0.1:9") as client:
        result = client.create("hello", model=MODEL)
    assert result.text == "Hello from the local server."
    assert [s.target for s in proxy.seen] == ["http://127.0.0.1:9/v1/messages"]


def test_https_base_url_keeps_the_configured_proxy(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server]
) -> None:
    """An https base URL still goes through HTTPS_PROXY as configured (a CONNECT tunnel)."""
    proxy = serve(refuse_connect)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    with _client("https://api.anthropic.com") as client, pytest.raises(errors.ConnectionFailed) as caught:
        client.create("hello", model=MODEL)
    assert [(s.method, s.target) for s in proxy.seen] == [("CONNECT", "api.anthropic.com:443")]
    assert all(CANARY_KEY not in value for value in proxy.seen[0].headers.values())
    _secret_free(str(caught.value))


@pytest.mark.parametrize("streamed", [False, True])
def test_offline_ignores_proxy_variables(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[Reply], Server], streamed: bool
) -> None:
    """Client(offline=True) talks to its embedded emulator directly, whatever the proxy variables say."""
    proxy = serve(answer_message)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("ALL_PROXY", REMOTE_PROXY)
    with canny.Client(offline=True, ledger=False) as client:
        if streamed:
            with client.stream("an offline prompt") as stream:
                result = stream.final()
        else:
            result = client.create("an offline prompt")
    assert result.outcome == "ok"
    assert proxy.seen == []


def test_cli_offline_ignores_proxy_variables(serve: Callable[[Reply], Server]) -> None:
    """`canny ask --offline` answers from the emulator and sends nothing to HTTP_PROXY."""
    proxy = serve(answer_message)
    env = {"HTTP_PROXY": proxy.url, "http_proxy": proxy.url, "ALL_PROXY": REMOTE_PROXY}
    result = CliRunner().invoke(main, ["ask", "--offline", "an offline prompt"], env=env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    assert proxy.seen == []


def test_cli_refuses_a_remote_proxy_for_plain_http(serve: Callable[[Reply], Server], clean_env: Path) -> None:
    """`canny ask --base-url http://127.0.0.1:...` with a remote HTTP_PROXY: one line, exit 2, nothing sent."""
    server = serve(answer_message)
    env = {"ANTHROPIC_API_KEY": CANARY_KEY, "HTTP_PROXY": REMOTE_PROXY}
    result = CliRunner().invoke(main, ["ask", "--base-url", server.url, "-m", MODEL, "hello"], env=env)
    assert result.exit_code == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("canny:")]
    assert len(lines) == 1 and "proxy.invalid:3128" in lines[0], result.stderr
    assert server.seen == []
    _secret_free(result.stdout + result.stderr)


# -- redirects ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("streamed", [False, True])
def test_redirect_is_an_error_naming_the_location_and_is_not_followed(
    serve: Callable[[Reply], Server], status: int, streamed: bool
) -> None:
    """A 3xx from the base URL is a non-retried RequestRejected naming the Location; the target sees nothing."""
    target = serve(answer_message)
    elsewhere = target.url.replace("127.0.0.1", "localhost")
    redirector = serve(redirect_to(elsewhere, status))
    client = canny.Client(api_key=CANARY_KEY, base_url=redirector.url, ledger=False)
    with client, pytest.raises(errors.APIError) as caught:
        _call(client, streamed=streamed)
    err = caught.value
    assert type(err) is errors.RequestRejected
    assert err.status_code == status
    assert f"{elsewhere}/v1/messages" in err.message
    assert "redirect" in err.message
    assert len(redirector.seen) == 1  # not retried
    assert target.seen == []


def test_async_redirect_is_not_followed(serve: Callable[[Reply], Server]) -> None:
    """AsyncClient does not follow a 308 either."""
    target = serve(answer_message)
    redirector = serve(redirect_to(target.url.replace("127.0.0.1", "localhost"), 308))

    async def run() -> None:
        client = canny.AsyncClient(api_key=CANARY_KEY, base_url=redirector.url, ledger=False)
        async with client, client.stream("a private prompt", model=MODEL) as stream:
            await stream.final()

    with pytest.raises(errors.APIError, match="308 with a redirect to http://localhost"):
        asyncio.run(run())
    assert target.seen == []


def test_cli_redirect_is_one_line_naming_the_location(serve: Callable[[Reply], Server], clean_env: Path) -> None:
    """`canny ask --base-url` to a redirecting server: one line naming the Location, exit 8, prompt not re-posted."""
    target = serve(answer_message)
    redirector = serve(redirect_to(target.url.replace("127.0.0.1", "localhost"), 307))
    env = {"ANTHROPIC_API_KEY": CANARY_KEY}
    result = CliRunner().invoke(main, ["ask", "--base-url", redirector.url, "-m", MODEL, "hello"], env=env)
    assert result.exit_code == 8, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("canny:")]
    assert len(lines) == 1 and "redirect to http://localhost:" in lines[0], result.stderr
    assert target.seen == []
    _secret_free(result.stdout + result.stderr)


# -- errors that echo the key ---------------------------------------------------------------


def _assert_error_is_secret_free(err: BaseException) -> None:
    assert err.__cause__ is None
    assert err.__context__ is None
    stream = io.StringIO()
    logger = logging.getLogger("canny-test-secrets")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise err
        except errors.CannyError:
            logger.exception("the call failed")
    finally:
        logger.removeHandler(handler)
    logged = stream.getvalue()
    assert "the call failed" in logged and type(err).__name__ in logged
    _secret_free(logged)
    _secret_free("".join(traceback.format_exception(err)))
    _secret_free(repr(err) + str(err) + repr(vars(err)))
    _secret_free(pickle.dumps(err).decode("latin-1"))
    _secret_free(repr(getattr(err, "request", None)))
    assert err.__context__ is None  # raising it again here added no context


@pytest.mark.parametrize("api_key", [CANARY_KEY, GATEWAY_TOKEN])
@pytest.mark.parametrize("streamed", [False, True])
def test_error_body_echoing_the_key_leaves_no_trace(
    serve: Callable[[Reply], Server], api_key: str, streamed: bool
) -> None:
    """A 400 body that quotes the key: the canny error has the facts, no SDK cause, and no key anywhere."""
    server = serve(echo_key_error)
    with _client(server.url, api_key=api_key) as client, pytest.raises(errors.RequestRejected) as caught:
        _call(client, streamed=streamed)
    assert api_key in server.seen[0].headers["authorization"]  # the body really echoed it
    err = caught.value
    assert err.status_code == 400
    assert err.error_type == "invalid_request_error"
    assert err.request_id == "req_echo"
    assert "[redacted]" in err.message
    _assert_error_is_secret_free(err)


def test_in_band_stream_error_echoing_the_key_leaves_no_trace(serve: Callable[[Reply], Server]) -> None:
    """An `event: error` inside a 200 stream that quotes the key is scrubbed like a status error."""
    server = serve(echo_key_in_stream)
    with _client(server.url, api_key=GATEWAY_TOKEN) as client, pytest.raises(errors.ServerError) as caught:
        _call(client, streamed=True)
    assert caught.value.error_type == "api_error"
    _assert_error_is_secret_free(caught.value)


def test_async_echoed_key_leaves_no_trace(serve: Callable[[Reply], Server]) -> None:
    """AsyncClient errors carry no SDK cause or context either."""
    server = serve(echo_key_error)

    async def run() -> None:
        async with canny.AsyncClient(api_key=CANARY_KEY, base_url=server.url, ledger=False) as client:
            await client.create("hello", model=MODEL)

    with pytest.raises(errors.RequestRejected) as caught:
        asyncio.run(run())
    _assert_error_is_secret_free(caught.value)


def test_stream_broken_mid_answer_keeps_no_transport_cause(serve: Callable[[Reply], Server]) -> None:
    """A connection dropped during iteration, after output: StreamInterrupted whose cause is a clean canny error."""

    def half_a_stream(handler: BaseHTTPRequestHandler, seen: Seen) -> None:
        start = {"type": "message_start", "message": {**_MESSAGE, "content": [], "stop_reason": None}}
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half"}}
        events = [("message_start", start), ("content_block_start", block), ("content_block_delta", delta)]
        body = "".join(f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in events).encode()
        handler.send_response(200)
        handler.send_header("content-type", "text/event-stream")
        handler.send_header("content-length", str(len(body) + 500))  # promise more than is sent
        handler.end_headers()
        handler.wfile.write(body)
        handler.wfile.flush()
        handler.close_connection = True

    server = serve(half_a_stream)
    shown: list[str] = []
    with _client(server.url) as client, pytest.raises(errors.StreamInterrupted) as caught:
        shown.extend(client.stream("hello", model=MODEL))
    assert shown == ["Half"]
    err = caught.value
    assert isinstance(err.__cause__, errors.ConnectionFailed)
    assert err.__cause__.__cause__ is None and err.__cause__.__context__ is None
    stream_text = "".join(traceback.format_exception(err))
    assert "httpx2" not in stream_text and "anthropic" not in stream_text.split("Traceback")[0]


def test_meter_rows_of_an_echoed_key_are_scrubbed(serve: Callable[[Reply], Server], clean_env: Path) -> None:
    """canny.meter on the user's own SDK client: the ledger row of an echoing error holds no key."""
    import anthropic

    server = serve(echo_key_error)
    ledger_path = clean_env / "metered.db"
    for key in (CANARY_KEY, GATEWAY_TOKEN):
        sdk = anthropic.Anthropic(api_key=key, base_url=server.url, max_retries=0)
        with pytest.raises(anthropic.BadRequestError):
            canny.meter(sdk, ledger=str(ledger_path)).messages.create(
                model=MODEL, max_tokens=16, messages=[{"role": "user", "content": "hello"}]
            )
        sdk.close()
    stored = b"".join(p.read_bytes() for p in clean_env.rglob("*") if p.is_file())
    assert b"invalid_request_error" in stored or b"rejected" in stored
    assert CANARY_KEY.encode() not in stored
    assert GATEWAY_TOKEN.encode() not in stored
