"""LiteLLM (``litellm.completion`` with ``anthropic/`` models) against the emulator."""

from __future__ import annotations

import json

import litellm
from harness import BASE, KEY, MODEL, PERSON_SCHEMA, WEATHER_SCHEMA, NotApplicable, expect, plan, raises, run_all

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather for a city.", "parameters": WEATHER_SCHEMA},
}


def complete(base_url: str = BASE, **kwargs: object) -> object:
    kwargs.setdefault("messages", USER)
    kwargs.setdefault("max_tokens", 200)
    return litellm.completion(model=f"anthropic/{MODEL}", api_base=base_url, api_key=KEY, **kwargs)


def create() -> None:
    response = complete(temperature=1)
    expect(bool(response.choices[0].message.content), "empty answer")


def stream() -> None:
    parts = [c.choices[0].delta.content or "" for c in complete(stream=True)]
    expect(len(parts) > 1 and "".join(parts), f"{len(parts)} chunk(s)")


def tools() -> None:
    first = complete(tools=[TOOL], max_tokens=300).choices[0].message
    calls = first.tool_calls or []
    expect(len(calls) == 1 and json.loads(calls[0].function.arguments).get("city"), f"tool calls {calls}")
    result = {"role": "tool", "tool_call_id": calls[0].id, "content": "Sunny, 21 C"}
    second = complete(tools=[TOOL], max_tokens=300, messages=[*USER, first.model_dump(), result])
    expect(bool(second.choices[0].message.content), "no text after the tool result")


def tool_runner() -> None:
    raise NotApplicable("LiteLLM has no tool runner (it returns tool calls; the caller loops)")


def structured() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON_SCHEMA, "strict": True}}
    response = complete(messages=[{"role": "user", "content": "Invent a person."}], response_format=fmt)
    data = json.loads(response.choices[0].message.content)
    expect(isinstance(data.get("name"), str) and isinstance(data.get("age"), int), f"not the schema: {data}")


def count_tokens() -> None:
    raise NotApplicable("litellm.token_counter counts locally; LiteLLM never calls /v1/messages/count_tokens")


def models() -> None:
    raise NotApplicable("LiteLLM reads models from its own cost map; it never calls /v1/models")


def not_found() -> None:
    raises(
        lambda: litellm.completion(
            model="anthropic/claude-nope-9", api_base=BASE, api_key=KEY, messages=USER, max_tokens=50
        ),
        "NotFound",
    )


def retried_529() -> None:
    response = complete(plan("overloaded"), num_retries=2)
    expect(bool(response.choices[0].message.content), "no answer after the retry")


def midstream_error() -> None:
    raises(lambda: list(complete(plan("error_event;after=2"), stream=True)), "overloaded")


run_all(globals())
