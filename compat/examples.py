#!/usr/bin/env python3
"""The anthropic SDK's own examples/ (from its sdist), run unchanged against the emulator.

Downloads the source distribution of the anthropic version installed in the
``anthropic-python-2.x`` compat venv (``pip download --no-binary :all: --no-deps``) into
``.compat/examples/`` (never committed), starts ``canny emulator serve --port-file``, and runs
every ``examples/*.py`` in a venv of that anthropic plus the examples' own imports (rich),
with ``ANTHROPIC_BASE_URL`` pointing at it (60 s each). Prints which ran, which cannot run
against any local Anthropic API (other providers, the Managed Agents API) and which did not
run (the last line of the error), and writes compat/EXAMPLES.md and the docs' list.
Run ``make compat`` first (it creates the venv). Usage: ``python compat/examples.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ENVS, HERE, Emulator, update_docs

SOURCE_VENV = ENVS / "anthropic-python-2.x"
WORK = ENVS / "examples"
VENV = WORK / "venv"
TIMEOUT = 60
#: PyPI packages the examples import besides anthropic.
EXTRAS = ("rich", "pydantic")
#: Examples that cannot run against any local Anthropic API, and why.
CANNOT = {
    "bedrock.py": "another provider: AWS Bedrock (needs an AWS region and credentials)",
    "vertex.py": "another provider: Google Vertex AI (needs a region and Google credentials)",
    "google_cloud.py": "another provider: Google Cloud (needs anthropic[google_cloud] and Google credentials)",
    "azure.py": "another provider: Azure AI Foundry (its own endpoint and credentials)",
    "agents_comprehensive.py": "needs a GitHub token and the Managed Agents API",
    "managed-agents-": "the Managed Agents API (environments, sessions, workers), which the emulator does not serve",
    "agents.py": "the Managed Agents API, which the emulator does not serve",
    "mcp_tool_runner.py": "starts an MCP server with npx (downloaded at run time), not an offline setup",
    "agents_with_files.py": "the Managed Agents API, which the emulator does not serve",
}


def sdist() -> Path:
    python = str(SOURCE_VENV / "bin" / "python")
    version = subprocess.run(
        [python, "-c", "import anthropic; print(anthropic.__version__)"], capture_output=True, text=True, check=True
    ).stdout.strip()
    target = WORK / f"anthropic-{version}"
    if not (target / "examples").is_dir():
        WORK.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                python,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                "-d",
                str(WORK),
                f"anthropic=={version}",
            ],
            check=True,
        )
        with tarfile.open(WORK / f"anthropic-{version}.tar.gz") as archive:
            archive.extractall(WORK, filter="data")
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, f"anthropic=={version}", *EXTRAS], check=True)
    return target


def arguments(name: str, base_url: str) -> list[str]:
    """Command-line arguments an example asks for (batch_results.py: an ended batch's id)."""
    if name != "batch_results.py":
        return []
    params = {"model": "claude-opus-5", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]}
    body = json.dumps({"requests": [{"custom_id": "example-1", "params": params}]}).encode()
    headers = {
        "x-api-key": "sk-ant-emulator-examples",
        "anthropic-version": "2023-06-01",
        "content-type": "application/json",
    }
    request = urllib.request.Request(f"{base_url}/v1/messages/batches", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return [str(json.load(response)["id"])]


def cannot(name: str) -> str:
    """Why an example cannot run against a local Anthropic API ("" when it should)."""
    return next((why for key, why in CANNOT.items() if name == key or (key.endswith("-") and name.startswith(key))), "")


def main() -> int:
    source = sdist()
    examples = sorted((source / "examples").glob("*.py"))
    emulator = Emulator(sys.executable)
    rows: list[tuple[str, str, str]] = []
    try:
        env = {**os.environ, "ANTHROPIC_BASE_URL": emulator.url, "ANTHROPIC_API_KEY": "sk-ant-emulator-examples"}
        for example in examples:
            try:
                done = subprocess.run(
                    [str(VENV / "bin" / "python"), str(example), *arguments(example.name, emulator.url)],
                    cwd=example.parent,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                    stdin=subprocess.DEVNULL,
                )
                ok = done.returncode == 0
                why = "" if ok else " ".join(((done.stderr or done.stdout).strip().splitlines() or ["?"])[-1].split())
            except subprocess.TimeoutExpired:
                ok, why = False, f"timed out after {TIMEOUT} s"
            reason = cannot(example.name)
            result = "ran" if ok else ("cannot run" if reason else "did not run")
            rows.append((example.name, result, reason if reason and not ok else why[:200]))
            print(f"{example.name}: {'ran' if ok else 'did not run: ' + why[:200]}", file=sys.stderr, flush=True)
    finally:
        emulator.close()
    ran = sum(1 for _, r, _ in rows if r == "ran")
    blocked = sum(1 for _, r, _ in rows if r == "cannot run")
    version = source.name.split("-", 1)[1]
    lines = [f"anthropic {version} examples: {ran} of {len(rows)} ran unchanged; {blocked} cannot run here.", ""]
    lines += ["| example | result | why not |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {result} | {why} |" for name, result, why in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "EXAMPLES.md").write_text("<!-- written by compat/examples.py; do not edit by hand -->\n\n" + text)
    update_docs("examples", f"As measured on {time.strftime('%Y-%m-%d')}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
