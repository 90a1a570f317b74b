"""The shared harness of the compatibility clients (stdlib only; runs in each client's venv).

A client script calls :func:`check` once per operation. Each operation prints one JSON line
on stdout: ``{"op": ..., "result": "pass" | "fail" | "n/a", "why": ...}``. The runner
(compat/run.py) reads those lines. Environment: ``COMPAT_BASE_URL`` (the emulator),
``COMPAT_MODEL``; ``plan(*faults)`` gives a base URL whose requests get those faults in order.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any

from ops import OPERATIONS

BASE = os.environ["COMPAT_BASE_URL"].rstrip("/")
MODEL = os.environ.get("COMPAT_MODEL", "claude-opus-5")
KEY = os.environ.get("ANTHROPIC_API_KEY", "sk-ant-emulator")
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
PERSON_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


class NotApplicable(Exception):
    """The client has no way to do this operation (the message says why)."""


def plan(*faults: str) -> str:
    """A base URL whose Messages requests get ``faults`` in order, then ``ok``."""
    return f"{BASE}/x/{uuid.uuid4().hex}/{','.join(faults)}"


def check(op: str, fn: Callable[[], Any]) -> None:
    """Run one operation and print its verdict (a falsy non-None return is a failure)."""
    try:
        value = fn()
        if value is not None and value is not True:
            raise AssertionError(f"unexpected result: {value!r}"[:300])
        verdict = {"op": op, "result": "pass", "why": ""}
    except NotApplicable as exc:
        verdict = {"op": op, "result": "n/a", "why": str(exc)}
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
        verdict = {"op": op, "result": "fail", "why": f"{type(exc).__name__}: {exc}"[:400] + where}
    print(json.dumps(verdict), flush=True)
    print(f"[{op}] {verdict['result']} {verdict['why']}", file=sys.stderr, flush=True)


def expect(condition: bool, message: str) -> None:
    """Fail the operation with ``message`` unless ``condition`` holds."""
    if not condition:
        raise AssertionError(message)


def raises(fn: Callable[[], Any], *words: str) -> None:
    """``fn`` must raise an exception whose type name or text mentions one of ``words``."""
    try:
        fn()
    except Exception as exc:
        text = f"{type(exc).__name__} {exc}".lower()
        if not words or any(w.lower() in text for w in words):
            return
        raise AssertionError(f"raised, but not as expected: {type(exc).__name__}: {exc}"[:300]) from exc
    raise AssertionError("no error was raised")


def run_all(scope: dict[str, Any]) -> None:
    """Run every operation of a client script, in table order: ``run_all(globals())``."""
    for op, function in OPERATIONS:
        check(op, scope[function])
