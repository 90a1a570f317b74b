"""Regenerate the command reference in docs/cli.md from the commands' own --help.

Usage: ``python docs/gen_cli.py`` rewrites the part of docs/cli.md between the
``<!-- cli:begin -->`` and ``<!-- cli:end -->`` markers; ``--check`` only reports whether
it is out of date (exit 1), which the test suite also checks.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from click.testing import CliRunner

from canny.cli import main

DOC = Path(__file__).resolve().parent / "cli.md"
BEGIN, END = "<!-- cli:begin -->", "<!-- cli:end -->"


def _commands(group: click.Group, prefix: list[str]) -> list[list[str]]:
    ctx = click.Context(group)
    out: list[list[str]] = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        path = [*prefix, name]
        out.append(path)
        if isinstance(command, click.Group):
            out.extend(_commands(command, path))
    return out


def render() -> str:
    runner = CliRunner(env={"COLUMNS": "100", "NO_COLOR": "1"})
    parts: list[str] = []
    for path in [[], *_commands(main, [])]:
        result = runner.invoke(main, [*path, "--help"], prog_name="canny", terminal_width=100)
        if result.exit_code != 0:
            raise SystemExit(f"`canny {' '.join(path)} --help` failed:\n{result.output}")
        title = "canny " + " ".join(path) if path else "canny"
        parts.append(f"### `{title.strip()}`\n\n```text\n{result.stdout.rstrip()}\n```\n")
    return "\n".join(parts)


def main_() -> int:
    text = DOC.read_text(encoding="utf-8")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{BEGIN}\n{render()}{END}{tail}"
    if "--check" in sys.argv:
        if new != text:
            print("docs/cli.md is out of date: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main_())
