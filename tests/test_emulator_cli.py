"""``canny emulator serve`` and ``canny emulator faults``."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner

from canny.cli import main
from canny.emulator import FAULTS
from canny.emulator.server import bind

KEY = "sk-ant-api03-CANARY-emulator-test-key"
BODY = {"model": "claude-opus-5-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


def test_faults_lists_the_catalogue() -> None:
    """`canny emulator faults` prints one row per fault with its status and description."""
    result = CliRunner().invoke(main, ["emulator", "faults"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "WHAT", "IT", "DOES"]
    assert {line.split()[0] for line in lines[1:]} == set(FAULTS)
    assert any(re.match(r"rate_limit\s+429\s+429 rate_limit_error", line) for line in lines)
    assert any(re.match(r"stall_headers\s+-\s+", line) for line in lines)


@pytest.mark.parametrize(
    ("content", "needle"),
    [("[[step]]\nfault = 'warp'\n", "unknown fault 'warp'"), ("seed = [", "invalid TOML")],
)
def test_bad_scenario_is_one_line_and_exit_2(tmp_path: Path, content: str, needle: str) -> None:
    """A bad --scenario file prints one clean error line and exits with code 2."""
    path = tmp_path / "bad.toml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["emulator", "serve", "--scenario", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("canny: --scenario:")
    assert needle in lines[0]


def test_missing_scenario_file_is_exit_2(tmp_path: Path) -> None:
    """A scenario path that does not exist is a usage error naming the file."""
    result = CliRunner().invoke(main, ["emulator", "serve", "--scenario", str(tmp_path / "none.toml")])
    assert result.exit_code == 2
    assert "cannot read scenario file" in result.stderr


def test_busy_port_is_a_clean_error() -> None:
    """A port already in use is one error line, not a traceback."""
    sock = bind("127.0.0.1", 0)
    try:
        port = str(sock.getsockname()[1])
        result = CliRunner().invoke(main, ["emulator", "serve", "--port", port])
    finally:
        sock.close()
    assert result.exit_code == 1
    assert "cannot listen on 127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_serve_runs_until_ctrl_c(tmp_path: Path) -> None:
    """serve prints its URL and export hint, applies the scenario, and exits 0 on SIGINT."""
    scenario = tmp_path / "s.toml"
    scenario.write_text("[[step]]\nfault = 'overloaded'\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "canny", "emulator", "serve", "--port", "0", "--scenario", str(scenario)],
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        url = match.group(1)
        header = [proc.stderr.readline() for _ in range(5)]
        assert f"export ANTHROPIC_BASE_URL={url}\n" in [line.strip() + "\n" for line in header]
        statuses = [
            httpx2.post(
                f"{url}/v1/messages", json=BODY, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
            ).status_code
            for _ in range(2)
        ]
        assert statuses == [529, 200]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert err.strip().endswith("emulator stopped")
    assert out == ""
