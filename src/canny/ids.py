"""Ids for calls and sessions: 32 hex digits, the shape of ``uuid.uuid4().hex``.

``uuid4`` asks the kernel for 16 random bytes every time (a system call per id, which a
loaded machine can make cost tens of microseconds). These ids name rows; they are not
secrets. So each process seeds one generator from the kernel once (and again in a forked
child, which must not repeat its parent's ids) and draws 128 bits from it per id.
"""

from __future__ import annotations

import os
import random
import threading

__all__ = ["new_id"]

_lock = threading.Lock()
_state: list[random.Random] = []


def _seed() -> None:
    _state[:] = [random.Random(int.from_bytes(os.urandom(32), "big"))]


def new_id() -> str:
    """A new random 128-bit id as 32 lowercase hex digits."""
    with _lock:
        if not _state:
            _seed()
        bits = _state[0].getrandbits(128)
    return f"{bits:032x}"


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_state.clear)
