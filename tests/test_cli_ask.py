"""`canny ask` end to end: streamed text on stdout, one usage line on stderr, exit codes,
clean one-line errors, and a key that never shows anywhere."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from canny.cli import main
from tests.conftest import CANARY_KEY

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fast_config(clean_env: Path) -> Path:
    """A config whose retries do not wait, so failure paths run quickly."""
    (clean_env / "config.toml").write_text("[retry]\ninitial_delay = 0.001\nmax_attempts = 3\n", encoding="utf-8")
    return clean_env


def _ask(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["ask", *args], env=env, input=stdin)


def _assert_no_key(result: Result, home: Path) -> None:
    assert CANARY_KEY not in result.stdout
    assert CANARY_KEY not in result.stderr
    for path in home.rglob("*"):
        if path.is_file():
            assert CANARY_KEY.encode() not in path.read_bytes(), path


def _one_line(stderr: str) -> str:
    """The one error line (the progress lines of retries, `..., retrying in 2 s, ...`, aside)."""
    lines = [line for line in stderr.splitlines() if line.startswith("canny:") and ", retrying in " not in line]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_offline_streams_and_prints_usage_line(clean_env: Path) -> None:
    """`canny ask --offline` answers on stdout and prints `[tokens in/out: ...$...]` on stderr."""
    result = _ask("--offline", "hello")
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip()) > 20
    usage = [line for line in result.stderr.splitlines() if line.startswith("[tokens in/out: ")]
    assert len(usage) == 1
    assert "$" in usage[0]
    assert "claude-sonnet-5-5" in usage[0]


def test_offline_as_a_real_process(clean_env: Path) -> None:
    """The console script runs offline with no key and no network, like the Quick start."""
    out = subprocess.run(
        [sys.executable, "-m", "canny", "ask", "--offline", "hello"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()
    assert out.stderr.startswith("[tokens in/out: ")


def test_every_attempt_lands_in_the_ledger(clean_env: Path) -> None:
    """An offline ask writes one ledger row at CANNY_HOME/ledger.db, tagged `offline`."""
    from canny.ledger import open_ledger

    assert _ask("--offline", "--tag", "demo", "--project", "p1", "hello").exit_code == 0
    ledger = open_ledger(clean_env / "ledger.db")
    rows = list(ledger.records())
    ledger.close()
    assert len(rows) == 1
    assert (rows[0].outcome, rows[0].project, rows[0].tags) == ("ok", "p1", ("demo", "offline"))
    assert rows[0].cost_usd is not None and rows[0].cost_usd > 0


def test_json_output(clean_env: Path) -> None:
    """--json prints one JSON object with message, outcome, usage and cost."""
    result = _ask("--offline", "--json", "hello")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["outcome"] == "ok"
    assert data["message"]["content"][0]["type"] == "text"
    assert data["usage"]["output"] > 0
    assert data["cost_usd"] is not None


def test_prompt_from_stdin(clean_env: Path) -> None:
    """`-` reads the prompt from standard input."""
    result = _ask("--offline", "-", stdin="What is a ledger?\n")
    assert result.exit_code == 0
    assert result.stdout.strip()


def test_piped_stdin_is_the_prompt_when_none_is_given(clean_env: Path) -> None:
    """`echo hi | canny ask --offline`: no PROMPT and a non-terminal stdin reads the prompt from it."""
    from canny.ledger import open_ledger

    result = _ask("--offline", "--log-content", stdin="What is a ledger?\n")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip()
    ledger = open_ledger(clean_env / "ledger.db")
    (row,) = list(ledger.records())
    ledger.close()
    assert "What is a ledger?" in (row.prompt_text or "")


def test_piped_stdin_as_a_real_process(clean_env: Path) -> None:
    """A real pipe into `python -m canny ask --offline` (no PROMPT) answers, exit 0."""
    out = subprocess.run(
        [sys.executable, "-m", "canny", "ask", "--offline"],
        input=b"hi\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip()


def test_no_prompt_and_a_terminal_is_a_usage_error(clean_env: Path) -> None:
    """No PROMPT with stdin on a terminal: exit 2 and one line saying how to give a prompt (no waiting)."""
    import os
    import pty

    primary, secondary = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "canny", "ask", "--offline"],
            stdin=secondary,
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert out.returncode == 2
    line = _one_line(out.stderr.decode())
    assert "PROMPT" in line and "standard input" in line


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b"caf\xe9 au lait\n", "not UTF-8 text (byte 0xe9 at offset 3)"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00", "binary data (a NUL byte at offset 7)"),
        (b"hello\x00world", "binary data"),
        (b"\xff\xfeh\x00i\x00", "binary data"),
    ],
    ids=["latin-1", "elf", "nul", "utf-16"],
)
@pytest.mark.parametrize("args", [["-"], []], ids=["dash", "no-prompt"])
def test_non_utf8_or_binary_stdin_is_one_line_and_exit_2(
    clean_env: Path, args: list[str], data: bytes, says: str
) -> None:
    """Stdin that is not UTF-8 text is exit 2 with one line naming the problem, never a bug report."""
    result = CliRunner().invoke(main, ["ask", "--offline", *args], input=data)
    assert result.exit_code == 2, result.output
    line = _one_line(result.stderr)
    assert says in line
    assert "please report" not in result.stderr
    assert not (clean_env / "ledger.db").exists() or not _ledger_rows(clean_env)


def test_binary_stdin_as_a_real_process_is_exit_2(clean_env: Path) -> None:
    """`canny ask - < /bin/file` in a real process: exit 2, one line, no traceback."""
    out = subprocess.run(
        [sys.executable, "-m", "canny", "ask", "--offline", "-"],
        input=b"\x00\x01\x02binary",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "binary data" in _one_line(out.stderr.decode())
    assert out.stdout == b""


def test_a_utf8_bom_on_stdin_is_not_part_of_the_prompt(clean_env: Path) -> None:
    """A UTF-8 byte order mark (Windows editors) is dropped, not sent as part of the prompt."""
    result = CliRunner().invoke(main, ["ask", "--offline", "--log-content", "-"], input="\ufeffhello".encode())
    assert result.exit_code == 0, result.stderr
    (row,) = _ledger_rows(clean_env)
    assert "\ufeff" not in (row.prompt_text or "")


def test_a_non_utf8_prompt_argument_is_exit_2(clean_env: Path) -> None:
    """A PROMPT argument whose bytes are not UTF-8 is exit 2 with one line, not an unexpected error."""
    import os

    out = subprocess.run(
        [os.fsencode(sys.executable), b"-m", b"canny", b"ask", b"--offline", b"caf\xe9"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "not valid UTF-8" in _one_line(out.stderr.decode())


def _ledger_rows(home: Path) -> list[Any]:
    from canny.ledger import open_ledger

    ledger = open_ledger(home / "ledger.db")
    try:
        return list(ledger.records())
    finally:
        ledger.close()


@pytest.mark.parametrize("args", [["--offline", "   "], ["--offline", "--max-tokens", "0", "hi"], ["--offline", "-"]])
def test_bad_usage_exits_2(clean_env: Path, args: list[str]) -> None:
    """An empty prompt or a bad option is exit code 2 with no traceback."""
    result = _ask(*args, stdin="")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_missing_key_is_one_clean_line(clean_env: Path) -> None:
    """With no key anywhere, ask says how to set one, exit 2."""
    result = _ask("hello")
    assert result.exit_code == 2
    line = _one_line(result.stderr)
    assert "canny key set" in line and "ANTHROPIC_API_KEY" in line


def test_bad_key_against_a_server_answering_401(clean_env: Path) -> None:
    """A bad key against a server that answers 401 prints one clean line and exits 3."""
    from canny.emulator import serve_in_thread

    with serve_in_thread(api_key="sk-ant-api03-CANARY-the-only-key-this-server-accepts") as emu:
        result = _ask("hello", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": emu.base_url})
    assert result.exit_code == 3
    line = _one_line(result.stderr)
    assert "authentication failed (401" in line
    assert "request id req_" in line
    assert "canny key" in line
    assert result.stdout == ""
    _assert_no_key(result, clean_env)


CLI_FAULTS = [
    ("bad_key", 3, "authentication"),
    ("permission", 3, "permission"),
    ("spend_limit", 4, "spend limit"),
    ("refusal;category=bio", 5, "declined"),
    ("error_event;after=2", 6, "incomplete"),
    ("drop;after=2", 6, "incomplete"),
    ("overloaded,overloaded,overloaded", 7, "gave up after 3 attempts"),
    ("rate_limit;retry_after_ms=1,rate_limit;retry_after_ms=1,rate_limit;retry_after_ms=1", 7, "rate limited"),
    ("bad_request", 8, "request rejected (400"),
    ("not_found", 8, "not found (404"),
    ("too_large", 8, "413"),
    ("unprocessable", 8, "422"),
]


@pytest.mark.parametrize(("plan", "code", "fragment"), CLI_FAULTS)
def test_fault_exit_codes(emulator: Any, fast_config: Path, run_id: str, plan: str, code: int, fragment: str) -> None:
    """Each failure has its documented exit code and one clean stderr line; the key never shows."""
    base = emulator.url_for(*plan.split(","), run=run_id)
    result = _ask("Explain retries", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == code, result.stderr
    assert fragment in _one_line(result.stderr)
    _assert_no_key(result, fast_config)


def test_interrupted_text_is_shown_once_and_billed(emulator: Any, fast_config: Path, run_id: str) -> None:
    """After a mid-stream drop the partial text is printed once, with its usage line, and not re-sent."""
    base = emulator.url_for("drop;after=3", run=run_id)
    result = _ask("Explain retries", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 6
    assert len(emulator.requests(run=run_id)) == 1
    full = _ask("--offline", "Explain retries").stdout.strip()
    shown = result.stdout.strip()
    assert shown and full.startswith(shown) and shown != full
    assert "[tokens in/out: " in result.stderr


def test_max_tokens_stop_is_exit_0_with_warning(emulator: Any, fast_config: Path, run_id: str) -> None:
    """A max_tokens stop exits 0 and warns on stderr."""
    base = emulator.url_for("max_tokens", run=run_id)
    result = _ask("--max-tokens", "30", "hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 0
    assert "max_tokens limit" in result.stderr


def test_retry_then_success_prints_text_once(emulator: Any, fast_config: Path, run_id: str) -> None:
    """429 then 200: exit 0, the answer once, and the usage line counts two attempts."""
    base = emulator.url_for("rate_limit;retry_after_ms=1", "error_event;after=0", "ok", run=run_id)
    result = _ask("Explain retries", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 0
    assert "3 attempts" in result.stderr
    assert result.stdout.strip() == _ask("--offline", "Explain retries").stdout.strip()


def test_max_cost_refuses_with_exit_4(clean_env: Path) -> None:
    """--max-cost below what even a tiny answer could cost refuses before sending: exit 4."""
    result = _ask("--offline", "--max-cost", "0.0000001", "hello")
    assert result.exit_code == 4
    assert "max_cost" in _one_line(result.stderr)


# --- any server that speaks the wire format, with recorded quirks ----------------------


class _Recorded(BaseHTTPRequestHandler):
    body: bytes = b""
    content_type = "text/event-stream"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-type", self.content_type)
        self.send_header("request-id", "req_recorded")
        self.send_header("content-length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def recorded_server() -> Iterator[Any]:
    def serve(name: str) -> str:
        content_type = "application/json" if name.endswith(".json") else "text/event-stream"
        handler = type("H", (_Recorded,), {"body": (FIXTURES / name).read_bytes(), "content_type": content_type})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    servers: list[ThreadingHTTPServer] = []
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("fixture", "text", "usage_fragment"),
    [
        ("basic_padded.sse", "Hello!", "tokens in/out: 25/15"),
        ("no_message_stop.sse", "Hello!", "tokens in/out: 25/15"),
        ("cache_1h_sonnet46.sse", "Cached answer.", "cache read 38,912 · write 1h 856"),
        ("web_search_opus48.sse", "It is sunny.", "tokens in/out: 10682/510"),
    ],
)
def test_recorded_real_responses(
    recorded_server: Any, clean_env: Path, fixture: str, text: str, usage_fragment: str
) -> None:
    """`canny ask` works against any server at ANTHROPIC_BASE_URL speaking the real wire format."""
    base = recorded_server(fixture)
    result = _ask("hi", "--model", "claude-opus-4-8", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 0, result.stderr
    assert text in result.stdout
    assert usage_fragment in result.stderr
    _assert_no_key(result, clean_env)


def test_recorded_cache_line_is_priced_exactly(recorded_server: Any, clean_env: Path) -> None:
    """The cached Sonnet 4.6 recording prices to the hand-computed $0.0284316."""
    # 1204 x $3 + 856 x $6 (1h write) + 38,912 x $0.30 + 534 x $15, per million tokens.
    base = recorded_server("cache_1h_sonnet46.sse")
    result = _ask("--json", "hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert json.loads(result.stdout)["cost_usd"] == "0.0284316"


def test_corrupt_ledger_refuses_the_call(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A corrupt ledger file: nothing is sent, one line naming the ledger, exit 9; --no-ledger still answers."""
    bad = clean_env / "broken.db"
    bad.write_bytes(b"this is not a sqlite database" * 100)
    monkeypatch.setenv("CANNY_LEDGER", str(bad))
    result = _ask("--offline", "hello")
    assert result.exit_code == 9
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"canny: ledger {bad} cannot be opened")
    assert "Traceback" not in result.stderr
    assert _ask("--offline", "--no-ledger", "hello").exit_code == 0


