"""Bad input is one clean line on stderr and exit code 2: never a traceback, never
"please report this bug". Covers config files, CANNY_HOME, money options, ledger URLs,
`canny doctor` against a base URL that answers HTML, the SSE decoder's line cap, the
emulator recorder's memory bound, and fuzzing of every file canny reads."""

from __future__ import annotations

import contextlib
import http.server
import os
import threading
import time
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canny.cli import main
from canny.config import MAX_DOLLARS, load_settings, parse_money
from canny.errors import ConfigError, ServerError
from canny.ledger import open_ledger, parse_ledger_target
from canny.streaming import MAX_LINE_BYTES, MessageAccumulator, SSEDecoder, event_payload, iter_events, parse_body


def _canny(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _one_line(result: Result, code: int = 2) -> str:
    """The single `canny:` line on stderr of a run that failed cleanly with ``code``."""
    output = result.stdout + result.stderr
    assert result.exit_code == code, output
    assert "Traceback" not in output
    assert "please report" not in output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("canny: ")
    return lines[0]


# --------------------------------------------------------------------------- config file


@pytest.mark.parametrize("args", [("budget", "show"), ("report",), ("ask", "--offline", "hi"), ("ledger", "path")])
def test_config_with_invalid_utf8_is_one_line(clean_env: Path, args: tuple[str, ...]) -> None:
    """A config.toml holding invalid UTF-8 is one line naming the file, exit 2, for every command."""
    (clean_env / "config.toml").write_bytes(b'model = "\xff\xfe"\n')
    line = _one_line(_canny(*args))
    assert "config.toml: not UTF-8 text (byte 9 is invalid)" in line


def test_config_errors_in_library_and_doctor(clean_env: Path) -> None:
    """load_settings raises ConfigError for bad bytes or nesting; doctor shows a FIX line, exit 2."""
    (clean_env / "config.toml").write_bytes(b"\x00\x81")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings()
    (clean_env / "config.toml").write_text("x = " + "[" * 5000, encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings()
    doctor = _canny("doctor", "--offline")
    assert doctor.exit_code == 2
    assert "FIX  config:" in doctor.stdout and "Traceback" not in doctor.stdout + doctor.stderr


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[timeouts]\nidle = inf", "positive number of seconds"),
        ("[timeouts]\ntotal = nan", "positive number of seconds"),
        ("[timeouts]\nconnect = 1e308", "at most 10,000,000"),
        ("[retry]\nmax_attempts = 2.5", "positive integer"),
        ("[retry]\nmax_attempts = 100000", "at most 1000"),
        ("max_tokens = 1000000000000000000000", "positive integer"),
        ("max_cost = 1e999", "not the float inf"),
        ("max_cost = 0.5", "not the float 0.5"),
        ("max_cost = '1e99999999999'", "non-negative dollar amount, at most"),
        ("max_cost = '1e999999999999999999999'", "dollar amount such as"),
    ],
)
def test_out_of_range_numbers_in_config(clean_env: Path, text: str, match: str) -> None:
    """Non-finite, huge or fractional numbers in config.toml are a ConfigError naming the key."""
    (clean_env / "config.toml").write_text(text + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=match):
        load_settings()


def test_budget_lease_out_of_range(clean_env: Path) -> None:
    """A profile budget lease of 1e308 or inf is one line, exit 2 (it used to overflow)."""
    from canny.budget import profile_budgets

    for lease in ("1e308", "inf"):
        (clean_env / "config.toml").write_text(f"[budget]\nday = 5\nlease = {lease}\n", encoding="utf-8")
        with pytest.raises(ConfigError, match=r"budget\.lease"):
            profile_budgets(load_settings())
        assert "budget.lease" in _one_line(_canny("ask", "--offline", "hi"))


# --------------------------------------------------------------------------- CANNY_HOME


def test_canny_home_under_a_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CANNY_HOME inside a regular file (fails for root too) is one line, exit 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory", encoding="utf-8")
    monkeypatch.setenv("CANNY_HOME", str(blocker / "home"))
    for args in (("budget", "show"), ("ask", "--offline", "hi"), ("report",)):
        assert "a part of its path is a file" in _one_line(_canny(*args))
    assert blocker.read_text(encoding="utf-8") == "not a directory"


