"""examples/agent_loop.py: a real tool loop against the embedded emulator that stops on each
session cap (run as a subprocess, as a user would), and its local tools."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_loop.py"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
        check=False,
    )


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("agent_loop_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cap", "reason", "fewest", "most"),
    [("cost", "cost", 5, 8), ("iterations", "iterations", 4, 4), ("time", "wall_time", 1, 8)],
)
def test_stops_on_the_chosen_cap(cap: str, reason: str, fewest: int, most: int) -> None:
    """--cap X runs real tool turns offline, then stops before the call that could cross cap X."""
    done = _run("--cap", cap)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    stop = re.search(rf"^stopped \({reason}\): session stopped before call (\d+): ", out, re.MULTILINE)
    assert stop is not None, out
    made = int(stop.group(1)) - 1
    assert fewest <= made <= most
    assert re.search(rf"^totals: {made} calls, \$0\.\d+, \d+ tokens in, \d+ out, ", out, re.MULTILINE)
    assert len(re.findall(r"^turn \d+: (?:lookup|calculator)\(", out, re.MULTILINE)) == made
    assert re.search(r"^turn 1: lookup\(term='[a-z ]+'\) -> ", out, re.MULTILINE)
    if made >= 2:
        assert re.search(r"^turn 2: calculator\(a=[\d.]+, b=[\d.]+, op='add'\) -> [\d.]+; word_count\(", out, re.M)
    assert "finished" not in out


def test_no_cap_finishes_on_end_turn() -> None:
    """--cap none runs all eight tool turns and the final answer, with the session's totals."""
    done = _run("--cap", "none")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "finished (end_turn) before any cap:" in out
    assert re.search(r"^turn 9: end_turn, session so far \$0\.\d+", out, re.MULTILINE)
    assert len(re.findall(r"^turn \d+: (?:lookup|calculator)", out, re.MULTILINE)) == 8
    assert re.search(r"^totals: 9 calls, ", out, re.MULTILINE)
    assert "stopped (" not in out


def test_unknown_cap_is_a_usage_error() -> None:
    """An unknown --cap is argparse's usage error, exit code 2."""
    done = _run("--cap", "tokens")
    assert done.returncode == 2
    assert "invalid choice: 'tokens'" in done.stderr


def test_online_without_a_key_is_a_clean_error() -> None:
    """--online with no key anywhere stops before sending anything: one error, canny's exit code 2."""
    done = _run("--online", "--cap", "iterations")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no API key found\n  hint: ")
    assert "Traceback" not in done.stderr
    assert "turn 1" not in done.stdout


def test_local_tools_answer_and_report_errors(example: ModuleType) -> None:
    """The tools compute exact results; a bad call becomes a tool_result with is_error."""
    assert example.calculator(0.1, 0.2, "add") == "0.3"
    assert example.calculator(7, 2, "div") == "3.5"
    assert example.lookup("Budgets please").startswith("budget: ")
    assert example.word_count("one two") == "2 words"
    ok = example.run_tool({"id": "toolu_1", "name": "calculator", "input": {"a": 2, "b": 3, "op": "mul"}})
    assert ok == {"type": "tool_result", "tool_use_id": "toolu_1", "content": "6"}
    for block in (
        {"id": "toolu_2", "name": "calculator", "input": {"a": 1, "b": 0, "op": "div"}},
        {"id": "toolu_3", "name": "teleport", "input": {}},
        {"id": "toolu_4", "name": "lookup", "input": {"word": "x"}},
    ):
        result = example.run_tool(block)
        assert result["is_error"] is True
        assert result["content"].startswith("error: ")
