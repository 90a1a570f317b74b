"""pydantic-ai (``AnthropicModel``) against the emulator."""

from __future__ import annotations

import asyncio

import anthropic
from harness import BASE, KEY, MODEL, NotApplicable, expect, plan, raises, run_all
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.models.anthropic import AnthropicModel
from pydantic_ai.providers.anthropic import AnthropicProvider

PROMPT = "What is the weather in Paris?"


class Person(BaseModel):
    name: str
    age: int


def model(base_url: str = BASE, retries: int = 0, name: str = MODEL) -> AnthropicModel:
    client = anthropic.AsyncAnthropic(api_key=KEY, base_url=base_url, max_retries=retries)
    return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))


def create() -> None:
    result = Agent(model()).run_sync(PROMPT)
    expect(bool(result.output), "empty answer")


def stream() -> None:
    async def go() -> list[str]:
        async with Agent(model()).run_stream(PROMPT) as result:
            return [delta async for delta in result.stream_text(delta=True, debounce_by=None)]

    parts = asyncio.run(go())
    expect(len(parts) > 1 and "".join(parts), f"{len(parts)} chunk(s)")


def tools() -> None:
    agent = Agent(model())
    ran: list[str] = []

    @agent.tool_plain
    def get_weather(city: str) -> str:
        """Weather for a city."""
        ran.append(city)
        return "Sunny, 21 C"

    result = agent.run_sync(PROMPT)
    expect(len(ran) == 1 and bool(result.output), f"tool ran {len(ran)}x")


def tool_runner() -> None:
    raise NotApplicable("pydantic-ai's Agent is its own tool loop (the tools row runs it)")


def structured() -> None:
    from pydantic_ai import NativeOutput

    result = Agent(model(), output_type=NativeOutput(Person)).run_sync("Invent a person.")
    expect(isinstance(result.output, Person), f"output {result.output!r}")


def count_tokens() -> None:
    from pydantic_ai.messages import ModelRequest
    from pydantic_ai.models import ModelRequestParameters

    m = model()
    if not hasattr(m, "count_tokens"):
        raise NotApplicable("this pydantic-ai has no AnthropicModel.count_tokens")
    usage = asyncio.run(m.count_tokens([ModelRequest.user_text_prompt(PROMPT)], None, ModelRequestParameters()))
    expect(usage.input_tokens > 0, "zero tokens")


def models() -> None:
    raise NotApplicable("pydantic-ai never calls /v1/models")


def not_found() -> None:
    raises(lambda: Agent(model(name="claude-nope-9")).run_sync(PROMPT), "not_found", "404")


def retried_529() -> None:
    expect(bool(Agent(model(plan("overloaded"), retries=2)).run_sync(PROMPT).output), "no answer after the retry")


def midstream_error() -> None:
    async def go() -> None:
        async with Agent(model(plan("error_event;after=2"))).run_stream(PROMPT) as result:
            async for _ in result.stream_text(delta=True):
                pass

    raises(lambda: asyncio.run(go()), "overloaded")


run_all(globals())
