"""Structured outputs in the emulator: ``output_config.format`` answers with JSON valid
against the schema, checked with the SDK's ``messages.parse`` and pydantic models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Literal

import anthropic
import httpx2
import pytest
from pydantic import BaseModel, Field

from canny.emulator import serve_in_thread
from canny.emulator.server import EmulatorHandle
from canny.emulator.structured import structured_text
from canny.emulator.validation import validate_messages

KEY = "sk-ant-api03-CANARY-structured"
MODEL = "claude-opus-5"


class Address(BaseModel):
    city: str
    postcode: str = Field(min_length=6, max_length=8)


class Employee(BaseModel):
    name: str
    age: int = Field(ge=18, le=67)
    level: Literal["junior", "senior"]
    skills: list[str] = Field(min_length=2)
    home: Address
    manager: Employee | None = None
    rating: float = Field(gt=0, lt=5)
    email: str = Field(json_schema_extra={"format": "email"})


_CLIENTS: list[anthropic.Anthropic] = []


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorHandle]:
    with serve_in_thread() as handle:
        yield handle


def _client(emu: EmulatorHandle) -> anthropic.Anthropic:
    """An SDK client, closed after the test."""
    client = anthropic.Anthropic(api_key=KEY, base_url=emu.url_for(), max_retries=0)
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def test_messages_parse_returns_a_valid_pydantic_instance(emu: EmulatorHandle) -> None:
    """messages.parse with a nested pydantic model gets JSON that validates, constraints included."""
    reply = _client(emu).messages.parse(
        model=MODEL,
        max_tokens=500,
        messages=[{"role": "user", "content": "Describe an employee named Ada"}],
        output_format=Employee,
    )
    employee = reply.parsed_output
    assert isinstance(employee, Employee)
    assert 18 <= employee.age <= 67 and 0 < employee.rating < 5
    assert len(employee.skills) >= 2 and 6 <= len(employee.home.postcode) <= 8
    assert employee.level == "junior" and reply.stop_reason == "end_turn"


def test_streamed_structured_answer_parses(emu: EmulatorHandle) -> None:
    """A streamed structured answer concatenates to the same valid JSON."""
    client = _client(emu)
    args: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 500,
        "messages": [{"role": "user", "content": "An employee please"}],
        "output_format": Employee,
    }
    with client.messages.stream(**args) as stream:
        streamed = stream.get_final_message()
    plain = client.messages.parse(**args)
    assert streamed.content[0].text == plain.content[0].text  # type: ignore[union-attr]
    Employee.model_validate_json(streamed.content[0].text)  # type: ignore[union-attr]


def test_structured_answer_is_deterministic(emu: EmulatorHandle) -> None:
    """The same request gets the same JSON document."""
    texts = {
        _client(emu)
        .messages.parse(
            model=MODEL, max_tokens=500, messages=[{"role": "user", "content": "Same"}], output_format=Address
        )
        .content[0]
        .text  # type: ignore[union-attr]
        for _ in range(3)
    }
    assert len(texts) == 1


def _text_for(schema: dict[str, Any]) -> Any:
    body = {
        "model": MODEL,
        "max_tokens": 500,
        "messages": [{"role": "user", "content": "fill it"}],
        "output_config": {"format": {"type": "json_schema", "schema": schema}},
    }
    request = validate_messages(body)
    return json.loads(structured_text(request, schema))


def test_schema_keywords_are_honoured() -> None:
    """$defs/$ref, enums, const, arrays, numbers and formats give a matching instance."""
    schema = {
        "type": "object",
        "$defs": {"Tag": {"type": "object", "properties": {"v": {"const": "x"}}, "required": ["v"]}},
        "properties": {
            "kind": {"enum": ["b", "a"]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/Tag"}, "minItems": 3},
            "n": {"type": "integer", "minimum": 10, "maximum": 12},
            "m": {"type": "number", "multipleOf": 0.25, "minimum": 1.1},
            "when": {"type": "string", "format": "date-time"},
            "id": {"type": "string", "format": "uuid"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "optional": {"type": "string"},
        },
        "required": ["kind", "tags", "n", "m", "when", "id", "maybe"],
        "additionalProperties": False,
    }
    value = _text_for(schema)
    assert set(value) == {"kind", "tags", "n", "m", "when", "id", "maybe"}
    assert value["kind"] == "b" and value["tags"] == [{"v": "x"}] * 3
    assert 10 <= value["n"] <= 12 and value["m"] == 1.25
    assert value["when"].endswith("Z") and len(value["id"]) == 36 and isinstance(value["maybe"], bool)


def test_recursive_schema_terminates() -> None:
    """A self-referencing schema ends in null instead of recursing forever."""
    schema = {
        "type": "object",
        "properties": {"child": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}, "name": {"type": "string"}},
        "required": ["child", "name"],
    }
    value = _text_for(schema)
    depth = 0
    while value is not None:
        value, depth = value["child"], depth + 1
    assert 1 <= depth <= 8


def test_structured_answer_cut_by_max_tokens(emu: EmulatorHandle) -> None:
    """A max_tokens too small for the document cuts it, with stop_reason max_tokens."""
    reply = _client(emu).messages.create(
        model=MODEL,
        max_tokens=5,
        messages=[{"role": "user", "content": "An employee"}],
        output_config={"format": {"type": "json_schema", "schema": Employee.model_json_schema()}},
    )
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 5


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"format": {"type": "xml"}}, "output_config.format.type"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema: Field required"),
    ],
)
def test_bad_output_config_is_a_400(emu: EmulatorHandle, config: dict[str, Any], message: str) -> None:
    """A malformed output_config is rejected with the field named."""
    body = {"model": MODEL, "max_tokens": 50, "messages": [{"role": "user", "content": "x"}], "output_config": config}
    response = httpx2.post(
        emu.url_for() + "/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    )
    assert response.status_code == 400 and message in response.json()["error"]["message"]
    assert KEY not in response.text


def test_the_older_output_format_field_is_honoured(emu: EmulatorHandle) -> None:
    """The older beta's top-level output_format (LiteLLM sends it) gets JSON valid against its schema."""
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 300,
        "messages": [{"role": "user", "content": "Invent a person."}],
        "output_format": {"type": "json_schema", "schema": schema},
    }
    response = httpx2.post(
        emu.url_for() + "/v1/messages", json=body, headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    )
    assert response.status_code == 200, response.text
    data = json.loads(response.json()["content"][0]["text"])
    assert isinstance(data["name"], str) and isinstance(data["age"], int)
