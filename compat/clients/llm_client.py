"""simonw's ``llm`` with the ``llm-anthropic`` plugin against the emulator (its Python API).

llm-anthropic builds an ``anthropic.Anthropic`` per prompt without a ``base_url``, so the
SDK reads ``ANTHROPIC_BASE_URL``: each operation points that at the emulator (or a fault plan).
"""

from __future__ import annotations

import json
import os

import llm
import llm_anthropic
from harness import BASE, MODEL, PERSON_SCHEMA, NotApplicable, expect, plan, raises, run_all

PROMPT = "What is the weather in Paris?"


def model(base_url: str = BASE) -> llm.Model:
    os.environ["ANTHROPIC_BASE_URL"] = base_url
    return llm.get_model(MODEL)


def get_weather(city: str) -> str:
    """Weather for a city."""
    return "Sunny, 21 C"


def create() -> None:
    response = model().prompt(PROMPT, stream=False)
    expect(bool(response.text()), "empty answer")


def stream() -> None:
    chunks = list(model().prompt(PROMPT))
    expect(len(chunks) > 1 and "".join(chunks), f"{len(chunks)} chunk(s)")


def tools() -> None:
    m = model()
    conversation = m.conversation()
    first = conversation.prompt(PROMPT, tools=[get_weather])
    first.text()
    calls = first.tool_calls()
    expect(len(calls) == 1 and calls[0].name == "get_weather", f"tool calls {calls}")
    results = [llm.ToolResult(name=c.name, output="Sunny, 21 C", tool_call_id=c.tool_call_id) for c in calls]
    second = conversation.prompt(tools=[get_weather], tool_results=results)
    expect(bool(second.text()), "no text after the tool result")


def tool_runner() -> None:
    ran: list[str] = []

    def weather(city: str) -> str:
        """Weather for a city."""
        ran.append(city)
        return "Sunny, 21 C"

    text = model().chain(PROMPT, tools=[weather]).text()
    expect(len(ran) == 1 and bool(text), f"tool ran {len(ran)}x")


def structured() -> None:
    response = model().prompt("Invent a person.", schema=PERSON_SCHEMA, stream=False)
    data = json.loads(response.text())
    expect(isinstance(data.get("name"), str) and isinstance(data.get("age"), int), f"not the schema: {data}")


def count_tokens() -> None:
    raise NotApplicable("llm has no token-count call")


def models() -> None:
    raise NotApplicable("llm-anthropic lists models from its own table; it never calls /v1/models")


def not_found() -> None:
    os.environ["ANTHROPIC_BASE_URL"] = BASE
    missing = llm_anthropic.ClaudeMessages("claude-nope-9")
    raises(lambda: missing.prompt(PROMPT, stream=False).text(), "NotFoundError", "not_found")


def retried_529() -> None:
    expect(bool(model(plan("overloaded")).prompt(PROMPT, stream=False).text()), "no answer after the retry")


def midstream_error() -> None:
    raises(lambda: list(model(plan("error_event;after=2")).prompt(PROMPT)), "overloaded")


run_all(globals())
