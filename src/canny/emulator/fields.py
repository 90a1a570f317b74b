"""The API's 400s for a request's fields, worded as the API words them (pydantic's).

Every endpoint of the emulator checks its JSON with these, so a missing field is always
``X: Field required`` and a wrong type ``X: Input should be a valid dictionary`` (the
wording recorded from the real API), whatever the endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["ApiError", "Kind", "invalid", "only", "optional", "required", "typed"]


class ApiError(Exception):
    """An error the emulator answers with the API's error body."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


Kind = Literal["string", "list", "dictionary", "integer", "number", "boolean"]

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "list": (list,),
    "dictionary": (dict,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
}


def invalid(message: str) -> ApiError:
    """A 400 ``invalid_request_error`` with the API's message."""
    return ApiError(400, "invalid_request_error", message)


def typed(value: object, kind: Kind, where: str) -> Any:
    """``value`` if it is of ``kind`` (a bool is not a number), else the API's 400."""
    if not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != "boolean"):
        raise invalid(f"{where}: Input should be a valid {kind}")
    return value


def _at(parent: str, key: str) -> str:
    return f"{parent}.{key}" if parent else key


def required(obj: Mapping[str, Any], key: str, kind: Kind, parent: str = "") -> Any:
    """``obj[key]``, which must be present and of ``kind``."""
    if key not in obj:
        raise invalid(f"{_at(parent, key)}: Field required")
    return typed(obj[key], kind, _at(parent, key))


def optional(obj: Mapping[str, Any], key: str, kind: Kind, parent: str = "") -> Any:
    """``obj[key]`` when present and not null (it must then be of ``kind``), else ``None``."""
    value = obj.get(key)
    return None if value is None else typed(value, kind, _at(parent, key))


def only(value: Mapping[str, Any], keys: frozenset[str], where: str) -> None:
    """The API's "Extra inputs are not permitted" for the first key outside ``keys``."""
    for key in value:
        if key not in keys:
            raise invalid(f"{_at(where, str(key))}: Extra inputs are not permitted")
