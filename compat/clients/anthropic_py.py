"""The official Python SDK (1.x or 2.x, whichever this venv holds) against the emulator."""

from __future__ import annotations

import json

import anthropic
from harness import BASE, KEY, MODEL, PERSON_SCHEMA, WEATHER_SCHEMA, NotApplicable, expect, plan, raises, run_all

USER = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL = {"name": "get_weather", "description": "Weather for a city.", "input_schema": WEATHER_SCHEMA}


def client(base_url: str = BASE, retries: int = 0) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=KEY, base_url=base_url, max_retries=retries)


def create() -> None:
    message = client().messages.create(model=MODEL, max_tokens=200, messages=USER)
    expect(message.stop_reason == "end_turn" and message.content[0].text, f"bad message {message}")
    expect(message.usage.output_tokens > 0, "no output tokens")


def stream() -> None:
    with client().messages.stream(model=MODEL, max_tokens=200, messages=USER) as events:
        text = "".join(events.text_stream)
        final = events.get_final_message()
    expect(bool(text) and final.content[0].text == text, "streamed text differs from the final message")


def tools() -> None:
    c = client()
    first = c.messages.create(model=MODEL, max_tokens=300, messages=USER, tools=[TOOL])
    calls = [b for b in first.content if b.type == "tool_use"]
    expect(first.stop_reason == "tool_use" and len(calls) == 1, f"no tool call: {first.stop_reason}")
    expect(isinstance(calls[0].input.get("city"), str), f"bad input {calls[0].input}")
    result = {"type": "tool_result", "tool_use_id": calls[0].id, "content": "Sunny, 21 C"}
    turns = [*USER, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}]
    second = c.messages.create(model=MODEL, max_tokens=300, messages=turns, tools=[TOOL])
    expect(second.stop_reason == "end_turn", f"second turn stopped with {second.stop_reason}")


def tool_runner() -> None:
    if not hasattr(client().beta.messages, "tool_runner"):
        raise NotApplicable("this SDK version has no beta.messages.tool_runner")
    seen: list[str] = []

    @anthropic.beta_tool
    def get_weather(city: str) -> str:
        """Weather for a city."""
        seen.append(city)
        return "Sunny, 21 C"

    runner = client().beta.messages.tool_runner(model=MODEL, max_tokens=300, tools=[get_weather], messages=USER)
    final = runner.until_done()
    expect(len(seen) == 1 and final.stop_reason == "end_turn", f"tool ran {len(seen)}x, stop {final.stop_reason}")


def structured() -> None:
    import pydantic

    class Person(pydantic.BaseModel):
        name: str
        age: int

    c = client()
    raw = c.messages.create(
        model=MODEL,
        max_tokens=300,
        messages=[{"role": "user", "content": "Invent a person."}],
        extra_body={"output_config": {"format": {"type": "json_schema", "schema": PERSON_SCHEMA}}},
    )
    data = json.loads(raw.content[0].text)
    expect(isinstance(data.get("name"), str) and isinstance(data.get("age"), int), f"not the schema: {data}")
    parsed = c.messages.parse(
        model=MODEL, max_tokens=300, messages=[{"role": "user", "content": "A person."}], output_format=Person
    )
    expect(isinstance(parsed.parsed_output, Person), f"parse gave {parsed.parsed_output!r}")


def count_tokens() -> None:
    count = client().messages.count_tokens(model=MODEL, messages=USER, tools=[TOOL])
    expect(count.input_tokens > 0, "zero tokens")


def models() -> None:
    c = client()
    ids = [m.id for m in c.models.list()]
    expect(MODEL in ids, f"{MODEL} not listed")
    expect(c.models.retrieve(MODEL).id == MODEL, "retrieve gave another model")


def not_found() -> None:
    raises(lambda: client().messages.create(model="claude-nope-9", max_tokens=50, messages=USER), "NotFoundError")


def retried_529() -> None:
    message = client(plan("overloaded"), retries=2).messages.create(model=MODEL, max_tokens=200, messages=USER)
    expect(message.stop_reason == "end_turn", "no answer after the retry")


def midstream_error() -> None:
    def run() -> None:
        with client(plan("error_event;after=2")).messages.stream(model=MODEL, max_tokens=200, messages=USER) as events:
            for _ in events.text_stream:
                pass

    raises(run, "overloaded")


run_all(globals())
