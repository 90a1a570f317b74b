"""Playing a response onto the wire, faults included.

A response is a *script*: a list of steps (:class:`Start` the response, send a
:class:`Body` chunk, :class:`Pause`, :class:`Cut` the connection). :func:`play` runs it
as a raw ASGI response, which is what lets the emulator do what a framework response
cannot: stall mid-body, or close the socket without the terminating chunk (FIN) or with
a TCP reset (``SO_LINGER`` 0, then abort).

Cutting needs the connection's transport. :data:`TRANSPORT_KEY` in the ASGI scope holds
it; the app puts it there from uvicorn's ``send`` (its request cycle object). Without a
transport (another server, or an in-process ASGI client) a cut just ends the response
early.

Every pause ends early when the client disconnects or the server shuts down
(``closing``), so a 30-second stall never holds up shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.types import Receive, Scope, Send

__all__ = ["TRANSPORT_KEY", "Body", "Cut", "Pause", "Start", "Step", "find_transport", "play"]

#: Scope key under which the app stores the connection's asyncio transport.
TRANSPORT_KEY = "canny.emulator.transport"
_POLL = 0.05
_CUT_GRACE = 5.0


@dataclass(frozen=True, slots=True)
class Start:
    """Send the status line and headers."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Body:
    """Send a chunk of the body (more may follow)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next step."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Cut:
    """Close the connection now, without finishing the body; ``reset`` sends a TCP RST."""

    reset: bool = False


Step = Start | Body | Pause | Cut


def find_transport(send: Send) -> asyncio.Transport | None:
    """The transport behind uvicorn's ``send`` (a bound method of its request cycle)."""
    owner = getattr(send, "__self__", None)
    transport = getattr(owner, "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def _pause(seconds: float, closing: threading.Event) -> bool:
    """Sleep; return False if the server began closing meanwhile."""
    deadline = anyio.current_time() + seconds
    while not closing.is_set():
        remaining = deadline - anyio.current_time()
        if remaining <= 0:
            return True
        await anyio.sleep(min(remaining, _POLL))
    return False


def _cut(transport: asyncio.Transport, *, reset: bool) -> None:
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _wait_for_disconnect() -> None:
    """Idle until the disconnect watcher cancels us (bounded, in case it never comes)."""
    with anyio.move_on_after(_CUT_GRACE):
        await anyio.sleep_forever()


async def play(steps: Sequence[Step], scope: Scope, receive: Receive, send: Send, closing: threading.Event) -> None:
    """Run a response script. Returns quietly if the client goes away."""
    transport: Any = scope.get(TRANSPORT_KEY)
    async with anyio.create_task_group() as group:

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch_disconnect)
        await _run(steps, send, transport, closing)
        group.cancel_scope.cancel()


async def _run(
    steps: Sequence[Step], send: Send, transport: asyncio.Transport | None, closing: threading.Event
) -> None:
    started = False
    for step in steps:
        if transport is not None and transport.is_closing():
            # The client left; uvicorn learns it a loop turn later. Stop writing now.
            await _wait_for_disconnect()
            return
        cut = step if isinstance(step, Cut) else None
        if isinstance(step, Start):
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in step.headers]
            await send({"type": "http.response.start", "status": step.status, "headers": headers})
            started = True
        elif isinstance(step, Body):
            await send({"type": "http.response.body", "body": step.data, "more_body": True})
        elif isinstance(step, Pause) and not await _pause(step.seconds, closing):
            cut = Cut()  # the server is shutting down: end like a dropped connection
        if cut is not None:
            if transport is None:
                break
            _cut(transport, reset=cut.reset)
            await _wait_for_disconnect()
            return
    if started:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
