"""The fast subset of ``make compat``: the installed official Python SDK against the emulator.

It runs compat/clients/anthropic_py.py (the script ``make compat`` runs in its own venvs)
with this environment's ``anthropic``, against an emulator on loopback, once per module.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from canny.emulator import serve_in_thread

CLIENTS = Path(__file__).resolve().parent.parent / "compat" / "clients"
KEY = "sk-ant-api03-CANARY-emulator-compat-key"


def _load_ops() -> tuple[str, ...]:
    """The operation columns, from compat/clients/ops.py (one list for runner, clients and tests)."""
    spec = importlib.util.spec_from_file_location("compat_ops", CLIENTS / "ops.py")
    if spec is None or spec.loader is None:
        raise ImportError("compat/clients/ops.py cannot be loaded")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.OPS)


OPS = _load_ops()


@pytest.fixture(scope="module")
def verdicts() -> Iterator[dict[str, dict[str, str]]]:
    with serve_in_thread() as emu:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
        env.update(COMPAT_BASE_URL=emu.base_url, ANTHROPIC_API_KEY=KEY, PYTHONPATH=str(CLIENTS))
        env["COMPAT_MODEL"] = "claude-opus-5"
        done = subprocess.run(
            [sys.executable, str(CLIENTS / "anthropic_py.py")],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert KEY not in done.stdout + done.stderr
        lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
        yield {item["op"]: item for item in lines}


@pytest.mark.parametrize("op", OPS)
def test_official_sdk_operation(verdicts: dict[str, dict[str, str]], op: str) -> None:
    """Each compat operation passes with the installed anthropic SDK."""
    verdict = verdicts[op]
    assert verdict["result"] == "pass", verdict["why"]
