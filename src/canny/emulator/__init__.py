"""A local, Anthropic-shaped Messages API server that fails on purpose, reproducibly.

Use it from tests::

    from canny.emulator import serve_in_thread

    with serve_in_thread() as emu:
        client = anthropic.Anthropic(api_key="test", base_url=emu.url_for("rate_limit", "ok"))
        ...
        assert [r.fault for r in emu.requests()] == ["rate_limit", "ok"]

or from a terminal: ``canny emulator serve --scenario faults.toml``. See
``docs/emulator.md`` for fault plans, scenario files and the fault catalogue.

The emulator stands alone: it imports only its own modules, the standard library and
its web stack (starlette, uvicorn, anyio). Importing this package is cheap: the web
stack loads on first use of :func:`serve_in_thread` or :func:`create_app`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from canny.emulator.faults import FAULTS, Fault, FaultSpec, parse_fault
from canny.emulator.recorder import RecordedRequest
from canny.emulator.scenario import Scenario, Step, load_scenario

if TYPE_CHECKING:
    from canny.emulator.app import EmulatorApp, create_app
    from canny.emulator.server import EmulatorHandle, serve_in_thread

__all__ = [
    "FAULTS",
    "EmulatorApp",
    "EmulatorHandle",
    "Fault",
    "FaultSpec",
    "RecordedRequest",
    "Scenario",
    "Step",
    "create_app",
    "load_scenario",
    "parse_fault",
    "serve_in_thread",
]

_LAZY = {
    "EmulatorApp": "canny.emulator.app",
    "create_app": "canny.emulator.app",
    "EmulatorHandle": "canny.emulator.server",
    "serve_in_thread": "canny.emulator.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'canny.emulator' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
