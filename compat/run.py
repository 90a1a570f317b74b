#!/usr/bin/env python3
"""``make compat``: real Anthropic clients against a started ``canny emulator serve``.

Each client gets its own environment under ``.compat/`` (a venv from PyPI; the TypeScript
SDK with npm when ``node`` is present), installed once and reused (delete ``.compat/NAME``
to reinstall, or pass ``--upgrade``). The emulator is started as a user's CI would start it:
``python -m canny emulator serve --port 0 --port-file FILE``. Each client script
(compat/clients/) prints one JSON verdict per operation; this prints the table
client x operation, writes it to ``compat/RESULTS.md`` and into docs/emulator.md (between
its ``compat:begin`` / ``compat:end`` markers).

Usage: ``python compat/run.py [--only NAME ...] [--no-install] [--upgrade]``. Exit code 1
if any operation failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "compat"
ENVS = ROOT / ".compat"
CLIENTS_DIR = HERE / "clients"
CLIENT_TIMEOUT = 600


sys.path.insert(0, str(CLIENTS_DIR))
from ops import OPS  # noqa: E402 - the one list, beside the clients that run it


@dataclass(frozen=True)
class Client:
    name: str
    script: str
    pip: tuple[str, ...] = ()
    npm: tuple[str, ...] = ()
    version_of: str = ""  # the package whose installed version the table shows
    model: str = "claude-opus-5"
    notes: dict[str, str] = field(default_factory=dict)


CLIENTS = (
    Client("anthropic-python-2.x", "anthropic_py.py", pip=("anthropic>=2,<3", "pydantic"), version_of="anthropic"),
    Client("anthropic-python-1.x", "anthropic_py.py", pip=("anthropic>=1,<2", "pydantic"), version_of="anthropic"),
    Client("anthropic-typescript", "anthropic_ts.mjs", npm=("@anthropic-ai/sdk",), version_of="@anthropic-ai/sdk"),
    # llm and LiteLLM always send `temperature`, which the 5.x models reject (as the real API
    # does): they run against a 4.6 model, which takes it.
    Client(
        "llm+llm-anthropic",
        "llm_client.py",
        pip=("llm", "llm-anthropic"),
        version_of="llm-anthropic",
        model="anthropic/claude-sonnet-4-6",
    ),
    Client(
        "litellm", "litellm_client.py", pip=("litellm", "tenacity"), version_of="litellm", model="claude-sonnet-4-6"
    ),
    Client("pydantic-ai", "pydantic_ai_client.py", pip=("pydantic-ai-slim[anthropic]",), version_of="pydantic-ai-slim"),
    Client(
        "langchain-anthropic", "langchain_client.py", pip=("langchain-anthropic",), version_of="langchain-anthropic"
    ),
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env_dir(client: Client) -> Path:
    return ENVS / client.name


def install(client: Client, *, upgrade: bool) -> str | None:
    """Create or reuse the client's environment; a reason string when it cannot be had."""
    where = env_dir(client)
    stamp = where / ".compat-installed"
    wanted = " ".join(client.pip + client.npm)
    if stamp.exists() and stamp.read_text() == wanted and not upgrade:
        return None
    if client.npm:
        if shutil.which("node") is None or shutil.which("npm") is None:
            return "node/npm not installed"
        where.mkdir(parents=True, exist_ok=True)
        (where / "package.json").write_text('{"name": "canny-compat", "private": true, "type": "module"}\n')
        cmd = ["npm", "install", "--no-audit", "--no-fund", "--silent", *[f"{p}@latest" for p in client.npm]]
    else:
        if not (where / "bin" / "python").exists():
            subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
        cmd = [
            str(where / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--upgrade",
            *client.pip,
        ]
    log(f"compat: installing {client.name}: {' '.join(client.pip + client.npm)}")
    done = subprocess.run(cmd, cwd=where, capture_output=True, text=True)
    if done.returncode != 0:
        return f"install failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    stamp.write_text(wanted)
    return None


def version(client: Client) -> str:
    where = env_dir(client)
    if client.npm:
        try:
            data = json.loads((where / "node_modules" / client.version_of / "package.json").read_text())
            return str(data["version"])
        except (OSError, ValueError, KeyError):
            return "?"
    code = f"import importlib.metadata as m; print(m.version({client.version_of!r}))"
    done = subprocess.run([str(where / "bin" / "python"), "-c", code], capture_output=True, text=True)
    return done.stdout.strip() or "?"


class Emulator:
    """``python -m canny emulator serve --port 0 --port-file F`` in a child process."""

    def __init__(self, python: str) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="canny-compat-")
        port_file = Path(self._dir.name) / "port"
        cmd = [
            python,
            "-m",
            "canny",
            "emulator",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ]
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"compat: the emulator did not start: {self._proc.stderr.read() if self._proc.stderr else ''}"
                )
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{int(port_file.read_text())}"

    def close(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._dir.cleanup()


def run_client(client: Client, base_url: str) -> dict[str, tuple[str, str]]:
    where = env_dir(client)
    script = CLIENTS_DIR / client.script
    env = {
        **os.environ,
        "COMPAT_BASE_URL": base_url,
        "COMPAT_MODEL": client.model,
        "ANTHROPIC_BASE_URL": base_url,
        "ANTHROPIC_API_KEY": "sk-ant-emulator-compat",
        "PYTHONPATH": str(CLIENTS_DIR),
        "LLM_USER_PATH": str(where / "llm-home"),
        "NODE_PATH": str(where / "node_modules"),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    cmd = ["node", str(script)] if client.npm else [str(where / "bin" / "python"), str(script)]
    try:
        done = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        out, err = done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = f"timed out after {CLIENT_TIMEOUT} s"
    verdicts: dict[str, tuple[str, str]] = {}
    for line in out.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("op") in OPS:
            verdicts[item["op"]] = (item["result"], item.get("why", ""))
    if len(verdicts) < len(OPS):
        tail = (err.strip().splitlines() or ["no output"])[-1][:200]
        for op in OPS:
            verdicts.setdefault(op, ("fail", f"script ended early: {tail}"))
    return verdicts


def table(rows: list[tuple[Client, str, dict[str, tuple[str, str]]]]) -> str:
    head = "| client | version | " + " | ".join(OPS) + " |"
    lines = [head, "|" + " --- |" * (len(OPS) + 2)]
    notes: list[str] = []
    for client, ver, verdicts in rows:
        cells = []
        for op in OPS:
            result, why = verdicts[op]
            if result == "pass":
                cells.append("pass")
            else:
                short = " ".join(why.split())[:220]
                notes.append(f"- {client.name} / {op}: {result}: {short}")
                cells.append(f"{result} [{len(notes)}]")
        lines.append(f"| {client.name} | {ver} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- [{i}] {n[2:]}" for i, n in enumerate(notes, 1)) + "\n"


def update_docs(marker: str, text: str) -> None:
    """Replace what stands between ``<!-- MARKER:begin -->`` and ``<!-- MARKER:end -->`` in docs/emulator.md."""
    docs = ROOT / "docs" / "emulator.md"
    content = docs.read_text()
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if begin in content and end in content:
        head, rest = content.split(begin, 1)
        _, tail = rest.split(end, 1)
        docs.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], help="run only this client (repeatable)")
    parser.add_argument("--no-install", action="store_true", help="use the environments as they are")
    parser.add_argument("--upgrade", action="store_true", help="reinstall each client at its latest version")
    parser.add_argument("--python", default=sys.executable, help="the Python that has canny installed")
    args = parser.parse_args()
    chosen = [c for c in CLIENTS if not args.only or c.name in args.only]
    ENVS.mkdir(exist_ok=True)
    rows: list[tuple[Client, str, dict[str, tuple[str, str]]]] = []
    emulator = Emulator(args.python)
    try:
        log(f"compat: emulator at {emulator.url}")
        for client in chosen:
            reason = None if args.no_install else install(client, upgrade=args.upgrade)
            if reason is not None:
                rows.append((client, "-", dict.fromkeys(OPS, ("n/a", reason))))
                continue
            log(f"compat: running {client.name}")
            rows.append((client, version(client), run_client(client, emulator.url)))
    finally:
        emulator.close()
    text = table(rows)
    print(text)
    if not args.only:
        (HERE / "RESULTS.md").write_text(
            "<!-- written by `make compat` (compat/run.py); do not edit by hand -->\n\n" + text
        )
        update_docs("compat", f"As measured on {time.strftime('%Y-%m-%d')}:\n\n{text}")
    return 1 if any(v[0] == "fail" for _, _, verdicts in rows for v in verdicts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