def test_canny_home_is_a_regular_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CANNY_HOME naming a regular file is one line, exit 2, and the file is untouched."""
    home = tmp_path / "home-file"
    home.write_bytes(b"x")
    monkeypatch.setenv("CANNY_HOME", str(home))
    assert "is not a directory" in _one_line(_canny("budget", "set", "--day", "5"))
    assert home.read_bytes() == b"x"


def test_canny_home_symlink_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CANNY_HOME that is a symlink loop (unreadable for root too) is one line, exit 2."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    monkeypatch.setenv("CANNY_HOME", str(loop))
    assert "cannot be used" in _one_line(_canny("budget", "show"))


def test_canny_home_unreadable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mode-000 CANNY_HOME is one line, exit 2, wherever listing it really fails."""
    home = tmp_path / "locked"
    home.mkdir()
    monkeypatch.setenv("CANNY_HOME", str(home))
    home.chmod(0)
    try:
        try:
            with os.scandir(home):
                listable = True  # root reads a mode-000 directory
        except PermissionError:
            listable = False
        result = _canny("budget", "show")
    finally:
        home.chmod(0o700)
    if listable:
        assert result.exit_code == 0, result.stderr
    else:
        assert "cannot be read" in _one_line(result)


def test_canny_home_listing_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the OS refuses to list CANNY_HOME (EACCES), the error is one line, exit 2."""
    home = tmp_path / "refused"
    home.mkdir()
    monkeypatch.setenv("CANNY_HOME", str(home))
    real = os.scandir

    def scandir(path: object) -> object:
        if str(path) == str(home):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "scandir", scandir)
    assert "cannot be read (Permission denied)" in _one_line(_canny("budget", "show"))


# --------------------------------------------------------------------------- money options

_BAD_MONEY = ["1e999", "1e99999999999", "1e999999999999999999999", "inf", "-Infinity", "nan", "sNaN", "-1", "1e10"]


@pytest.mark.parametrize("amount", _BAD_MONEY)
def test_budget_amounts_out_of_range(clean_env: Path, amount: str) -> None:
    """`budget set --day/--month` rejects huge, non-finite and negative amounts; nothing is stored."""
    for option in ("--day", "--month"):
        line = _one_line(_canny("budget", "set", option, amount))
        assert f"{option} must be a " in line and "dollar amount" in line
    shown = _canny("budget", "show")
    assert shown.exit_code == 0 and "no budgets" in shown.stderr and shown.stdout == ""


@pytest.mark.parametrize("amount", ["1e999", "nan", "-0.01", "9" * 200])
def test_max_cost_out_of_range(clean_env: Path, amount: str) -> None:
    """`ask --max-cost` rejects the same amounts with one line, before any call."""
    line = _one_line(_canny("ask", "--offline", "--max-cost", amount, "hi"))
    assert "--max-cost must be a " in line and "dollar amount" in line


def test_money_stays_decimal() -> None:
    """Amounts parse exactly as Decimal (a float is refused); the cap is inclusive; -0 is 0; past a pico rounds."""
    assert parse_money("0.1", "x") == Decimal("0.1")
    assert parse_money("1e-99999999999", "x") == 0
    assert parse_money(Decimal(1) / 3, "x") == Decimal("0.333333333333")
    with pytest.raises(ConfigError, match=r"not the float 0\.1"):
        parse_money(0.1, "x")
    assert parse_money("$1000000000", "x") == MAX_DOLLARS
    assert str(parse_money("-0", "x")) == "0"
    with pytest.raises(ConfigError):
        parse_money(True, "x")


def test_cost_usage_file_and_numbers(clean_env: Path, tmp_path: Path) -> None:
    """`canny cost`: a non-UTF-8 @file, a 5,000-digit number, deep nesting, absurd counts: one line, exit 2."""
    bad = tmp_path / "usage.json"
    bad.write_bytes(b"\xff\xfe{}")
    model = ("cost", "-m", "claude-sonnet-4-5", "--usage")
    assert "is not UTF-8 text" in _one_line(_canny(*model, f"@{bad}"))
    assert "a number is too long" in _one_line(_canny(*model, '{"input_tokens": 1' + "0" * 5000 + "}"))
    assert "nested too deeply" in _one_line(_canny(*model, "[" * 100_000))
    assert "too large to price" in _one_line(_canny(*model, '{"input_tokens": 1' + "0" * 400 + "}"))


@pytest.mark.parametrize("when", ["99999999999d", "10000000w", "1000000000000h"])
def test_report_range_out_of_dates(clean_env: Path, when: str) -> None:
    """`report --since` / `ledger export --until` far past year 1 is one line, exit 2 (was OverflowError)."""
    assert "out of the range of dates" in _one_line(_canny("report", "--since", when))
    assert "out of the range of dates" in _one_line(_canny("ledger", "export", "--until", when))


# --------------------------------------------------------------------------- ledger URLs


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ("foo://x", "unknown scheme foo://"),
        ("http://example.com/ledger", "unknown scheme http://"),
        ("mysql://u@h/db", "unknown scheme mysql://"),
        ("postgresql://u:s3cret@[::1", "not a valid PostgreSQL URL"),
        ("postgresql://u:s3cret@host:99999999/db", "not a valid PostgreSQL URL"),
        ("postgresql://u:s3cret@host:abc/db", "not a valid PostgreSQL URL"),
        ("postgresql://host:0/db", "port 0"),
        ("postgresql://host/db?password=s3cret#frag", "no #fragment"),
        ("sqlite:///", "three slashes"),
        ("sqlite://", "three slashes"),
        ("sqlite:ledger.db", "three slashes"),
        ("sqlite:///ledger.db?mode=ro", r"no \?query"),
        ("sqlite:///some/dir/", "names a directory"),
        (":memory:", "must be a file"),
        ("   ", "empty"),
        ("led\x00ger.db", "NUL"),
    ],
)
def test_bad_ledger_targets(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, match: str
) -> None:
    """open_ledger refuses unknown schemes and malformed URLs with a ConfigError; nothing is created."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(ConfigError, match=match) as caught:
        open_ledger(target)
    assert "s3cret" not in str(caught.value)
    if target.strip() and "\x00" not in target:  # (a blank CANNY_LEDGER means the default)
        monkeypatch.setenv("CANNY_LEDGER", target)
        for args in (("report",), ("budget", "show"), ("ask", "--offline", "hi")):
            line = _one_line(_canny(*args))
            assert "s3cret" not in line
    assert list(work.iterdir()) == []


