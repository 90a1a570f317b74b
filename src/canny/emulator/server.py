"""Running the emulator: in a daemon thread (tests, benchmarks, demos) or in the foreground.

:func:`serve_in_thread` binds the listening socket itself (so the port is known at once
and a busy port fails in the caller's thread), runs uvicorn on its own event loop in a
daemon thread, and stops it on exit. uvicorn is configured to leave global logging
alone (no log config, access log off, level warning).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import uvicorn

from canny.emulator.app import EmulatorApp, EmulatorState, create_app
from canny.emulator.faults import parse_plan
from canny.emulator.recorder import RecordedRequest
from canny.emulator.scenario import Scenario

__all__ = ["EmulatorHandle", "base_url_of", "bind", "serve_forever", "serve_in_thread"]

_RUN = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}\Z")
_STARTUP_TIMEOUT = 10.0
_SHUTDOWN_TIMEOUT = 10.0


class _Server(uvicorn.Server):
    """uvicorn's server, stoppable at once from another thread, which tells the app to
    cut stalls short when shutting down."""

    def __init__(self, config: uvicorn.Config, state: EmulatorState) -> None:
        super().__init__(config)
        self._state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    async def main_loop(self) -> None:
        # uvicorn's loop polls should_exit every 0.1 s; this one also wakes on stop().
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    def stop(self) -> None:
        """Ask the server to shut down (thread-safe)."""
        self.should_exit = True
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                loop.call_soon_threadsafe(self._wake.set)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.closing.set()
        await super().shutdown(sockets=sockets)


def _config(app: EmulatorApp) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http="h11",
        ws="none",
        loop="asyncio",
        server_header=False,
    )


def bind(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free port); raises OSError.

    The socket is made with ``IPPROTO_TCP`` on purpose: asyncio only sets ``TCP_NODELAY``
    on accepted connections whose ``proto`` says TCP, and without it Nagle's algorithm
    meets the client's delayed ACKs and every response waits about 40 ms.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if os.name == "posix":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def base_url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` for a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@dataclass(frozen=True, slots=True)
class EmulatorHandle:
    """A running emulator: its URL, fault-plan URLs and the requests it received."""

    base_url: str
    app: EmulatorApp

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        return int(self.base_url.rsplit(":", 1)[1])

    def url_for(self, *faults: str, run: str | None = None) -> str:
        """A base URL whose ``/v1/messages`` requests get ``faults`` in order, then ``ok``.

        ``run`` names the run (default: a fresh uuid); each run has its own request
        counter and prompt cache. Raises :class:`ValueError` for a bad fault or run name.
        """
        run = uuid.uuid4().hex if run is None else run
        if not _RUN.match(run):
            raise ValueError(f"run name {run!r} must be 1-128 letters, digits, '_', '-' or '.', not starting with '.'")
        plan = ",".join(faults) if faults else "ok"
        parse_plan(plan)
        return f"{self.base_url}/x/{run}/{plan}"

    def requests(self, run: str | None = None) -> list[RecordedRequest]:
        """The requests received so far, in arrival order (only ``run``'s when given)."""
        return self.app.emulator.recorder.requests(run)


@contextlib.contextmanager
def serve_in_thread(
    scenario: Scenario | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str | None = None,
    chunk_delay: float = 0.0,
) -> Iterator[EmulatorHandle]:
    """Run the emulator in a daemon thread for the duration of a ``with`` block.

    Yields once the server accepts connections; on exit, in-flight stalls are cut short
    and the thread is joined.
    """
    app = create_app(scenario, api_key=api_key, chunk_delay=chunk_delay)
    sock = bind(host, port)
    server = _Server(_config(app), app.emulator)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="canny-emulator", daemon=True)
    try:
        thread.start()
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the emulator's server did not start")
            time.sleep(0.001)
        yield EmulatorHandle(base_url_of(sock), app)
    finally:
        server.stop()
        if thread.is_alive():
            thread.join(_SHUTDOWN_TIMEOUT)
        sock.close()


def serve_forever(app: EmulatorApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` in this thread until SIGINT/SIGTERM (the CLI uses this).

    uvicorn re-raises the signal after a graceful shutdown, so Ctrl-C ends with
    :class:`KeyboardInterrupt` once the server has stopped.
    """
    server = _Server(_config(app), app.emulator)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
