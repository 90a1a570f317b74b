"""An agent loop with local tools, capped by a canny session: it stops *before* the call
that could cross a cap, and says which cap and what the loop used.

    python examples/agent_loop.py --cap cost         # stops on max_cost
    python examples/agent_loop.py --cap iterations   # stops on max_iterations
    python examples/agent_loop.py --cap time         # stops on max_wall_time
    python examples/agent_loop.py --cap cost --online   # the real API (needs a key)

Offline (the default) it runs against canny's emulator, which needs no key and no
network. The emulator answers with text only: it never sends ``tool_use`` blocks. So the
offline loop speaks a plain-text tool protocol: it runs the local tools on each answer
(count its words, look up its longest word in a small glossary) and sends the results
back as the next user turn. The emulator never says it is done, so only a cap ends the
loop, which is the point. With ``--online`` the same loop offers the tools to Claude as
real tools (``tool_use`` / ``tool_result``) and ends when Claude stops asking for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from canny import Client
from canny.errors import SessionLimitReached
from canny.pricing import format_usd

GLOSSARY = {
    "budget": "a cap on what calls may spend per day or month",
    "reservation": "the worst case of a call, held against its budgets while it runs",
    "ledger": "one row per attempt, with its usage and exact cost",
    "streaming": "text shown as it arrives, in server-sent events",
}

TOOLS: list[dict[str, Any]] = [
    {
        "name": "word_count",
        "description": "Count the words of a text.",
        "input_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
    {
        "name": "lookup",
        "description": "Look a term up in the project glossary.",
        "input_schema": {"type": "object", "properties": {"term": {"type": "string"}}, "required": ["term"]},
    },
]

TASK = (
    "You are researching how canny keeps API spending under control. Use the word_count and lookup "
    "tools as often as useful, one step at a time, then summarise what you found."
)

#: Caps per --cap: the chosen one is tight, the other two are loose.
CAPS: dict[str, dict[str, Any]] = {
    "cost": {"max_cost": "0.02", "max_iterations": 1000, "max_wall_time": 600.0},
    "iterations": {"max_cost": "5", "max_iterations": 4, "max_wall_time": 600.0},
    "time": {"max_cost": "5", "max_iterations": 1000, "max_wall_time": 4.0},
}


def word_count(text: str) -> str:
    return f"{len(text.split())} words"


def lookup(term: str) -> str:
    word = term.lower().strip(".,;:!?")
    return GLOSSARY.get(word, f"no glossary entry for {word!r}")


LOCAL_TOOLS: dict[str, Callable[[str], str]] = {"word_count": word_count, "lookup": lookup}


def text_turn(answer: str) -> str:
    """Offline: run both tools on an answer and phrase the results as the next user turn."""
    longest = max(answer.split(), key=len, default="nothing")
    results = [f"word_count -> {word_count(answer)}", f"lookup({longest!r}) -> {lookup(longest)}"]
    return "Tool results:\n" + "\n".join(results) + "\nContinue the research."


def tool_results(message: dict[str, Any]) -> list[dict[str, Any]]:
    """Online: run each ``tool_use`` block of Claude's message; the ``tool_result`` blocks."""
    results = []
    for block in message.get("content", []):
        if block.get("type") == "tool_use":
            argument = next(iter(block.get("input", {}).values()), "")
            tool = LOCAL_TOOLS.get(block["name"])
            output = tool(str(argument)) if tool is not None else f"no tool named {block['name']!r}"
            results.append({"type": "tool_result", "tool_use_id": block["id"], "content": output})
    return results


@contextmanager
def make_client(online: bool, slow: bool) -> Iterator[Client]:
    """A client on the real API, or on an emulator (streaming slowly for the time cap)."""
    with ExitStack() as stack:
        if online:
            client = stack.enter_context(Client())
        else:
            from canny.emulator import serve_in_thread

            emulator = stack.enter_context(serve_in_thread(chunk_delay=0.03 if slow else 0.0))
            client = stack.enter_context(
                Client(api_key="sk-ant-offline-example", base_url=emulator.base_url, ledger=False)
            )
        yield client


def run(cap: str, online: bool) -> int:
    caps = CAPS[cap]
    print(f"caps: max_cost ${caps['max_cost']}, {caps['max_iterations']} iterations, {caps['max_wall_time']} s")
    messages: list[dict[str, Any]] = [{"role": "user", "content": TASK}]
    tools: dict[str, Any] = {"tools": TOOLS} if online else {}
    with make_client(online, slow=cap == "time") as client, client.session(**caps) as session:
        while True:
            try:
                result = session.create(messages, max_tokens=400, **tools)
            except SessionLimitReached as stop:
                totals = stop.totals
                print(f"\nstopped ({stop.reason}): {stop.message}")
                print(
                    f"totals: {totals.calls} calls, {format_usd(totals.cost)}, {totals.usage.input} tokens in, "
                    f"{totals.usage.output} out, {totals.elapsed:.2f} s"
                )
                return 0
            cost = format_usd(session.totals.cost)
            print(f"turn {session.totals.calls}: {len(result.text.split())} words, session so far {cost}")
            if online:
                messages.append({"role": "assistant", "content": result.message["content"]})
                results = tool_results(result.message)
                if not results:
                    print("\nClaude finished before any cap:\n" + result.text)
                    return 0
                messages.append({"role": "user", "content": results})
            else:
                messages.append({"role": "assistant", "content": result.text})
                messages.append({"role": "user", "content": text_turn(result.text)})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cap", choices=sorted(CAPS), default="cost", help="which cap should stop the loop")
    parser.add_argument("--online", action="store_true", help="use the real API with real tools (needs a key)")
    args = parser.parse_args(argv)
    return run(args.cap, args.online)


if __name__ == "__main__":
    sys.exit(main())
