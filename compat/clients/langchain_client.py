"""langchain-anthropic (``ChatAnthropic``) against the emulator."""

from __future__ import annotations

from harness import BASE, KEY, MODEL, NotApplicable, expect, plan, raises, run_all
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

PROMPT = "What is the weather in Paris?"


class Person(BaseModel):
    """A person."""

    name: str
    age: int


@tool
def get_weather(city: str) -> str:
    """Weather for a city."""
    return "Sunny, 21 C"


def chat(base_url: str = BASE, retries: int = 0, name: str = MODEL) -> ChatAnthropic:
    return ChatAnthropic(model=name, api_key=KEY, base_url=base_url, max_retries=retries, max_tokens=300)


def create() -> None:
    expect(bool(chat().invoke(PROMPT).content), "empty answer")


def stream() -> None:
    parts = [chunk.content for chunk in chat().stream(PROMPT)]
    expect(len(parts) > 1 and any(parts), f"{len(parts)} chunk(s)")


def tools() -> None:
    bound = chat().bind_tools([get_weather])
    history = [HumanMessage(PROMPT)]
    first = bound.invoke(history)
    expect(len(first.tool_calls) == 1 and first.tool_calls[0]["args"].get("city"), f"calls {first.tool_calls}")
    history += [first, ToolMessage("Sunny, 21 C", tool_call_id=first.tool_calls[0]["id"])]
    second = bound.invoke(history)
    expect(not second.tool_calls and bool(second.content), "no text after the tool result")


def tool_runner() -> None:
    raise NotApplicable("langchain-anthropic has no tool runner (agents live in the langchain package)")


def structured() -> None:
    person = chat().with_structured_output(Person, method="json_schema").invoke("Invent a person.")
    expect(isinstance(person, Person), f"output {person!r}")


def count_tokens() -> None:
    expect(chat().get_num_tokens_from_messages([HumanMessage(PROMPT)]) > 0, "zero tokens")


def models() -> None:
    raise NotApplicable("langchain-anthropic never calls /v1/models")


def not_found() -> None:
    raises(lambda: chat(name="claude-nope-9").invoke(PROMPT), "NotFoundError")


def retried_529() -> None:
    expect(bool(chat(plan("overloaded"), retries=2).invoke(PROMPT).content), "no answer after the retry")


def midstream_error() -> None:
    raises(lambda: list(chat(plan("error_event;after=2")).stream(PROMPT)), "overloaded")


run_all(globals())
