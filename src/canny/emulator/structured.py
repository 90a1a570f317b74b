"""Structured outputs: ``output_config.format`` of type ``json_schema``.

The answer's text is a JSON document valid against the schema: a small, deterministic
instance built by :class:`~canny.emulator.tools.SchemaFiller` (required properties,
the first ``enum`` value, ``const``, one array item or ``minItems``, numbers within their
bounds, strings from the prompt's words or their ``format``, nested objects, ``$defs`` and
``$ref``). The same request always gets the same document, so ``messages.parse`` and
other clients' structured-output helpers validate it. Only ``max_tokens`` can cut it short
(``stop_reason`` ``max_tokens``: the JSON is then incomplete, as with the API).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from canny.emulator.tools import SchemaFiller, words_of
from canny.emulator.validation import ApiError, MessagesRequest

__all__ = ["output_schema", "structured_text"]


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def output_schema(request: MessagesRequest) -> Mapping[str, Any] | None:
    """The JSON schema the answer must follow (``None``: free text); :class:`ApiError`
    for a malformed format. Read from ``output_config.format``, or from the older
    structured-outputs beta's top-level ``output_format`` (which LiteLLM still sends)."""
    config = request.raw.get("output_config")
    if config is not None and not isinstance(config, Mapping):
        raise _invalid("output_config: Input should be a valid dictionary")
    if config is not None and config.get("format") is not None:
        return _schema(config["format"], "output_config.format")
    legacy = request.raw.get("output_format")
    return None if legacy is None else _schema(legacy, "output_format")


def _schema(fmt: object, where: str) -> Mapping[str, Any]:
    if not isinstance(fmt, Mapping):
        raise _invalid(f"{where}: Input should be a valid dictionary")
    if fmt.get("type") != "json_schema":
        raise _invalid(f"{where}.type: Input should be 'json_schema'")
    if "schema" not in fmt:
        raise _invalid(f"{where}.schema: Field required")
    schema = fmt["schema"]
    if not isinstance(schema, Mapping):
        raise _invalid(f"{where}.schema: Input should be a valid dictionary")
    return schema


def structured_text(request: MessagesRequest, schema: Mapping[str, Any]) -> str:
    """The answer's JSON text for ``schema`` (deterministic for the request's prompt)."""
    prompt = request.last_user_text()
    value = SchemaFiller(words_of(prompt), ("output_config", prompt), root=schema).value(schema, "", 0)
    return json.dumps(value, ensure_ascii=False)