def test_unwritable_ledger_location_refuses_the_call(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger that cannot be created (its directory is a file): one line naming it, exit 9, no answer."""
    blocker = clean_env / "not-a-dir"
    blocker.write_text("x", encoding="utf-8")
    monkeypatch.setenv("CANNY_LEDGER", str(blocker / "ledger.db"))
    result = _ask("--offline", "hello")
    assert result.exit_code == 9
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert str(blocker / "ledger.db") in line


def test_debug_logging_never_shows_the_key(emulator: Any, clean_env: Path, run_id: str, caplog: Any) -> None:
    """With every logger at DEBUG (the SDK's included), no log record contains the key."""
    import logging

    caplog.set_level(logging.DEBUG)
    base = emulator.url_for("rate_limit;retry_after_ms=1", "bad_key", run=run_id)
    result = _ask("hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": base})
    assert result.exit_code == 3
    assert caplog.records, "expected the SDK and httpx2 to log at DEBUG"
    assert all(CANARY_KEY not in record.getMessage() for record in caplog.records)
    assert CANARY_KEY not in caplog.text


def test_ctrl_c_mid_stream_is_exit_130_with_the_billed_usage(emulator: Any, clean_env: Path, run_id: str) -> None:
    """Ctrl-C while streaming: exit 130, the partial usage line, and a `cancelled` ledger row."""
    import os
    import signal

    from canny.ledger import open_ledger

    env = {
        **os.environ,
        "ANTHROPIC_API_KEY": CANARY_KEY,
        "ANTHROPIC_BASE_URL": emulator.url_for("slow;seconds=0.05", run=run_id),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "canny", "ask", "A long story [[words=400]]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    assert proc.stdout is not None
    first = proc.stdout.read(20)  # wait until text is on screen
    proc.send_signal(signal.SIGINT)
    rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert first
    lines = err.decode().splitlines()
    assert lines[-1] == "canny: interrupted"
    assert lines[-2].startswith("[tokens in/out: ")
    ledger = open_ledger(clean_env / "ledger.db")
    (row,) = list(ledger.records())
    ledger.close()
    assert row.outcome == "cancelled"
    assert row.usage.output > 0
    assert CANARY_KEY.encode() not in first + rest + err


def test_connection_refused_is_retried_then_exit_7(fast_config: Path) -> None:
    """Nothing listening: every attempt fails to connect, the policy retries, then exit 7 in one line."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: connections are refused
    result = _ask("hi", env={"ANTHROPIC_API_KEY": CANARY_KEY, "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 7
    line = _one_line(result.stderr)
    assert "could not connect" in line
    assert "gave up after 3 attempts" in line
    from canny.ledger import open_ledger

    ledger = open_ledger(fast_config / "ledger.db")
    rows = list(ledger.records())
    ledger.close()
    assert [(r.outcome, r.error_type) for r in rows] == [("error", "ConnectionFailed")] * 3
