"""Prefix hashes (canny.prefixes) and the request shape every attempt records: its
max_tokens and its cacheable prefix hashes, from Client, AsyncClient, sessions and the meter."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from canny import AsyncClient, Client, errors, meter
from canny.caching import estimate_tokens
from canny.prefixes import VERSION, parse_prefixes, prefix_hashes, prefixes
from tests.conftest import CANARY_KEY, MemoryLedger

MODEL = "claude-sonnet-5-5"  # minimum cacheable length 512 tokens
SYSTEM = "You answer questions about the Acme billing policy, citing the section. " * 40  # about 720 tokens


def test_boundaries_are_cumulative_sha256_lines_of_canonical_json() -> None:
    """Each boundary hashes the version line and one canonical JSON line per part up to it."""
    tools = [{"name": "lookup", "description": "Find an invoice", "input_schema": {"type": "object"}}]
    params = {"tools": tools, "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}
    found = prefixes(params)
    assert [p.kind for p in found] == ["t", "s", "m1"]
    lines = [
        json.dumps({"tools": tools}, sort_keys=True, separators=(",", ":")),
        json.dumps({"system": [{"type": "text", "text": "Be brief."}]}, sort_keys=True, separators=(",", ":")),
        json.dumps(
            {"message": {"role": "user", "content": [{"type": "text", "text": "Hi"}]}},
            sort_keys=True,
            separators=(",", ":"),
        ),
    ]
    digest = hashlib.sha256(VERSION)
    for prefix, line in zip(found, lines, strict=True):
        digest.update(line.encode() + b"\n")
        assert prefix.hash == digest.hexdigest()[:16]
    sizes = [estimate_tokens(tools), estimate_tokens([{"type": "text", "text": "Be brief."}]), 0]
    assert [p.tokens for p in found] == [sizes[0], sizes[0] + sizes[1], sum(sizes)]


def test_same_prefix_same_hash_markers_and_string_forms_aside() -> None:
    """A shared system prompt hashes alike whatever follows, with or without cache_control,
    as a string or as one text block; a different next message changes only later hashes."""
    first = prefixes({"system": SYSTEM, "messages": [{"role": "user", "content": "Question one"}]})
    marked = {"type": "text", "text": SYSTEM, "cache_control": {"type": "ephemeral"}}
    second = prefixes({"system": [marked], "messages": [{"role": "user", "content": "Question two"}]})
    assert first[0] == second[0]
    assert first[1].hash != second[1].hash


def test_stored_form_keeps_only_cacheable_prefixes_and_never_the_text() -> None:
    """Only boundaries of at least the model's minimum are stored, as KIND:HASH:TOKENS, no text."""
    params = {"system": SYSTEM, "messages": [{"role": "user", "content": "secret question text"}]}
    stored = prefix_hashes(MODEL, params)
    assert "Acme" not in stored and "secret" not in stored
    kept = parse_prefixes(stored)
    assert kept is not None and [p.kind for p in kept] == ["s", "m1"]
    assert all(p.tokens >= 512 for p in kept)
    assert prefix_hashes(MODEL, {"messages": [{"role": "user", "content": "short"}]}) == ""
    # A model whose minimum is 4,096 tokens caches none of it.
    assert prefix_hashes("claude-haiku-4-5", params) == ""
    assert parse_prefixes(None) is None and parse_prefixes("") == []


def test_at_most_sixteen_boundaries_the_system_and_the_deepest_messages() -> None:
    """A long conversation keeps the system boundary and the 15 deepest message boundaries."""
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(40)]
    kept = parse_prefixes(prefix_hashes(MODEL, {"system": SYSTEM, "messages": messages}))
    assert kept is not None
    assert [p.kind for p in kept] == ["s", *(f"m{n}" for n in range(26, 41))]


def _ask(emulator: Any, ledger: MemoryLedger, **kwargs: Any) -> Client:
    url = emulator.url_for(run=uuid.uuid4().hex)
    return Client(api_key=CANARY_KEY, base_url=url, ledger=ledger, model=MODEL, **kwargs)


def _shape(ledger: MemoryLedger) -> list[tuple[int | None, list[str]]]:
    out = []
    for row in ledger.rows:
        kept = parse_prefixes(row.prefix_hashes)
        assert kept is not None
        out.append((row.max_tokens, [p.kind for p in kept]))
    return out


def test_client_rows_record_max_tokens_and_prefixes(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """Client.create and Client.stream rows carry the max_tokens sent and the prefix hashes."""
    with _ask(emulator, memory_ledger, max_tokens=300) as client:
        client.create("What is due?", system=SYSTEM)
        for _ in client.stream("And when?", system=SYSTEM, max_tokens=200):
            pass
    assert _shape(memory_ledger) == [(300, ["s", "m1"]), (200, ["s", "m1"])]
    first, second = (parse_prefixes(r.prefix_hashes) for r in memory_ledger.rows)
    assert first is not None and second is not None and first[0] == second[0]


def test_async_client_and_session_rows_record_them(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """AsyncClient and a session's turns record max_tokens and prefix hashes too."""

    async def go() -> None:
        url = emulator.url_for(run=uuid.uuid4().hex)
        async with AsyncClient(api_key=CANARY_KEY, base_url=url, ledger=memory_ledger, model=MODEL) as client:
            await client.create("What is due?", system=SYSTEM, max_tokens=150)

    asyncio.run(go())
    with _ask(emulator, memory_ledger, max_tokens=120) as client, client.session(max_iterations=2) as s:
        s.create("Next?", system=SYSTEM)
    assert _shape(memory_ledger) == [(150, ["s", "m1"]), (120, ["s", "m1"])]


def test_meter_rows_record_them(emulator: Any, memory_ledger: MemoryLedger) -> None:
    """A metered SDK client's rows carry the request's max_tokens and prefix hashes."""
    url = emulator.url_for(run=uuid.uuid4().hex)
    with anthropic.Anthropic(api_key=CANARY_KEY, base_url=url) as sdk:
        metered = meter(sdk, ledger=memory_ledger)
        metered.messages.create(
            model=MODEL, max_tokens=77, system=SYSTEM, messages=[{"role": "user", "content": "Hello"}]
        )
    assert _shape(memory_ledger) == [(77, ["s", "m1"])]


def test_a_budget_refused_row_records_them(memory_ledger: MemoryLedger) -> None:
    """The row of a call refused before sending still says what it asked for."""
    with (
        Client(api_key=CANARY_KEY, ledger=memory_ledger, model=MODEL) as client,
        pytest.raises(errors.BudgetExceeded),
    ):
        client.create("What is due?", system=SYSTEM, max_tokens=64000, max_cost=Decimal("0.000001"))
    (row,) = memory_ledger.rows
    assert (row.outcome, row.max_tokens) == ("budget_refused", 64000)
    assert [p.kind for p in parse_prefixes(row.prefix_hashes) or []] == ["s", "m1"]


@settings(max_examples=60)
@given(
    system=st.text(max_size=3000),
    turns=st.lists(st.text(max_size=3000), min_size=1, max_size=4),
    model=st.sampled_from(["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-7"]),
)
def test_the_body_length_shortcut_never_changes_the_stored_prefixes(system: str, turns: list[str], model: str) -> None:
    """Skipping bodies shorter than the model's minimum gives what hashing them would give."""
    params = {"system": system, "messages": [{"role": "user", "content": text} for text in turns]}
    body = json.dumps({k: params.get(k) for k in ("system", "messages", "tools")}, sort_keys=True, ensure_ascii=False)
    assert prefix_hashes(model, params, body_chars=len(body)) == prefix_hashes(model, params)
