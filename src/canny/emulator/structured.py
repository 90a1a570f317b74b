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
from canny.emulator.validation import MessagesRequest

__all__ = ["output_schema", "structured_text"]


def output_schema(request: MessagesRequest) -> Mapping[str, Any] | None:
    """The JSON schema the answer must follow (``None``: free text), from
    ``output_config.format``, or from the older structured-outputs beta's top-level
    ``output_format`` (which LiteLLM still sends). The request was validated
    (:func:`~canny.emulator.validation.validate_messages` checks both shapes)."""
    config = request.raw.get("output_config") or {}
    fmt = config.get("format") or request.raw.get("output_format")
    if fmt is None:
        return None
    schema: Mapping[str, Any] = fmt["schema"]
    return schema


def structured_text(request: MessagesRequest, schema: Mapping[str, Any]) -> str:
    """The answer's JSON text for ``schema`` (deterministic for the request's prompt)."""
    prompt = request.last_user_text()
    value = SchemaFiller(words_of(prompt), ("output_config", prompt), root=schema).value(schema, "", 0)
    return json.dumps(value, ensure_ascii=False)
