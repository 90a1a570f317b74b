"""canny: production-grade, cost-aware calls to Claude.

Importing ``canny`` is cheap: the SDK, the emulator's web stack and database drivers are
imported only when something needs them. Public names are resolved lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "AsyncClient",
    "CallResult",
    "Client",
    "Meter",
    "Usage",
    "__version__",
    "cost",
    "errors",
    "meter",
]

if TYPE_CHECKING:
    from canny import errors
    from canny.client import AsyncClient, Client
    from canny.meter import Meter, meter
    from canny.pricing.cost import cost
    from canny.result import CallResult
    from canny.usage import Usage

_LAZY: dict[str, str] = {
    "AsyncClient": "canny.client",
    "Client": "canny.client",
    "CallResult": "canny.result",
    "Usage": "canny.usage",
    "cost": "canny.pricing",
    "Meter": "canny.meter",
    "meter": "canny.meter",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("canny")
        except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
            return "0+unknown"
    if name == "errors":
        return importlib.import_module("canny.errors")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'canny' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)