def test_good_ledger_targets(tmp_path: Path) -> None:
    """Paths, sqlite:/// URLs (relative and absolute), Path objects and postgres URLs still parse."""
    absolute = tmp_path / "a.db"
    assert parse_ledger_target(str(absolute)) == ("sqlite", str(absolute))
    assert parse_ledger_target(f"sqlite:///{absolute}") == ("sqlite", str(absolute))
    assert parse_ledger_target("sqlite:///rel/ledger.db") == ("sqlite", "rel/ledger.db")
    assert parse_ledger_target(Path("odd://name.db")) == ("sqlite", "odd:/name.db")
    assert parse_ledger_target("C:/ledgers/x.db") == ("sqlite", "C:/ledgers/x.db")
    url = "postgresql://u:pw@127.0.0.1:5432/db"
    assert parse_ledger_target(url) == ("postgres", url)
    assert parse_ledger_target("postgres://h/db") == ("postgres", "postgres://h/db")
    ledger = open_ledger(f"sqlite:///{absolute}")
    ledger.close()
    assert absolute.is_file()


# --------------------------------------------------------------------------- doctor


class _Page(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b"<!doctype html><html><body><h1>Welcome to nginx!</h1></body></html>"
        self.send_response(self.status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return None


@contextlib.contextmanager
def _html_server(status: int) -> Iterator[str]:
    handler = type("Handler", (_Page,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("status", "expected"), [(200, "answered text/html with status 200"), (502, "(502)")])
def test_doctor_against_html(clean_env: Path, canary_key: str, status: int, expected: str) -> None:
    """`canny doctor` against a base URL answering an HTML page: one FIX line for the API, exit 2."""
    with _html_server(status) as url:
        result = _canny("doctor", env={"ANTHROPIC_API_KEY": canary_key, "ANTHROPIC_BASE_URL": url})
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert "Traceback" not in output and "please report" not in output
    assert canary_key not in output
    fixes = [line for line in result.stdout.splitlines() if line.startswith("FIX")]
    assert len(fixes) == 1 and fixes[0].startswith("FIX  API: ") and expected in fixes[0], result.stdout
    assert result.stderr.strip() == "canny: 1 problem(s) found"


def test_create_against_an_html_page_is_an_error_row(clean_env: Path, canary_key: str, memory_ledger: Any) -> None:
    """A 200 HTML page to a non-streamed call is a ServerError and an `error` row, never an empty $0 answer."""
    from canny import Client
    from canny.retry import RetryPolicy

    with _html_server(200) as url:
        client = Client(
            api_key=canary_key, base_url=url, ledger=memory_ledger, retry=RetryPolicy(max_attempts=1), model="haiku"
        )
        with pytest.raises(ServerError, match="not JSON"):
            client.create("hi")
    assert [row.outcome for row in memory_ledger.rows] == ["error"]
    with pytest.raises(ValueError, match="neither a JSON object"):
        parse_body(b"<html><body>Bad gateway</body></html>")


# --------------------------------------------------------------------------- SSE decoder


def _feed_all(decoder: SSEDecoder, chunks: Iterable[bytes], held: list[int]) -> None:
    for chunk in chunks:
        decoder.feed(chunk)
        held.append(decoder.buffered)


def test_sse_line_cap_in_small_chunks() -> None:
    """A line past the 16 MiB cap, fed in 64 KiB chunks, is a ServerError; the buffer never exceeds the cap."""
    decoder = SSEDecoder()
    chunks = [b"data: "] + [b"x" * 65536] * (MAX_LINE_BYTES // 65536 + 2)
    held: list[int] = []
    with pytest.raises(ServerError, match="longer than 16,777,216 bytes"):
        _feed_all(decoder, chunks, held)
    assert len(held) == MAX_LINE_BYTES // 65536  # the chunk that would cross the cap raised
    assert max(held) <= MAX_LINE_BYTES
    assert decoder.buffered == 0


def test_sse_line_cap_in_one_chunk_and_per_event() -> None:
    """The cap holds for a long line inside one chunk, and for an event of many data lines."""
    with pytest.raises(ServerError):
        SSEDecoder(max_line=1000).feed(b"data: " + b"y" * 2000 + b"\n\n")
    with pytest.raises(ServerError):
        _feed_all(SSEDecoder(max_line=1000), [b"data: 0123456789\n"] * 200, [])
    fine = SSEDecoder(max_line=1000)
    assert [e.data for e in fine.feed(b"data: " + b"z" * 900 + b"\n\n")] == ["z" * 900]


def test_sse_long_line_is_linear() -> None:
    """A 2 MiB line in 64-byte chunks decodes in well under 5 s (the old decoder was quadratic: ~20 s)."""
    decoder = SSEDecoder()
    piece = b"a" * 64
    started = time.perf_counter()
    decoder.feed(b"event: x\ndata: ")
    for _ in range((2 << 20) // 64):
        decoder.feed(piece)
    events = decoder.feed(b"\n\n")
    assert time.perf_counter() - started < 5.0
    assert len(events) == 1 and len(events[0].data) == 2 << 20


def test_replay_of_an_overlong_line(clean_env: Path, tmp_path: Path) -> None:
    """`canny replay` of a body with a line over the cap is one line, exit 2."""
    body = tmp_path / "long.sse"
    body.write_bytes(b"data: " + b"q" * (MAX_LINE_BYTES + 10))
    assert "longer than" in _one_line(_canny("replay", str(body)))


def test_payloads_too_deep_or_too_long_are_invalid_events() -> None:
    """JSON nested 100,000 deep or with a 5,000-digit number is an 'invalid' event, not an exception."""
    deep = b"data: " + b"[" * 100_000 + b"\n\n"
    digits = b'data: {"n": 1' + b"0" * 5000 + b"}\n\n"
    assert [e["type"] for e in iter_events([deep, digits])] == ["invalid", "invalid"]
    with pytest.raises(ValueError, match="nested too deeply"):
        parse_body(b'{"a":' * 100_000)
    assert parse_body(b'{"content": 5, "usage": {"input_tokens": 3}}').usage.input == 3


# --------------------------------------------------------------------------- emulator recorder


def test_recorder_byte_budget() -> None:
    """The recorder drops the oldest requests beyond its byte budget, always keeping the newest."""
    from canny.emulator.recorder import RecordedRequest, Recorder

    recorder = Recorder(max_bytes=100_000)

    def request(n: int, size: int) -> RecordedRequest:
        return RecordedRequest("POST", "/v1/messages", None, "ok", 200, {"text": "b" * size}, {}, 0.0, f"req_{n}")

    for n in range(100):
        recorder.add(request(n, 10_000))
        assert recorder.held_bytes <= 100_000
    kept = recorder.requests()
    assert 5 <= len(kept) < 10 and kept[-1].request_id == "req_99"
    recorder.add(request(100, 1_000_000))
    assert [r.request_id for r in recorder.requests()] == ["req_100"]


def test_recorder_count_and_run_bounds() -> None:
    """The recorder keeps the latest `limit` requests and counters of the latest `max_runs` runs."""
    from canny.emulator.recorder import RecordedRequest, Recorder

    recorder = Recorder(limit=3, max_runs=2)
    for n in range(5):
        recorder.add(RecordedRequest("GET", "/v1/models", None, None, 200, None, {}, 0.0, f"req_{n}"))
    assert [r.request_id for r in recorder.requests()] == ["req_2", "req_3", "req_4"]
    assert [recorder.next_index(run) for run in ("a", "a", "b", "c", "a")] == [0, 1, 0, 0, 0]


# --------------------------------------------------------------------------- fuzz and profile


def test_hypothesis_profile_has_no_deadline() -> None:
    """The project profile drops the per-example deadline, so a loaded machine cannot flake."""
    # Read the registered profile, not settings.default: a test decorated with its own
    # @settings swaps the default while it runs, so the default depends on test order.
    profile = settings.get_profile("canny")
    assert profile.deadline is None
    assert HealthCheck.too_slow not in profile.suppress_health_check


def test_hypothesis_profile_is_the_same_under_ci() -> None:
    """With CI=true (as on the CI runner) the project profile still drops no health check."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CI": "true"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-k",
            "test_hypothesis_profile_has_no_deadline",
            __file__,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "1 passed" in done.stdout


_FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_config_bytes(clean_env: Path, data: bytes) -> None:
    """Fuzz: any bytes as config.toml give Settings or a ConfigError."""
    (clean_env / "config.toml").write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_settings()


@_FUZZ
@given(data=st.binary(max_size=300), suffix=st.sampled_from([".toml", ".json"]))
def test_fuzz_scenario_bytes(clean_env: Path, data: bytes, suffix: str) -> None:
    """Fuzz: any bytes as a scenario file load or raise ValueError with a message."""
    from canny.emulator.scenario import Scenario, load_scenario

    path = clean_env / f"scenario{suffix}"
    path.write_bytes(data)
    try:
        outcome: object = load_scenario(path)
    except ValueError as exc:
        outcome = str(exc)
    assert isinstance(outcome, Scenario) or (isinstance(outcome, str) and outcome)


@settings(max_examples=150)
@given(data=st.binary(max_size=600), cut=st.integers(1, 64), cap=st.integers(8, 200))
def test_fuzz_sse_bytes(data: bytes, cut: int, cap: int) -> None:
    """Fuzz: any bytes, any chunking: events or a ServerError past the cap; parse_body: a result or ValueError."""
    decoder = SSEDecoder(max_line=cap)
    acc = MessageAccumulator()
    with contextlib.suppress(ServerError):
        for start in range(0, len(data), cut):
            for event in decoder.feed(data[start : start + cut]):
                acc.feed(event_payload(event))
            assert decoder.buffered <= cap
        for event in decoder.flush():
            acc.feed(event_payload(event))
    acc.final_message()
    with contextlib.suppress(ValueError):
        parse_body(data)


@_FUZZ
@given(data=st.binary(max_size=200))
def test_fuzz_replay_cli(clean_env: Path, data: bytes) -> None:
    """Fuzz: `canny replay` of any bytes exits 0 or with one clean line and exit 2."""
    path = clean_env / "body.bin"
    path.write_bytes(data)
    result = _canny("replay", str(path))
    if result.exit_code != 0:
        _one_line(result)
