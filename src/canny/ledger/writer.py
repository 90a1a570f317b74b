"""Writing behind the call: the rows of a client's or meter's attempts go to the ledger on a
thread of their own, so a call returns as soon as its answer is in.

A ledger opened for calls (:func:`canny.ledger.open_for_calls`) starts one :class:`Writer`.
From then on :meth:`~canny.ledger._sql.SQLLedger.record`, ``begin_attempt`` and
``forget_attempt`` hand their work to it and return at once; the writer takes whatever has
queued up and writes it in one transaction, and skips the row in flight of an attempt
whose own row is already in the same batch: that pair would be written and deleted in one
breath.

What this promises, and how:

* **Read your own writes.** Every read and write of the ledger object in the caller's thread
  (a report, a budget check, ``records()``, ``close()``) waits for the queue to be written
  first (:meth:`Writer.flush`), so the process sees its own rows as before. Another process
  sees a row within :data:`GROUP_SECONDS` (50 ms) of the call's return.
* **Rows are committed in groups, and journaled meanwhile.** A commit per row cost a 1.7 ms
  loopback call about a fifth of its time (the commit, and the writer thread woken for each
  one); so a finished attempt's row is first appended to this process's journal
  (:mod:`canny.ledger.journal`: one ``write`` in the calling thread, before the call
  returns), and the writer commits whatever has queued :data:`GROUP_SECONDS` after the
  oldest of it (sooner with :data:`GROUP_OPS` operations queued, a flush, or close). A
  process killed with ``kill -9`` leaves its rows in its journal, and the next client or
  meter that opens the ledger writes them: a finished attempt is never lost, nor cut down to
  its row in flight. Where no journal can be written (an unwritable data directory), rows
  are committed at once.
* **Nothing lost.** ``close()``, interpreter exit (``atexit``) and the end of a worker that
  ``multiprocessing`` forked (which skips ``atexit``) write what is queued. A row that
  cannot be written (a locked file, a full disk, a server gone) goes to the spool
  (:mod:`canny.ledger.spool`) and its warning is shown in the caller's thread at its next
  use of the ledger. ``CANNY_LEDGER_WRITES=sync`` (or ``background=False``) writes in the
  caller's thread instead, one transaction per row, as before this module existed.
* **Rows in flight wait only where attempts are that short.** While the latest
  :data:`RECENT_ATTEMPTS` attempts all ended within :data:`LINGER_SECONDS` (20 ms) of their
  row in flight (a local server, the emulator), a row in flight waits with the group, so
  such an attempt never has its row in flight written (its own row follows at once); a
  process killed with ``kill -9`` within that time of an attempt's start (its
  ``message_start``, for a stream) leaves no row for it. Against a remote API, where
  attempts take longer, a row in flight is built and journaled at once and committed with
  the group (committed at once where there is no journal).
* **Budgets settle behind the call.** :meth:`~canny.ledger._sql.SQLLedger.defer` queues a
  reservation's settle after the call's row, in the same group; until it runs the
  reservation holds the worst case, so budget checks in between count too much, never too
  little (a call that does not fit while settles wait waits for them and is checked again:
  :meth:`Writer.calls_waiting`). Write transactions (a budget reserve) do not wait for the
  writer: on SQLite the writes of this process to one file take turns on a lock instead. A
  ledger with a writer is also what lets SQLite budgets reserve from slices in memory
  (:mod:`canny.budget.slices`); ``CANNY_LEDGER_WRITES=sync`` keeps one reservation
  transaction per call.
* **PostgreSQL rows one per transaction, a batch in one round trip.** Rollup triggers lock
  rows table by table; two multi-row transactions could deadlock, single rows cannot. The
  batch's transactions are pipelined (``PostgresLedger.write_all``); a SQLite batch is one
  statement (``SQLiteLedger.write_all``). A deadlock or serialization victim is tried
  again (:data:`RETRIES`).
* **Bounded.** At most :data:`MAX_PENDING` operations wait; a caller that gets ahead of the
  disk waits for room.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from canny.errors import CannyWarning, LedgerError

if TYPE_CHECKING:
    from canny.ledger._sql import SQLLedger
    from canny.ledger.journal import Journal
    from canny.ledger.migrations import Transaction
    from canny.ledger.records import AttemptRecord

__all__ = [
    "MAX_BATCH",
    "MAX_PENDING",
    "Op",
    "Writer",
    "await_writers",
    "background_writes_enabled",
    "holding",
    "place_of",
    "write_turns",
]

#: Operations written in one transaction at the most.
MAX_BATCH = 500
#: Operations that may wait at once; a caller that would queue more waits for room.
MAX_PENDING = 5000
#: Seconds the thread waits for work before it ends (the next write starts a new one).
IDLE_SECONDS = 2.0
#: Seconds a queue holding only rows in flight may wait for more before it is written:
#: only while the latest :data:`RECENT_ATTEMPTS` attempts all ended within it.
LINGER_SECONDS = 0.02
RECENT_ATTEMPTS = 8
#: Times a write that lost a deadlock or a serialization conflict is tried again.
RETRIES = 3
#: With a journal: seconds queued work may wait, from the oldest of it, to be committed
#: with whatever follows (one commit for the rows of many calls).
GROUP_SECONDS = 0.05
#: With a journal: queued operations that are committed without waiting any longer.
GROUP_OPS = 256


def background_writes_enabled(environ: dict[str, str] | None = None) -> bool:
    """Whether ledgers opened for calls write behind the call (``CANNY_LEDGER_WRITES``:
    ``background``, the default, or ``sync``)."""
    value = (os.environ if environ is None else environ).get("CANNY_LEDGER_WRITES", "background")
    return value.strip().lower() not in ("sync", "synchronous", "0", "off", "false")


@dataclass(frozen=True, slots=True)
class Op:
    """One queued write: an attempt's row (``record``, with its column values ``params``,
    or its ``record``), its row in flight
    (``begin``, with ``build``), the removal of a row in flight that was never sent
    (``forget``), or work to run after the rows before it (``call``, with ``run``)."""

    kind: Literal["record", "begin", "forget", "call"]
    record: AttemptRecord | None = None
    key: tuple[str, int] = ("", 0)
    lease_until: datetime | None = None
    reservation_id: int | None = None
    #: For a row in flight queued without its record: builds it, on the writer's thread.
    build: Callable[[], AttemptRecord] | None = None
    #: For ``call``: work to run once the rows before it are written (a budget settle).
    run: Callable[[], object] | None = None
    #: For ``record``: the row's column values, made in the caller's thread (the journal's line).
    params: tuple[Any, ...] | None = None


class Writer:
    """The writer thread of one ledger (see the module's docstring)."""

    def __init__(
        self,
        ledger: SQLLedger,
        apply: Callable[[Transaction, Op], None],
        keep: Callable[[Op, LedgerError], str],
        journal: Journal | None = None,
    ) -> None:
        self._ledger = ledger
        self._journal = journal
        #: When the oldest queued operation was queued (``None``: nothing queued), and
        #: whether something queued must not wait for the group (see :meth:`put`).
        self._since: float | None = None
        self._urgent = False
        #: The rows in flight still queued, by attempt (see :meth:`_cancel_begin`).
        self._queued_begins: dict[tuple[str, int], Op] = {}
        self._apply = apply
        self._keep = keep
        self.place = place_of(ledger.location)
        self._cond = threading.Condition(threading.Lock())
        self._ops: list[Op] = []
        self._busy = False
        self._closed = False
        self._problems: list[str] = []
        self._pid = os.getpid()
        self._running = False
        self._hurry = 0  # callers waiting in flush(): no lingering
        #: When each queued row in flight was queued, and how long the latest attempts
        #: took from that to their own row (:meth:`_short_attempts`).
        self._begun: dict[tuple[str, int], float] = {}
        self._recent: deque[float] = deque(maxlen=RECENT_ATTEMPTS)
        self._thread: threading.Thread | None = None
        _live.add(self)
        live_places.setdefault(self.place, weakref.WeakSet()).add(self)

    def _start(self) -> threading.Thread:
        """Start the thread (the caller holds the condition's lock)."""
        thread = threading.Thread(target=self._run, name="canny-ledger-writer", daemon=True)
        self._running = True
        thread.start()
        return thread

    # -- the caller's side ----------------------------------------------------------------
    def put(self, op: Op) -> None:
        """Queue ``op``; it is written soon, in order with the others. A record with its
        column values (``params``) goes to the journal first: then it may wait for the group."""
        if _after_fork[0]:
            _hook_exit()
        journal = self._journal
        line = None
        if journal is not None and journal.failed is None and op.params is not None:
            line = journal.line(op.kind, op.params)
        with self._cond:
            if self._closed:
                raise LedgerError(f"ledger {self._ledger.location}: the ledger is closed")
            while len(self._ops) >= MAX_PENDING and not _must_not_wait():  # never wait on ourselves
                self._cond.wait()
            journaled = line is not None and journal is not None and journal.append(line)
            self._ops.append(op)
            self._time(op)
            if op.kind == "begin":
                self._queued_begins[op.key] = op
            elif op.kind in ("record", "forget"):
                self._cancel_begin(op.key)
            wake = self._since is None or len(self._ops) >= GROUP_OPS
            if self._since is None:
                self._since = time.monotonic()
            if not self._may_wait(op, journaled):
                wake = self._urgent = True
            if not self._running:
                self._thread = self._start()
            if wake:
                self._cond.notify_all()
        self._report()

    def journals_begins(self) -> bool:
        """Whether a row in flight should be built now and journaled (then it waits for the
        group): rows are journaled, and attempts here are not all short (where they are,
        a row in flight waits unbuilt, and is dropped when its attempt's row follows)."""
        journal = self._journal
        return journal is not None and journal.failed is None and not self._short_attempts()

    def _cancel_begin(self, key: tuple[str, int]) -> None:
        """Drop the queued row in flight of the attempt whose own row was just queued (the
        caller holds the condition's lock): it would never be written, and it holds the
        attempt's objects until the group is written."""
        begin = self._queued_begins.pop(key, None)
        if begin is None:
            return
        ops = self._ops
        for index in range(len(ops) - 1, -1, -1):
            if ops[index] is begin:
                del ops[index]
                return

    def _may_wait(self, op: Op, journaled: bool) -> bool:
        """Whether ``op`` may wait for the group (the caller holds the condition's lock):
        only with a journal; a row only once journaled; a row in flight only where
        attempts end within moments (else it is the only trace of a running attempt)."""
        if self._journal is None:
            return op.kind == "begin" and self._short_attempts()
        if op.kind == "record":
            return journaled
        if op.kind == "begin":
            return journaled or self._short_attempts()
        return True  # a forget, or a budget settle (its reservation holds the worst case meanwhile)

    def _time(self, op: Op) -> None:
        """Keep how long attempts take from their row in flight to their own row (the
        caller holds the condition's lock)."""
        if op.kind == "begin":
            if len(self._begun) > MAX_PENDING:
                self._begun.clear()
            self._begun[op.key] = time.monotonic()
        elif op.kind == "record":
            started = self._begun.pop(op.key, None)
            if started is not None:
                self._recent.append(time.monotonic() - started)

    def _short_attempts(self) -> bool:
        """Whether the latest attempts all ended within :data:`LINGER_SECONDS` of their row
        in flight (a local server): only then is waiting for an attempt's own row worth it."""
        recent = self._recent
        return len(recent) == RECENT_ATTEMPTS and max(recent) < LINGER_SECONDS

    def calls_waiting(self) -> bool:
        """Whether ``call`` work (a budget settle) is queued or being written."""
        with self._cond:
            return self._busy or any(op.kind == "call" for op in self._ops)

    def flush(self) -> None:
        """Wait until everything queued so far is written (or spooled). A no-op on the
        writer's own thread and inside a write transaction of the calling thread (which
        would hold the lock the writer waits for)."""
        if _must_not_wait():
            return
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                while (self._ops or self._busy) and self._running:
                    self._cond.wait()
            finally:
                self._hurry -= 1
        self._report()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        self.flush()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        if self._journal is not None:
            with self._cond:
                self._journal.close()
        _live.discard(self)
        live_places.get(self.place, weakref.WeakSet()).discard(self)
        self._report()

    def _report(self) -> None:
        """Show, in the caller's thread, the warnings of rows that could not be written."""
        if not self._problems:
            return
        with self._cond:
            problems, self._problems = self._problems, []
        for message in problems:
            warnings.warn(message, CannyWarning, stacklevel=4)

    # -- the writer's side ----------------------------------------------------------------
    def _run(self) -> None:
        _thread_state.writer = True
        while True:
            with self._cond:
                if not self._ops and not self._closed:
                    self._cond.wait(IDLE_SECONDS)
                if not self._ops:
                    # Idle or closed: end the thread (the next put starts another), so an
                    # unclosed ledger does not keep a thread, or itself, alive.
                    self._running = False
                    self._since = None
                    return
                self._gather()
                batch, self._ops = self._ops[:MAX_BATCH], self._ops[MAX_BATCH:]
                emptied: int | None = None
                # The file this batch's journaled rows are in: every row queued since the
                # last switch went to the current file.
                holding = None if self._journal is None else self._journal.current
                if self._ops:
                    self._since = time.monotonic()
                    for op in batch:
                        if op.kind == "begin":
                            self._queued_begins.pop(op.key, None)
                else:
                    self._since, self._urgent = None, False
                    self._queued_begins.clear()
                    if self._journal is not None:
                        # Every row journaled so far is in this batch: later ones go to the
                        # other file, and this one is emptied once the batch is written.
                        emptied = self._journal.switch()
                self._busy = True
                self._cond.notify_all()  # room for callers waiting on MAX_PENDING
            written = False
            try:
                self._write(batch)
                written = True
            except Exception as exc:  # a bug here must not leave flush() waiting
                problem = f"ledger rows not written ({type(exc).__name__}: {exc}); they were not spooled"
                with self._cond:
                    self._problems.append(problem)
            finally:
                with self._cond:
                    if self._journal is not None and holding is not None:
                        if not written:  # the file keeps the rows for recovery; no more grouping
                            self._journal.keep(holding)
                        elif emptied is not None:
                            self._journal.empty(emptied)
                    self._busy = False
                    self._cond.notify_all()

    def _gather(self) -> None:
        """Wait while the queue may (the caller holds the condition's lock): with a journal,
        until :data:`GROUP_SECONDS` after the oldest queued operation, unless something
        urgent, :data:`GROUP_OPS` operations, a flush or close come first; without one,
        a queue of only rows in flight waits :data:`LINGER_SECONDS` for the next operation,
        where attempts end within moments (so a row in flight its own row follows at once
        is never written at all)."""
        if self._journal is None:
            if (
                not self._closed
                and not self._hurry
                and all(op.kind == "begin" for op in self._ops)
                and self._short_attempts()
            ):
                self._cond.wait(LINGER_SECONDS)
            return
        while not (self._closed or self._hurry or self._urgent or len(self._ops) >= GROUP_OPS):
            left = (self._since or 0.0) + GROUP_SECONDS - time.monotonic()
            if left <= 0:
                return
            self._cond.wait(left)

    def _write_one(self, op: Op) -> None:
        """One operation in its own transaction, tried again when the database chose it as
        the victim of a deadlock or a serialization conflict (PostgreSQL)."""
        for tries_left in range(RETRIES, -1, -1):
            try:
                with self._ledger.transaction() as tx:
                    self._apply(tx, op)
                return
            except LedgerError as exc:
                text = exc.message.lower()
                if tries_left == 0 or not ("deadlock detected" in text or "could not serialize" in text):
                    raise

    def _write(self, batch: list[Op]) -> None:
        kept = _coalesce(batch)
        ops = [op for op in kept if op.kind != "call"]
        if ops:
            self._write_rows(ops)
        for op in kept:
            if op.run is not None:
                try:
                    op.run()
                except Exception as exc:  # a settle that fails holds its reservation to its lease end
                    problem = f"queued ledger work failed ({type(exc).__name__}: {exc})"
                    with self._cond:
                        self._problems.append(problem)

    def _write_rows(self, ops: list[Op]) -> None:
        # SQLite has one write lock, so a batch is one transaction: one statement where it
        # can be (SQLiteLedger.write_all), which keeps this thread from taking the
        # interpreter lock back from the calling thread once per statement. On PostgreSQL
        # each row's triggers lock its rollup rows table by table; two transactions of
        # several rows each can take them in crossed order and deadlock, one row per
        # transaction cannot.
        write_all = getattr(self._ledger, "write_all", None)
        if write_all is not None:
            try:
                if write_all(ops):
                    return
            except Exception:  # noqa: S110 - written again the usual way just below
                pass
        if len(ops) > 1 and self._ledger.dialect == "sqlite":
            try:
                with self._ledger.transaction() as tx:
                    for op in ops:
                        self._apply(tx, op)
                return
            except Exception:  # noqa: S110 - written again one at a time just below
                pass
        # One at a time, so that one row the ledger refuses does not take the others down.
        for op in ops:
            try:
                self._write_one(op)
            except Exception as failure:
                exc = (
                    failure if isinstance(failure, LedgerError) else LedgerError(f"{type(failure).__name__}: {failure}")
                )
                if op.kind == "record":
                    problem = self._keep(op, exc)
                    with self._cond:
                        self._problems.append(problem)
                # A row in flight that cannot be written is the attempt's own row's problem.


def _coalesce(batch: list[Op]) -> list[Op]:
    """The batch without work that cancels out: the row in flight of an attempt whose own
    row is in the batch, and a row in flight forgotten in the same batch."""
    recorded = {op.key for op in batch if op.kind == "record"}
    forgotten = {op.key for op in batch if op.kind == "forget"}
    begun = {op.key for op in batch if op.kind == "begin"}
    out = []
    for op in batch:
        if op.kind == "begin" and (op.key in recorded or op.key in forgotten):
            continue
        if op.kind == "forget" and op.key in begun:
            continue
        out.append(op)
    return out


_live: weakref.WeakSet[Writer] = weakref.WeakSet()
#: The live writers per database (:func:`place_of`): any ledger object of this process
#: reading or writing the same database waits for them first.
live_places: dict[str, weakref.WeakSet[Writer]] = {}
_thread_state = threading.local()


def place_of(location: str) -> str:
    """The database a ledger location names, as a key: a SQLite file's real path, a URL."""
    return location if "://" in location else os.path.realpath(location)


def _must_not_wait() -> bool:
    """Waiting for a writer is wrong on a writer's own thread, and inside a write
    transaction of the calling thread (the writer would wait for the lock it holds)."""
    return bool(getattr(_thread_state, "writer", False) or getattr(_thread_state, "depth", 0))


def await_writers(place: str) -> None:
    """Wait for every writer of this process that writes to ``place`` (read your own
    writes, whichever ledger object wrote them)."""
    writers = live_places.get(place)
    if writers and not _must_not_wait():
        for writer in list(writers):
            writer.flush()


_turns: dict[str, threading.RLock] = {}
_turns_guard = threading.Lock()


def write_turns(place: str) -> threading.RLock:
    """The lock the write transactions of this process to ``place`` take turns on."""
    turns = _turns.get(place)
    if turns is None:
        with _turns_guard:
            turns = _turns.setdefault(place, threading.RLock())
    return turns


@contextmanager
def holding() -> Iterator[None]:
    """Mark the calling thread as inside a write transaction for the block."""
    _thread_state.depth = getattr(_thread_state, "depth", 0) + 1
    try:
        yield
    finally:
        _thread_state.depth -= 1


#: The write locks the forking thread holds across ``fork``.
_held_for_fork: list[threading.RLock] = []


def _before_fork() -> None:
    """No write transaction of this process may be open at ``fork``: SQLite's record of
    which connection holds the file's lock would come along into the child, and the
    child's own writes would wait for a lock that nobody there can release. So the
    forking thread takes every write lock first (a writer thread's batch finishes)."""
    for _, turns in sorted(_turns.items()):
        turns.acquire()
        _held_for_fork.append(turns)


def _after_fork_in_parent() -> None:
    while _held_for_fork:
        _held_for_fork.pop().release()


def _after_fork_in_child() -> None:
    """A forked child starts with no writer threads and possibly with locks held by
    threads that did not come along: every writer and lock starts afresh (the parent
    writes what it had queued)."""
    _held_for_fork.clear()
    _turns.clear()
    _after_fork[0] = True
    for writer in list(_live):
        writer._cond = threading.Condition(threading.Lock())
        writer._ops, writer._busy, writer._running, writer._hurry = [], False, False, 0
        writer._thread, writer._pid, writer._since, writer._urgent = None, os.getpid(), None, False
        writer._queued_begins = {}
        if writer._journal is not None:
            writer._journal.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child)


#: Set in a forked child until its first write registers :func:`_hook_exit`.
_after_fork = [False]


def _hook_exit() -> None:
    """In a process that ``multiprocessing`` forked, write what the writers hold when its
    work ends: such a child ends with ``os._exit``, which skips ``atexit``, so its rows would
    wait in its journal for the next open instead of landing before ``join()`` returns.
    (Registered here, at the child's first write: the child clears multiprocessing's
    finalizers after the fork handlers run.)"""
    _after_fork[0] = False
    mp = sys.modules.get("multiprocessing")
    if mp is None or mp.parent_process() is None:
        return
    from multiprocessing import util

    util.Finalize(None, _flush_all, exitpriority=10)


@atexit.register
def _flush_all() -> None:
    """At interpreter exit, write what every live writer still holds."""
    for writer in list(_live):
        with suppress(Exception):  # exit must go on; the rows in flight remain
            writer.close()
