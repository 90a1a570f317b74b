"""How the CLI ends a call when the process is told to stop.

Ctrl-C raises :class:`KeyboardInterrupt` in the main thread, and every call path already
turns that into a ``cancelled`` ledger row with the usage billed so far and a settled
budget reservation. :func:`stop_on_signals` makes SIGTERM (``timeout``, ``docker stop``,
a cancelled CI job) and SIGHUP (a closed terminal) do exactly the same, by raising
:class:`Stopped`, a :class:`KeyboardInterrupt` that remembers its signal and exit code.

Two rules keep the record whole:

* a signal that arrives while canny writes a ledger row or settles a budget (the frames
  of :func:`canny.books.critical_sections` are on the stack) is held back and re-checked a few milliseconds
  later, so the write is never cut in half;
* once one signal has stopped the call, further SIGINT / SIGTERM / SIGHUP are ignored
  while the call is wound down and recorded (``kill -9`` still works); the previous
  handlers come back when the block ends, after the row is written.

Only the command line installs these handlers; ``import canny`` and ``canny.Client``
never touch signal dispositions. A signal the parent set to "ignore" (``nohup``, a
background job) stays ignored.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import CodeType, FrameType
from typing import Any

__all__ = ["Stopped", "stop_on_signals"]

#: How soon a held-back signal checks again whether the write it waits for is done.
_RECHECK = 0.02


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal; it ends a call the way Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def message(self) -> str:
        """The stderr line: Ctrl-C keeps its familiar ``interrupted``."""
        if self.signum == signal.SIGINT:
            return "canny: interrupted"
        return f"canny: stopped by {self.name}"


def _protected_code() -> frozenset[CodeType]:
    from canny.books import critical_sections
    from canny.client import Client

    # Client._prepare holds reservations until its run takes them over.
    functions = (*critical_sections(), Client._prepare)
    return frozenset(f.__code__ for f in functions)


class _Handler:
    def __init__(self, protected: frozenset[CodeType]) -> None:
        self.protected = protected
        self.fired: int | None = None  # the signal that stopped the call
        self.pending: int | None = None  # a signal held back until a write is done
        self.closing = False
        self.timer: threading.Timer | None = None

    def _recording(self, frame: FrameType | None) -> bool:
        while frame is not None:
            if frame.f_code in self.protected:
                return True
            frame = frame.f_back
        return False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.fired is not None:
            return  # already stopping: let the call be recorded
        if self.closing:
            self.pending = self.pending or signum  # raised once the handlers are restored
            return
        if self._recording(frame) and hasattr(signal, "pthread_kill"):
            # Hold it back and send it again to this thread shortly: by then the row
            # (or the budget) is written, or it is held back once more.
            self.pending = signum
            main = threading.main_thread().ident
            assert main is not None
            self.timer = threading.Timer(_RECHECK, signal.pthread_kill, (main, signum))
            self.timer.daemon = True
            self.timer.start()
            return
        self.fired, self.pending = signum, None
        raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _Handler(_protected_code())
    previous: dict[int, Any] = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is None:
            continue  # Windows has no SIGHUP
        current = signal.getsignal(signum)
        if current == signal.SIG_IGN:
            continue  # nohup / a background job: the parent chose to ignore it
        previous[signum] = current
        signal.signal(signum, handler)
    try:
        yield
    finally:
        handler.closing = True
        if handler.timer is not None:
            handler.timer.cancel()
            handler.timer.join()
        for signum, old in previous.items():
            signal.signal(signum, old)
        held = handler.pending if handler.fired is None else None
        if held is not None:
            raise Stopped(held)  # held back during the last write, and the block ended first
