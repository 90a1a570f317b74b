"""A tool-using agent loop, capped by a canny session: it stops *before* the call that
could cross a cap, and says which cap and what the loop used.

    python examples/agent_loop.py --cap cost         # stops on max_cost
    python examples/agent_loop.py --cap iterations   # stops on max_iterations
    python examples/agent_loop.py --cap time         # stops on max_wall_time
    python examples/agent_loop.py --cap none         # loose caps: the model finishes first
    python examples/agent_loop.py --cap cost --online   # the real API (needs a key)

It is a real tool loop: the model answers with ``tool_use`` blocks, the loop runs those
tools locally (a calculator, a glossary lookup and a word counter), sends the
``tool_result`` blocks back, and goes on until the model ends its turn or a cap stops it.

Offline (the default) canny's emulator plays the model, with no key and no network. It
calls tools the way the API does; two emulator directives in the task set how many tool
turns it takes before its final answer and which tools each turn calls
(``[[tool_turns=8]]``, ``[[tool=...]]``, see docs/emulator.md). ``--online`` sends the
same task without them to Claude, which decides for itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from decimal import Decimal
from typing import Any

from canny import Client
from canny.errors import CannyError, ConfigError, SessionLimitReached
from canny.pricing import format_usd
from canny.session import SessionTotals

GLOSSARY = {
    "budget": "a cap on what calls may spend per day or month",
    "reservation": "the worst case of a call, held against its budgets while it runs",
    "ledger": "one row per attempt, with its usage and exact cost",
    "session": "a run of calls with caps on cost, iterations and wall time",
    "streaming": "text shown as it arrives, in server-sent events",
}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "lookup",
        "description": "Look a term up in the project glossary.",
        "input_schema": {
            "type": "object",
            "properties": {"term": {"type": "string", "description": "one word, e.g. budget"}},
            "required": ["term"],
        },
    },
    {
        "name": "calculator",
        "description": "Apply an arithmetic operation to two numbers.",
        "input_schema": {
            "type": "object",
            "properties": {
                "a": {"type": "number"},
                "b": {"type": "number"},
                "op": {"type": "string", "enum": ["add", "sub", "mul", "div"]},
            },
            "required": ["a", "b", "op"],
        },
    },
    {
        "name": "word_count",
        "description": "Count the words of a text.",
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
]

TASK = (
    "You are auditing how canny keeps API spending under control: what a budget, a ledger, "
    "a reservation and a session are, and what a few calls at different prices add up to. "
    "Use the lookup, calculator and word_count tools, one step at a time, then summarise."
)
#: Offline only: the emulator makes eight tool turns, cycling through these tools
#: (``+`` calls two tools in one turn), then answers with text.
OFFLINE_DIRECTIVES = " [[tool_turns=8]] [[tool=lookup,calculator+word_count,lookup,calculator]]"

#: Caps per --cap: the chosen one is tight, the others loose; ``none`` lets the loop finish.
CAPS: dict[str, dict[str, Any]] = {
    "cost": {"max_cost": "0.02", "max_iterations": 50, "max_wall_time": 600.0},
    "iterations": {"max_cost": "5", "max_iterations": 4, "max_wall_time": 600.0},
    "time": {"max_cost": "5", "max_iterations": 50, "max_wall_time": 3.0},
    "none": {"max_cost": "5", "max_iterations": 50, "max_wall_time": 600.0},
}
#: Seconds between streamed deltas offline with --cap time, so each call takes a while.
SLOW_DELTAS = 0.1
#: The model the offline loop asks for (the emulator answers as any model).
OFFLINE_MODEL = "claude-sonnet-5-5"


def lookup(term: str) -> str:
    """The glossary entry for the first known word of a term (singular or plural)."""
    for raw in term.lower().split():
        word = raw.strip(".,;:!?")
        for candidate in (word, word.removesuffix("s")):
            if candidate in GLOSSARY:
                return f"{candidate}: {GLOSSARY[candidate]}"
    return f"no glossary entry for {term!r}"


def calculator(a: float, b: float, op: str) -> str:
    """``a op b``, computed exactly in decimal."""
    x, y = Decimal(str(a)), Decimal(str(b))
    operations: dict[str, Callable[[Decimal, Decimal], Decimal]] = {
        "add": lambda p, q: p + q,
        "sub": lambda p, q: p - q,
        "mul": lambda p, q: p * q,
        "div": lambda p, q: p / q,
    }
    if op not in operations:
        raise ValueError(f"unknown operation {op!r}")
    if op == "div" and y == 0:
        raise ValueError("division by zero")
    return str(operations[op](x, y).normalize())


def word_count(text: str) -> str:
    """How many words ``text`` has."""
    count = len(text.split())
    return f"{count} word{'' if count == 1 else 's'}"


LOCAL_TOOLS: dict[str, Callable[..., str]] = {"lookup": lookup, "calculator": calculator, "word_count": word_count}


def run_tool(block: Mapping[str, Any]) -> dict[str, Any]:
    """Run one ``tool_use`` block locally; its ``tool_result`` block (``is_error`` on failure)."""
    tool = LOCAL_TOOLS.get(str(block.get("name")))
    arguments = block.get("input")
    result: dict[str, Any] = {"type": "tool_result", "tool_use_id": block["id"]}
    try:
        if tool is None:
            raise ValueError(f"no tool named {block.get('name')!r}")
        if not isinstance(arguments, dict):
            raise TypeError("the tool input is not an object")
        result["content"] = tool(**arguments)
    except (TypeError, ValueError, ArithmeticError) as exc:
        result["content"] = f"error: {exc}"
        result["is_error"] = True
    return result


def describe(block: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """One line per tool call: ``name(arguments) -> result``."""
    arguments = ", ".join(f"{k}={v!r}" for k, v in (block.get("input") or {}).items())
    return f"{block.get('name')}({arguments}) -> {result['content']}"


def totals_line(totals: SessionTotals) -> str:
    return (
        f"totals: {totals.calls} calls, {format_usd(totals.cost)}, {totals.usage.input} tokens in, "
        f"{totals.usage.output} out, {totals.elapsed:.2f} s"
    )


@contextmanager
def make_client(online: bool, slow: bool) -> Iterator[Client]:
    """A client on the real API, or on an embedded emulator (streaming slowly for the time cap)."""
    with ExitStack() as stack:
        if online:
            client = stack.enter_context(Client())
        else:
            from canny.emulator import serve_in_thread

            emulator = stack.enter_context(serve_in_thread(chunk_delay=SLOW_DELTAS if slow else 0.0))
            client = stack.enter_context(
                Client(api_key="sk-ant-offline-example", base_url=emulator.base_url, model=OFFLINE_MODEL, ledger=False)
            )
        yield client


def run(cap: str, online: bool) -> int:
    caps = CAPS[cap]
    print(f"caps: max_cost ${caps['max_cost']}, {caps['max_iterations']} iterations, {caps['max_wall_time']:g} s")
    task = TASK if online else TASK + OFFLINE_DIRECTIVES
    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    with make_client(online, slow=cap == "time") as client, client.session(**caps) as session:
        while True:
            try:
                result = session.create(messages, tools=TOOLS, max_tokens=400)
            except SessionLimitReached as stop:
                print(f"\nstopped ({stop.reason}): {stop.message}")
                print(totals_line(stop.totals))
                return 0
            content = result.message.get("content", [])
            messages.append({"role": "assistant", "content": content})
            calls = [block for block in content if block.get("type") == "tool_use"]
            so_far = f"session so far {format_usd(session.totals.cost)}"
            if result.stop_reason != "tool_use" or not calls:
                print(f"turn {session.totals.calls}: {result.stop_reason}, {so_far}")
                print(f"\nfinished ({result.stop_reason}) before any cap:\n{result.text}")
                print(totals_line(session.totals))
                return 0
            results = [run_tool(block) for block in calls]
            lines = "; ".join(describe(block, res) for block, res in zip(calls, results, strict=True))
            print(f"turn {session.totals.calls}: {lines}; {so_far}")
            messages.append({"role": "user", "content": results})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cap", choices=sorted(CAPS), default="cost", help="which cap should stop the loop")
    parser.add_argument("--online", action="store_true", help="use the real API (needs a key)")
    args = parser.parse_args(argv)
    try:
        return run(args.cap, args.online)
    except CannyError as exc:  # e.g. --online without a key, or the API refusing the request
        print(f"error: {exc.message}" + (f"\n  hint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1  # 2: a usage or configuration error


if __name__ == "__main__":
    sys.exit(main())
