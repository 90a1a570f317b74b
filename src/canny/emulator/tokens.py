"""Deterministic token counting and answer text for the emulator.

Counting: text is split into *pieces* (runs of word characters, and single punctuation
or symbol characters); a piece of ``n`` characters costs ``ceil(n / 4)`` tokens, at least
one. Whitespace is free. So counts add up: the count of two texts joined by whitespace
is the sum of their counts, which is what lets streamed deltas, ``max_tokens`` cuts and
``usage`` agree exactly.

Answers: a pure function of the last user message. Its SHA-256 picks sentences from a
fixed corpus, so the same prompt always gets the same answer. Prompt directives:

- ``[[tokens=N]]`` answers with exactly ``N`` output tokens (benchmarks: 1 and 1,000);
- ``[[words=N]]`` answers with exactly ``N`` words;
- ``[[say=TEXT]]`` answers with ``TEXT`` verbatim;
- ``[[fault=SPEC]]`` applies a fault when the plan or scenario says ``ok``;
- ``[[thinking=redacted]]`` turns the thinking block (when ``thinking`` is on) into a
  ``redacted_thinking`` block;
- ``[[tool_turns=N]]`` and ``[[tool=NAME]]`` steer tool use (read from the user message
  that opened the exchange; see :mod:`canny.emulator.tools`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "CORPUS",
    "MAX_TOOL_TURNS",
    "MAX_WORDS",
    "Directives",
    "count_tokens",
    "generate_text",
    "parse_directives",
    "split_deltas",
    "truncate_to_tokens",
]

#: Upper bound for ``[[words=N]]``.
MAX_WORDS = 200_000
#: Upper bound for ``[[tool_turns=N]]``.
MAX_TOOL_TURNS = 1000

_PIECE = re.compile(r"\w+|[^\w\s]")
_DIRECTIVE = re.compile(r"\[\[(tokens|words|say|fault|tool_turns|tool|thinking)=(.*?)\]\]", re.DOTALL)
_TOOL_GROUP = re.compile(r"[a-zA-Z0-9_-]{1,64}(?:\+[a-zA-Z0-9_-]{1,64})*\Z")
_DELTA = re.compile(r"\s*\S+(?:\s+\S+){0,2}")

CORPUS: tuple[str, ...] = (
    "The emulator answers every request with text drawn from a fixed list of sentences.",
    "Each answer depends only on the last user message, so the same prompt gets the same reply.",
    "A careful client retries a rate limit only after the delay the server asks for.",
    "Streaming sends the answer in small pieces as soon as they are ready.",
    "Usage arrives at the start of a stream and is updated again at its end.",
    "A budget that holds across processes needs a reservation before each call.",
    "Prompt caching makes a long, stable prefix cheaper to send again.",
    "An interrupted stream is still billed for the tokens it produced.",
    "Refusals are answers, not errors, and they should not be retried.",
    "Good tests fail on purpose, in the same way, every time they run.",
    "The ledger keeps one row for every attempt, including the ones that failed.",
    "Exponential backoff with jitter keeps many clients from retrying at once.",
    "A stalled connection is worse than a closed one, because nothing tells you it is dead.",
    "Costs are computed from token counts and a dated table of prices.",
    "Small, clear modules are easier to read than one large file.",
    "The quick brown fox jumps over the lazy dog.",
    "Loopback servers make fast and hermetic integration tests.",
    "Every response carries a request identifier that support can look up.",
    "A deadline bounds the total time a call may take, retries included.",
    "Output tokens cost more than input tokens on every current model.",
    "Cache reads are billed at a fraction of the base input price.",
    "A well-behaved server sends a ping event early in each stream.",
    "When the plan runs out, the emulator simply answers normally.",
    "Deterministic text makes benchmark results comparable between runs.",
    "Time to first token matters more to people than total latency.",
    "Clean error messages name the problem and say what to do next.",
    "Secrets belong in the keyring, never in logs or exception messages.",
    "A seeded random mix of faults turns chaos into a reproducible experiment.",
    "Tokens are counted the same way for prompts and for answers.",
    "The maximum token limit cuts an answer short, exactly at the limit.",
    "Stop sequences end an answer early, before the sequence itself.",
    "Thank you for testing with the canny emulator.",
)


@dataclass(frozen=True, slots=True)
class Directives:
    """The ``[[...]]`` conveniences found in a prompt."""

    tokens: int | None = None
    words: int | None = None
    say: str | None = None
    fault: str | None = None
    #: ``[[tool_turns=N]]``: tool calls to make before the final text answer.
    tool_turns: int | None = None
    #: ``[[tool=A+B,C]]``: the tools of each tool turn (``+`` calls several at once).
    tool: tuple[tuple[str, ...], ...] = ()
    #: ``[[thinking=redacted]]``: the thinking block comes back redacted.
    thinking: str | None = None


def count_tokens(text: str) -> int:
    """The emulator's token count of ``text`` (see the module docstring)."""
    return sum((len(piece) + 3) // 4 for piece in _PIECE.findall(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """The longest prefix of ``text`` that counts exactly ``limit`` tokens (or all of it).

    A word that does not fit is cut inside, four characters per remaining token, so the
    result always counts exactly ``min(limit, count_tokens(text))``.
    """
    total = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        cost = (len(piece) + 3) // 4
        if total + cost > limit:
            remaining = limit - total
            end = match.start() + 4 * remaining if remaining > 0 else match.start()
            return text[:end].rstrip()
        total += cost
    return text


def split_deltas(text: str) -> list[str]:
    """Split text into stream deltas of up to three words (joined, they give ``text``)."""
    deltas = _DELTA.findall(text)
    consumed = sum(len(d) for d in deltas)
    if consumed < len(text):  # trailing whitespace
        if deltas:
            deltas[-1] += text[consumed:]
        else:
            deltas = [text]
    return deltas


def parse_directives(prompt: str) -> Directives:
    """Find the ``[[name=value]]`` directives in a prompt (the first of each name wins).

    Raises :class:`ValueError` for a ``tokens`` or ``words`` value that is not a whole
    number in ``1..MAX_WORDS``, a ``tool_turns`` value outside ``0..MAX_TOOL_TURNS``, or
    a ``tool`` value that is not tool names joined by ``+`` and ``,``.
    """
    found: dict[str, str] = {}
    for name, value in _DIRECTIVE.findall(prompt):
        found.setdefault(name, value)
    counts: dict[str, int | None] = {"tokens": None, "words": None, "tool_turns": None}
    for name in counts:
        if name in found:
            raw = found[name].strip()
            low, high = (0, MAX_TOOL_TURNS) if name == "tool_turns" else (1, MAX_WORDS)
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ValueError(f"[[{name}={raw}]]: expected a whole number from {low} to {high}")
            counts[name] = int(raw)
    groups: tuple[tuple[str, ...], ...] = ()
    if "tool" in found:
        raw = found["tool"].strip()
        parts = [part.strip() for part in raw.split(",")]
        if not all(_TOOL_GROUP.match(part) for part in parts):
            raise ValueError(
                f"[[tool={raw}]]: expected tool names, '+' between tools called together, ',' between turns"
            )
        groups = tuple(tuple(part.split("+")) for part in parts)
    thinking = found.get("thinking")
    if thinking is not None and thinking.strip() != "redacted":
        raise ValueError(f"[[thinking={thinking}]]: expected 'redacted'")
    return Directives(
        tokens=counts["tokens"],
        words=counts["words"],
        say=found.get("say"),
        fault=found.get("fault"),
        tool_turns=counts["tool_turns"],
        tool=groups,
        thinking=None if thinking is None else thinking.strip(),
    )


def _numbers(key: str) -> Iterator[int]:
    """An endless, deterministic stream of 32-bit numbers derived from ``key``."""
    counter = 0
    while True:
        digest = hashlib.sha256(f"{counter}:{key}".encode()).digest()
        for i in range(0, len(digest), 4):
            yield int.from_bytes(digest[i : i + 4], "big")
        counter += 1


def generate_text(prompt: str, directives: Directives, *, max_tokens: int, run_on: bool = False) -> str:
    """The answer to ``prompt``: deterministic for a given prompt and arguments.

    The natural answer is the ``[[say=TEXT]]`` text, ``N`` tokens for ``[[tokens=N]]``,
    ``N`` words for ``[[words=N]]``, or else two to four corpus sentences. Generation stops once the text
    exceeds ``max_tokens`` (the caller truncates), so a huge ``[[words=N]]`` with a small
    ``max_tokens`` stays cheap. ``run_on`` keeps going past the natural end until the
    text exceeds ``max_tokens`` (the ``max_tokens`` fault uses it).
    """
    if directives.say is not None and not run_on:
        return directives.say
    if directives.tokens is not None and not run_on:
        plain = Directives()
        text = generate_text(prompt, plain, max_tokens=min(max_tokens, directives.tokens), run_on=True)
        return truncate_to_tokens(text, directives.tokens)
    numbers = _numbers(prompt)
    parts: list[str] = [directives.say] if directives.say else []
    tokens = count_tokens(parts[0]) if parts else 0
    words = 0
    target_words = directives.words
    sentences = 2 + next(numbers) % 3

    def natural_end() -> bool:
        if directives.say is not None:
            return True
        if target_words is not None:
            return words >= target_words
        return len(parts) >= sentences

    while tokens <= max_tokens and (run_on or not natural_end()):
        sentence = CORPUS[next(numbers) % len(CORPUS)]
        parts.append(sentence)
        tokens += count_tokens(sentence)
        words += len(sentence.split())
    text = " ".join(parts)
    if not run_on and target_words is not None and words > target_words:
        text = " ".join(text.split()[:target_words]).rstrip(".,;:!?") + "."
    return text
