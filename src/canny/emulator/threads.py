"""Message threads (beta ``message-threads-2026-08-12``): conversations the emulator holds.

A request with ``"thread": {"type": "create"}`` is answered as usual, and the emulator then
holds the whole conversation (``system``, ``tools``, the messages and the reply) under the
reply's ``id``. A request with ``"thread": {"type": "continue", "previous_message_id": ID}``
sends only the messages since that reply and leaves ``system`` and ``tools`` out: the
emulator rebuilds the full request (held history first, then the new messages) before it
validates and answers it, so the held history is billed as input like any other prompt
(prompt caching applies only where the request asks for it, as with the API).

Rules, as the API documents them:

- the ``anthropic-beta`` header must name ``message-threads-2026-08-12``;
- a ``continue`` may not repeat ``system`` or ``tools`` (the thread keeps the create's);
- the thread's fixed fields (``model``, ``thinking``, ``tool_choice`` and the top-level
  ``cache_control``) must match the create's: 400 ``thread_fingerprint_mismatch``;
- each reply can be continued once: 400 ``thread_already_continued``;
- a held reply expires 5 minutes after the last request of its thread; an unknown or
  expired ``previous_message_id`` is 404 ``thread_not_found`` (the SDK helpers replay the
  full conversation under a new thread when they see it).

A reply whose response broke off (a dropped stream, an in-band error, no
``message_stop``) is not held: the API holds either the whole reply or none of it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from canny.emulator.fields import ApiError, only, required, typed
from canny.emulator.fields import invalid as _invalid

__all__ = ["THREADS_BETA", "TTL_SECONDS", "PendingTurn", "ThreadError", "ThreadStore", "beta_names", "keeps_reply"]

#: The beta header value that enables the ``thread`` field.
THREADS_BETA = "message-threads-2026-08-12"
#: How long a held reply stays continuable after its thread's last request.
TTL_SECONDS = 300.0
_CREATE_ONLY = ("system", "tools")
_FIXED = ("model", "thinking", "tool_choice", "cache_control")
_MISSING = object()
_PRUNE_ABOVE = 10_000


def beta_names(header: str) -> list[str]:
    """The beta names of an ``anthropic-beta`` header (comma-separated)."""
    return [name.strip() for name in header.split(",") if name.strip()]


class ThreadError(ApiError):
    """A thread rejection: an :class:`ApiError` with ``error.details.error_code``."""

    def __init__(self, status: int, error_type: str, message: str, error_code: str) -> None:
        super().__init__(status, error_type, message)
        self.error_code = error_code


def _error(status: int, error_type: str, message: str, code: str) -> ThreadError:
    return ThreadError(status, error_type, message, code)


@dataclass(slots=True)
class _Held:
    """A held reply: the full request fields up to and including it."""

    fields: dict[str, Any]
    messages: list[Any]
    fingerprint: dict[str, Any]
    chain: list[str]
    continued: bool = False


@dataclass(frozen=True, slots=True)
class PendingTurn:
    """A threaded request on its way: what to hold once its reply is known."""

    fields: Mapping[str, Any]
    messages: Sequence[Any]
    fingerprint: Mapping[str, Any]
    chain: tuple[str, ...] = ()
    previous: str | None = field(default=None)


def _strip_cache_control(value: Any) -> Any:
    """A copy of held content without block ``cache_control`` (each belonged to the turn
    that sent it; a thread request's breakpoints are its own)."""
    if isinstance(value, dict):
        return {k: _strip_cache_control(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip_cache_control(v) for v in value]
    return value


class ThreadStore:
    """The held replies of one server (or one fault-plan run); thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._touched: dict[str, float] = {}  # thread root id -> last request time

    def expand(self, body: Mapping[str, Any], beta_header: str) -> tuple[dict[str, Any], PendingTurn | None]:
        """The request to answer (the full conversation for a ``continue``) without its
        ``thread`` field, and the turn to hold afterwards (``None``: not threaded)."""
        if "thread" not in body or body["thread"] is None:
            return dict(body), None
        if THREADS_BETA not in beta_names(beta_header):
            raise _invalid("thread: Extra inputs are not permitted")
        spec = body["thread"]
        full = {k: v for k, v in body.items() if k != "thread"}
        if not isinstance(spec, dict):
            raise _invalid("thread: Input should be a valid dictionary or object to extract fields from")
        kind = spec.get("type")
        if kind == "create":
            only(spec, frozenset({"type"}), "thread.create")
            return full, self._pending(full, (), None)
        if kind != "continue":
            raise _invalid(
                f"thread: Input tag {kind!r} found using 'type' does not match any of the expected tags: "
                "'create', 'continue'"
            )
        only(spec, frozenset({"type", "previous_message_id"}), "thread.continue")
        previous = required(spec, "previous_message_id", "string", "thread.continue")
        for name in _CREATE_ONLY:
            if name in full:
                raise _invalid(
                    f"{name}: cannot be set on a request that continues a thread; the thread keeps the `{name}` "
                    "of the request that created it"
                )
        messages = typed(full.get("messages", []), "list", "messages")
        with self._lock:
            held = self._live(previous)
            if held is None:
                raise _error(
                    404,
                    "not_found_error",
                    f"thread: no thread state was found for previous_message_id {previous!r}. Replay the full "
                    'conversation with thread: {"type": "create"} to start a new thread.',
                    "thread_not_found",
                )
            if held.continued:
                raise _error(
                    400,
                    "invalid_request_error",
                    f"thread: the response {previous!r} has already been continued, and each response can be "
                    "continued only once. Continue from the thread's most recent response id.",
                    "thread_already_continued",
                )
            fields = copy.deepcopy(held.fields)
            history = copy.deepcopy(held.messages)
            fingerprint = dict(held.fingerprint)
            chain = tuple(held.chain)
        changed = [name for name in _FIXED if full.get(name, _MISSING) != fingerprint.get(name, _MISSING)]
        if changed:
            raise _error(
                400,
                "invalid_request_error",
                f"thread: {', '.join(changed)} must be the same as in the request that created the thread",
                "thread_fingerprint_mismatch",
            )
        full.update(fields)
        full["messages"] = [*history, *messages]
        return full, self._pending(full, chain, previous)

    @staticmethod
    def _pending(full: Mapping[str, Any], chain: tuple[str, ...], previous: str | None) -> PendingTurn:
        fields = {name: copy.deepcopy(full[name]) for name in _CREATE_ONLY if name in full}
        fingerprint = {name: copy.deepcopy(full[name]) for name in _FIXED if name in full}
        messages = full.get("messages", [])
        return PendingTurn(
            fields=fields,
            messages=copy.deepcopy(messages) if isinstance(messages, list) else [],
            fingerprint=fingerprint,
            chain=chain,
            previous=previous,
        )

    def hold(self, turn: PendingTurn, message_id: str, content: Sequence[Mapping[str, Any]]) -> None:
        """Hold the conversation of ``turn`` and its reply under ``message_id``."""
        reply = {"role": "assistant", "content": [dict(block) for block in content]}
        chain = [*turn.chain, message_id]
        with self._lock:
            now = self._clock()
            if turn.previous is not None:
                previous = self._held.get(turn.previous)
                if previous is not None:
                    if previous.continued:  # a concurrent continue won the race
                        return
                    previous.continued = True
            self._held[message_id] = _Held(
                fields=dict(turn.fields),
                messages=_strip_cache_control([*turn.messages, reply]),
                fingerprint=dict(turn.fingerprint),
                chain=chain,
            )
            self._touched[chain[0]] = now
            if len(self._held) > _PRUNE_ABOVE:
                self._prune(now)

    def _live(self, message_id: str) -> _Held | None:
        """The held reply, or ``None`` when unknown or expired (call with the lock held)."""
        held = self._held.get(message_id)
        if held is None:
            return None
        now = self._clock()
        if now - self._touched.get(held.chain[0], now) >= TTL_SECONDS:
            return None
        self._touched[held.chain[0]] = now  # every request of a thread restarts its 5 minutes
        return held

    def _prune(self, now: float) -> None:
        dead = {root for root, seen in self._touched.items() if now - seen >= TTL_SECONDS}
        self._held = {k: v for k, v in self._held.items() if v.chain[0] not in dead}
        for root in dead:
            del self._touched[root]

    def held_messages(self, message_id: str) -> list[Any] | None:
        """The conversation held under ``message_id`` (tests and debugging)."""
        with self._lock:
            held = self._held.get(message_id)
            return None if held is None else copy.deepcopy(held.messages)


#: Fault kinds whose response breaks off: the API holds none of such a reply.
_BROKEN = frozenset({"drop", "reset", "error_event", "malformed_event", "no_message_stop"})


def keeps_reply(fault_kind: str) -> bool:
    """Whether a reply sent under a fault of ``fault_kind`` is held by its thread."""
    return fault_kind not in _BROKEN
