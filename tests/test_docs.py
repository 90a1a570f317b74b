"""The documentation stays true: generated references are current, every command has
help, and the README's Quick start is exactly two commands."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from canny.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current() -> None:
    """docs/cli.md holds the current --help of every command (python docs/gen_cli.py)."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_cli.py"), "--check"], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr


def test_every_command_has_help_and_is_documented() -> None:
    """Each registered command imports, has a help text and a section in docs/cli.md."""
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    ctx = click.Context(main)
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None, name
        assert (command.help or "").strip(), name
        assert f"### `canny {name}`" in doc, name


def test_quick_start_is_two_commands() -> None:
    """The README's Quick start block holds exactly two commands: a demo and the tests."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```console\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


def test_docs_exist_for_every_topic() -> None:
    """Every topic (configuration, CLI, ledger, budgets ... cutting the bill) has its page in docs/."""
    topics = ["configuration", "cli", "ledger", "budgets", "retries", "emulator", "pricing", "caching", "benchmarks"]
    topics.append("cutting-the-bill")
    for name in topics:
        assert (ROOT / "docs" / f"{name}.md").is_file(), name
    assert "## Unreleased" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")


def test_readme_example_runs_offline(clean_env: Path, capsys: Any) -> None:
    """The README's one example runs as written with `offline=True` and prints its result line."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = re.search(r"## One example\n\n```python\n(.*?)```", readme, re.S)
    assert code is not None
    source = code.group(1).replace("canny.Client(", "canny.Client(offline=True, ", 1)
    exec(compile(source, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"\nok: \d+ in / \d+ out, \$0\.\d+\n$", out), out


_REPO_PATH = re.compile(r"\b((?:docs|examples|tests|scripts|benchmarks|compat|src)/[\w./-]+\.(?:md|py|toml|sh|json))\b")


def test_docs_name_only_files_that_exist() -> None:
    """Every repository file the docs, the README or a docstring names exists (no pointers outside the repo)."""
    texts = [ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "src").rglob("*.py")]
    missing = set()
    for path in texts:
        text = path.read_text(encoding="utf-8")
        missing |= {f"{path.name}: {m}" for m in _REPO_PATH.findall(text) if not (ROOT / m).exists()}
        assert "shared/reference" not in text, path
    assert not missing


def test_shell_completion_script_is_generated() -> None:
    """The documented `_CANNY_COMPLETE=bash_source canny` prints a bash completion function."""
    import os

    env = {**os.environ, "_CANNY_COMPLETE": "bash_source"}
    done = subprocess.run([sys.executable, "-m", "canny"], env=env, capture_output=True, text=True, check=False)
    assert "_canny_completion()" in done.stdout, done.stderr
