"""What the SQLite and PostgreSQL ledgers share: row mapping, a small connection pool, the
writes (one transaction per attempt; triggers keep the rollups), export straight from the
cursor, and reports (:mod:`canny.ledger.rollups`, over :mod:`canny.ledger._report_sql`).
"""

# SQL here is assembled from column names and integers computed in this module; every
# value that comes from a caller is a bound parameter.
# ruff: noqa: S608

from __future__ import annotations

import json
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from canny.errors import LedgerError
from canny.ledger import migrations
from canny.ledger._report_sql import range_sql
from canny.ledger.migrations import BUDGET_LOCK, Dialect, Transaction
from canny.ledger.records import OUTCOMES, AttemptRecord, GroupTotals, ReportQuery, record_from_values
from canny.ledger.writer import Op, Writer, await_writers, holding, place_of, write_turns
from canny.ledger.writer import live_places as writer_places
from canny.units import from_us, to_us, usd_to_pico
from canny.usage import BUCKETS, usage_columns, usage_from_columns

__all__ = [
    "BUCKET_COLUMNS",
    "COLUMNS",
    "EXPORT_COLUMNS",
    "INFLIGHT_COLUMNS",
    "PROMPT_COLUMNS",
    "SQLLedger",
    "record_from_row",
    "sweep_inflight",
]

#: The usage bucket columns (``canny.usage.BUCKETS``), in order.
BUCKET_COLUMNS: tuple[str, ...] = tuple(b.column for b in BUCKETS)
#: The ``attempts`` columns written and read, in AttemptRecord order (``usage`` as its bucket columns).
COLUMNS: tuple[str, ...] = (
    "call_id", "attempt", "started_at_us", "ended_at_us", "model", "outcome", "session_id",
    "first_token_at_us", "status_code", "error_type", "error_code", "request_id", "stop_reason",
    "refusal_category", *BUCKET_COLUMNS, "cost_usd", "price_version", "batch", "inference_geo", "speed",
    "streamed", "endpoint", "project", "tags", "key_fingerprint", "prompt_hash", "prompt_text",
    "response_text", "extra", "max_tokens", "prefix_hashes", "cost_pico",
)  # fmt: skip
_SELECT = ", ".join(COLUMNS[:-1])
#: The ``attempts`` columns of :meth:`SQLLedger.export_bytes`: those of a record, in order.
EXPORT_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c != "cost_pico")
_INSERT = (
    f"INSERT INTO attempts ({', '.join(COLUMNS)}, call_seq) VALUES ({', '.join('?' * len(COLUMNS))}, "
    "(SELECT count(*) FROM attempts WHERE call_id = ?)) ON CONFLICT (call_id, attempt) DO NOTHING RETURNING id"
)

_FORGET = "DELETE FROM inflight WHERE call_id = ? AND attempt = ?"
_RECORDED = "SELECT 1 FROM attempts WHERE call_id = ? AND attempt = ?"

if TYPE_CHECKING:
    from canny.ledger.journal import Journal

C = TypeVar("C")


class Pool(Generic[C]):
    """Connections handed out one per transaction or scan and kept for reuse.

    A connection that saw an exception is closed, not reused. After ``fork`` the child
    drops (without closing) what it inherited and opens its own.
    """

    def __init__(self, connect: Callable[[], C], close: Callable[[C], None], max_idle: int = 4) -> None:
        self._connect = connect
        self._close = close
        self._max_idle = max_idle
        self._idle: list[C] = []
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    @contextmanager
    def connection(self) -> Iterator[C]:
        with self._lock:
            if self._closed:
                raise LedgerError("the ledger is closed")
            if self._pid != os.getpid():
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            self._close(conn)
            raise
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle and self._pid == os.getpid():
                self._idle.append(conn)
                return
        self._close(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle, self._closed = self._idle, [], True
        for conn in idle:
            self._close(conn)


class SQLLedger(ABC):
    """The ledger logic over a DB-API connection; subclasses supply connections and errors."""

    dialect: Dialect
    location: str

    @abstractmethod
    def transaction(self, *, write: bool = True) -> AbstractContextManager[Transaction]:
        """One transaction on a pooled connection (see :class:`migrations.Transaction`)."""

    @abstractmethod
    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        """Rows of one query, fetched in batches, on a connection of its own."""

    @abstractmethod
    def _write_one(self, sql: str, params: Sequence[Any]) -> None:
        """Run one write statement on its own (atomic by itself: one round trip, no
        explicit ``BEGIN``/``COMMIT``)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""

    def __enter__(self) -> SQLLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"

    def migrate(self) -> list[str]:
        """Apply registered migrations this database lacks; return their names."""
        return migrations.migrate(self)

    def applied_migrations(self) -> list[str]:
        """Names of the migrations applied to this database, oldest first."""
        return migrations.applied(self)

    def sweep_on_open(self) -> None:
        """Record the attempts whose lease ended as ``lost`` (a failure here is left for the
        next open: the rows in flight stay where they are)."""
        with suppress(LedgerError):
            self.sweep_lost()

    def record(self, record: AttemptRecord) -> None:
        """Store one attempt in one short transaction, which also drops the attempt's row in
        flight. Writing the same ``(call_id, attempt)`` again is a no-op, so a retried write
        cannot double a row; only a ``lost`` row (the attempt's lease ended while its process
        still ran) gives way to the real one. With a writer (:meth:`write_behind`) the row
        is queued and written on the writer's thread."""
        _check(record)
        writer = self._writer
        if writer is not None:
            # Only the column values wait in the queue (and the journal): no objects that the
            # garbage collector would have to walk while a group waits.
            writer.put(Op("record", key=(record.call_id, record.attempt), params=_row_params(record)))
            return
        with self.transaction() as tx:
            _store(tx, record)

    def record_all(self, records: Sequence[AttemptRecord], *, in_flight: Sequence[Sequence[Any]] = ()) -> None:
        """Store attempts as :meth:`record` does, without a writer, after the rows in flight
        ``in_flight`` (``inflight`` column values; one already there, or whose attempt has
        its row, is skipped): what a journal held (:mod:`canny.ledger.journal`). On SQLite
        in one transaction, on PostgreSQL one each (rows of several transactions lock
        rollup rows in crossed order)."""
        for record in records:
            _check(record)
        self._await_writes()
        with self.transaction() as tx:
            for values in in_flight:
                if not tx.execute(_RECORDED, (values[0], values[1])):
                    tx.execute(_INFLIGHT_INSERT, values)
            if self.dialect == "sqlite":
                for record in records:
                    _store(tx, record)
        if self.dialect != "sqlite":
            for record in records:
                with self.transaction() as tx:
                    _store(tx, record)

    def begin_attempt(self, record: AttemptRecord, *, lease_until: datetime, reservation_id: int | None = None) -> None:
        """Keep the provisional row of an attempt in flight (see
        :class:`canny.ledger.InflightLedger`): one statement, atomic on its own."""
        key = (record.call_id, record.attempt)
        self.begin_attempt_later(lambda: record, key, lease_until=lease_until, reservation_id=reservation_id)

    def begin_attempt_later(
        self,
        build: Callable[[], AttemptRecord],
        key: tuple[str, int],
        *,
        lease_until: datetime,
        reservation_id: int | None = None,
    ) -> None:
        """:meth:`begin_attempt` for the row ``build()`` returns, built only if it is written:
        with a writer, on the writer's thread, and not at all when the attempt's own row
        (``key``: call id and attempt) reaches the writer in the same batch. Where attempts
        take longer (a remote API) and rows are journaled, it is built now and journaled,
        and waits for the group like a finished attempt's row."""
        writer = self._writer
        if writer is not None:
            if writer.journals_begins():
                try:
                    params = _inflight_params(build(), lease_until, reservation_id)
                except Exception:  # a row in flight that cannot be built is skipped; its attempt's row is not
                    return
                writer.put(Op("begin", None, key, lease_until, reservation_id, params=params))
                return
            writer.put(Op("begin", None, key, lease_until, reservation_id, build))
            return
        self._write_one(_INFLIGHT_INSERT, _inflight_params(build(), lease_until, reservation_id))

    def forget_attempt(self, call_id: str, attempt: int) -> None:
        """Drop the provisional row of an attempt that was never sent after all."""
        if self._writer is not None:
            self._writer.put(Op("forget", key=(call_id, attempt), params=(call_id, attempt)))
            return
        self._write_one(_FORGET, (call_id, attempt))

    # -- writing behind the call (canny.ledger.writer) -------------------------------------
    _writer: Writer | None = None

    def write_behind(
        self, keep: Callable[[AttemptRecord, LedgerError], str], *, journal: Journal | None = None
    ) -> None:
        """From now on, write attempts' rows on a thread of their own (:mod:`canny.ledger.writer`);
        reads and ``close()`` wait for what is queued. ``keep`` takes a row the ledger
        refused (it spools it) and returns the warning to show. With a ``journal``
        (:mod:`canny.ledger.journal`) the rows of finished attempts are committed in groups."""
        if self._writer is None:
            self._writer = Writer(self, _apply, lambda op, exc: keep(_op_record(op), exc), journal)

    @property
    def writes_behind(self) -> bool:
        """Whether rows are written behind the call (:meth:`write_behind`): the ledger of a
        client or meter, unless ``CANNY_LEDGER_WRITES=sync``. Budgets on SQLite then settle
        in memory from slices of headroom (:mod:`canny.budget.slices`)."""
        return self._writer is not None

    _close_hooks: list[Callable[[], None]] | None = None

    def on_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` when the ledger closes, after the writer wrote what it held and
        before the connections close (budget slices give back what they hold there:
        :mod:`canny.budget.slices`); a :class:`LedgerError` in it is ignored."""
        if self._close_hooks is None:
            self._close_hooks = []
        self._close_hooks.append(hook)

    def _stop(self) -> None:
        """The first part of ``close()``: write what the writer holds, then run the close hooks."""
        self._stop_writer()
        hooks, self._close_hooks = self._close_hooks or [], None
        for hook in hooks:
            with suppress(LedgerError):
                hook()

    def defer(self, work: Callable[[], object]) -> None:
        """Run ``work`` after the rows queued so far are written: on the writer's thread
        when there is one (a budget reservation's settle), else now."""
        if self._writer is not None:
            self._writer.put(Op("call", run=work))
            return
        work()

    def settles_waiting(self) -> bool:
        """Whether work queued with :meth:`defer` (a budget settle) waits on the writer."""
        return self._writer is not None and self._writer.calls_waiting()

    def flush(self) -> None:
        """Wait until every row queued for the writer is written (or spooled)."""
        if self._writer is not None:
            self._writer.flush()

    def _await_writes(self) -> None:
        """Called first by every read and write of the ledger: read this process's own
        writes, whichever ledger object of the same database queued them."""
        if writer_places:
            await_writers(self._where())

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """Before a read transaction: read your own writes."""
        self._await_writes()
        yield

    @contextmanager
    def _holding(self) -> Iterator[None]:
        """Around a write transaction. It does not wait for the writer: a write transaction
        reads no rows of attempts that the writer may still hold (budget counters count
        reservations until they are settled, and a settle is queued after its row). On
        SQLite, the writes of this process to one file take turns on a lock, not on
        SQLite's busy sleeps; nothing inside the block waits for a writer."""
        turns = write_turns(self._where()) if self.dialect == "sqlite" else None
        if turns is None:
            with holding():
                yield
            return
        with turns, holding():
            yield

    def _where(self) -> str:
        place: str | None = self.__dict__.get("_place")
        if place is None:
            place = self.__dict__["_place"] = place_of(self.location)
        return place

    def _stop_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()

    def in_flight(self) -> list[AttemptRecord]:
        """The attempts in flight, oldest first, as the ``lost`` rows they would become."""
        sql = f"SELECT {_INFLIGHT_SELECT} FROM inflight ORDER BY started_at_us, id"
        return [_lost_from_row(row, None)[0] for row in self._stream(sql, ())]

    def sweep_lost(self, *, now: datetime | None = None, everything: bool = False) -> int:
        """Record the attempts in flight whose lease ended before ``now`` (all of them with
        ``everything``) as ``lost`` rows and settle their reservations; return how many.
        Costs one indexed read when there is nothing to do."""
        now_us = to_us(now or datetime.now(UTC))
        due = "SELECT 1 FROM inflight" + ("" if everything else " WHERE lease_until_us < ?") + " LIMIT 1"
        if not list(self._stream(due, () if everything else (now_us,))):
            return 0
        with self.transaction() as tx:
            if tx.dialect == "postgres":
                # Budget transactions sweep too: take their lock first, as they do.
                tx.execute("SELECT pg_advisory_xact_lock(?)", (BUDGET_LOCK,))
            return sweep_inflight(tx, now_us, everything=everything)

    def sweep_lost_in(self, tx: Transaction, now_us: int, *, everything: bool = False) -> int:
        """:meth:`sweep_lost` inside the caller's transaction (a budget transaction, which
        holds the budget lock); return how many attempts were lost."""
        return sweep_inflight(tx, now_us, everything=everything)

    def record_many(self, records: Iterable[AttemptRecord], *, batch: int = 5000) -> None:
        """Store many attempts (an import, a benchmark), ``batch`` rows per transaction.
        As with :meth:`record`, attempts already stored are skipped."""
        chunk: list[AttemptRecord] = []
        for record in records:
            _check(record)
            chunk.append(record)
            if len(chunk) >= batch:
                self._insert_many(chunk)
                chunk = []
        if chunk:
            self._insert_many(chunk)

    def _insert_many(self, chunk: Sequence[AttemptRecord]) -> None:
        insert = _INSERT.removesuffix(" RETURNING id")
        tags = [(tag, r.call_id, r.attempt) for r in chunk for tag in dict.fromkeys(r.tags)]
        with self.transaction() as tx:
            tx.executemany(insert, [(*_row_params(r), r.call_id) for r in chunk])
            tx.executemany(
                "INSERT INTO attempt_tags (tag, attempt_id) SELECT ?, id FROM attempts "
                "WHERE call_id = ? AND attempt = ? ON CONFLICT DO NOTHING",
                tags,
            )

    def records(self, *, since: datetime | None = None, until: datetime | None = None) -> Iterator[AttemptRecord]:
        """Attempts started in ``[since, until)``, oldest first, exactly as recorded."""
        where, params = range_sql(_opt_us(since), _opt_us(until))
        sql = f"SELECT {_SELECT} FROM attempts{where} ORDER BY started_at_us, id"
        for row in self._stream(sql, params):
            yield record_from_row(row)

    def tail(self, limit: int, *, after: int | None = None) -> list[tuple[int, AttemptRecord]]:
        """(row id, attempt) in the order written: the last ``limit``, or the first ``limit``
        written after row id ``after`` (``canny logs --follow``)."""
        if after is None:
            sql = f"SELECT * FROM (SELECT id, {_SELECT} FROM attempts ORDER BY id DESC LIMIT ?) AS t ORDER BY id"
            params: list[int] = [limit]
        else:
            sql, params = f"SELECT id, {_SELECT} FROM attempts WHERE id > ? ORDER BY id LIMIT ?", [after, limit]
        return [(int(row[0]), record_from_row(row[1:])) for row in self._stream(sql, params)]

    def export_bytes(
        self,
        fmt: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        include_text: bool = False,
    ) -> Iterator[bytes]:
        """The export of the attempts started in ``[since, until)``, oldest first, as UTF-8
        chunks of whole lines: ``jsonl`` or ``csv`` (see :func:`canny.reports.export_text`).
        The database builds each line (:mod:`canny.ledger._export_sql`); Python only
        hands the bytes on."""
        from canny.ledger import _export_sql

        names = _export_sql.export_columns(EXPORT_COLUMNS, include_text=include_text)
        line = _export_sql.line_sql(self.dialect, fmt, names)
        head = _export_sql.csv_header(names) if fmt == "csv" else b""
        where, params = range_sql(_opt_us(since), _opt_us(until))
        return self._export_lines(head, line, where.removeprefix(" WHERE "), params, text=include_text)

    @abstractmethod
    def _export_lines(
        self, head: bytes, line: str, where: str, params: Sequence[Any], *, text: bool
    ) -> Iterator[bytes]:
        """``head``, then SQL ``line`` of each attempt matching ``where`` (with ``params``;
        ``""``: every attempt) in export order, each line ending in a line break, as chunks
        of bytes (``text``: lines that hold stored prompts, so possibly long)."""

    def aggregate(self, query: ReportQuery) -> tuple[list[GroupTotals], GroupTotals]:
        """Totals per group and overall (see :class:`ReportingLedger`), summed from the
        rollup tables where they answer exactly and from rows elsewhere
        (:mod:`canny.ledger.rollups`); ``calls=False``: distinct calls not counted (0)."""
        from canny.ledger import rollups

        return rollups.aggregate(
            self._stream,
            self.dialect,
            query.by,
            since_us=_opt_us(query.since),
            until_us=_opt_us(query.until),
            tz=query.tz,
            savings=query.savings,
            then=query.then,
            filters=query.filters,
            calls=query.calls,
        )


def _store(tx: Transaction, record: AttemptRecord) -> None:
    """Insert one attempt (and its tags) in ``tx``, dropping its row in flight."""
    _store_values(tx, _row_params(record))


_CALL_ID, _ATTEMPT, _OUTCOME, _TAGS = (COLUMNS.index(name) for name in ("call_id", "attempt", "outcome", "tags"))


def _store_values(tx: Transaction, values: Sequence[Any]) -> None:
    """:func:`_store` for the row's column values (:data:`COLUMNS` order, as the writer
    queues them: a queued row holds no objects but these)."""
    call_id, attempt = values[_CALL_ID], values[_ATTEMPT]
    params = (*values, call_id)
    tx.execute(_FORGET, (call_id, attempt))
    inserted = tx.execute(_INSERT, params)
    if not inserted and values[_OUTCOME] != "lost":
        # Swept as lost while its process still ran (a lease too short): the real row wins.
        lost = "DELETE FROM attempts WHERE call_id = ? AND attempt = ? AND outcome = 'lost' RETURNING id"
        if tx.execute(lost, (call_id, attempt)):
            inserted = tx.execute(_INSERT, params)
    tags = json.loads(values[_TAGS]) if inserted and values[_TAGS] != "[]" else ()
    if tags:
        attempt_id = inserted[0][0]
        for tag in dict.fromkeys(tags):
            tx.execute(
                "INSERT INTO attempt_tags (tag, attempt_id) VALUES (?, ?) ON CONFLICT DO NOTHING", (tag, attempt_id)
            )


#: The bucket columns an attempt in flight keeps: the input side, known from ``message_start``.
PROMPT_COLUMNS: tuple[str, ...] = tuple(b.column for b in BUCKETS if b.kind == "prompt")
_prompt_counts = itemgetter(*PROMPT_COLUMNS)
#: The ``inflight`` columns written and read (migration ``ledger.0004_inflight``).
INFLIGHT_COLUMNS: tuple[str, ...] = (
    "call_id", "attempt", "session_id", "started_at_us", "lease_until_us", "model", "request_id",
    *PROMPT_COLUMNS, "cost_usd",
    "price_version", "inference_geo", "speed", "streamed", "endpoint", "project", "tags", "key_fingerprint",
    "prompt_hash", "extra", "max_tokens", "prefix_hashes", "reservation_id",
)  # fmt: skip
_INFLIGHT_SELECT = ", ".join(INFLIGHT_COLUMNS)
_INFLIGHT_INSERT = (
    f"INSERT INTO inflight ({_INFLIGHT_SELECT}) VALUES ({', '.join('?' * len(INFLIGHT_COLUMNS))}) "
    "ON CONFLICT (call_id, attempt) DO NOTHING"
)


def _inflight_params(r: AttemptRecord, lease_until: datetime, reservation_id: int | None) -> tuple[Any, ...]:
    cost = r.cost_usd
    return (
        r.call_id, r.attempt, r.session_id, to_us(r.started_at), to_us(lease_until), r.model, r.request_id,
        *_prompt_counts(usage_columns(r.usage)),
        None if cost is None else format(cost, "f"), r.price_version, r.inference_geo, r.speed, bool(r.streamed),
        r.endpoint, r.project, _tags_json(r.tags), r.key_fingerprint, r.prompt_hash,
        _extra_json(r.extra), r.max_tokens, r.prefix_hashes, reservation_id,
    )  # fmt: skip


def _lost_from_row(row: Sequence[Any], now_us: int | None) -> tuple[AttemptRecord, int | None]:
    """The ``lost`` row of an ``inflight`` row, ended at its lease end (or at ``now_us`` if
    that is earlier: a reset), and the row's reservation id."""
    values = dict(zip(INFLIGHT_COLUMNS, row, strict=True))
    lease_us = int(values["lease_until_us"])
    ended_us = lease_us if now_us is None else min(lease_us, now_us)
    streamed = bool(values["streamed"])
    cost = values["cost_usd"]
    extra = dict(json.loads(values["extra"] or "{}"))
    extra["lost"] = "the process ended before the attempt's row was written; input usage as reported when it began"
    record = AttemptRecord(
        call_id=values["call_id"],
        attempt=int(values["attempt"]),
        started_at=from_us(int(values["started_at_us"])),
        ended_at=from_us(max(ended_us, int(values["started_at_us"]))),
        model=values["model"],
        outcome="lost",
        session_id=values["session_id"],
        status_code=200 if streamed else None,  # a stream in flight had its 200 and message_start
        request_id=values["request_id"],
        cost_usd=None if cost is None else Decimal(cost),
        price_version=values["price_version"],
        inference_geo=values["inference_geo"],
        speed=values["speed"],
        streamed=streamed,
        endpoint=values["endpoint"],
        project=values["project"],
        tags=tuple(json.loads(values["tags"] or "[]")),
        key_fingerprint=values["key_fingerprint"],
        prompt_hash=values["prompt_hash"],
        extra=extra,
        max_tokens=values["max_tokens"],
        prefix_hashes=values["prefix_hashes"],
        usage=usage_from_columns({column: int(values[column]) for column in PROMPT_COLUMNS}),
    )
    rid = values["reservation_id"]
    return record, None if rid is None else int(rid)


def sweep_inflight(tx: Transaction, now_us: int, *, everything: bool = False) -> int:
    """In ``tx``: turn the attempts in flight whose lease ended before ``now_us`` (every one
    with ``everything``, ended now) into ``lost`` rows, and end their calls' budget
    reservations charging what the ledger now holds for each call
    (:func:`canny.ledger.budget_tables.charge_lost`). On PostgreSQL the caller holds the budget
    lock. Returns how many attempts were lost."""
    where, params = ("", ()) if everything else (" WHERE lease_until_us < ?", (now_us,))
    rows = tx.execute(f"DELETE FROM inflight{where} RETURNING {_INFLIGHT_SELECT}", params)
    lost = sorted((_lost_from_row(row, now_us) for row in rows), key=lambda x: (x[0].started_at, x[0].attempt))
    reservations: dict[int, str] = {}
    for record, rid in lost:
        _store(tx, record)
        if rid is not None:
            reservations[rid] = record.call_id
    if reservations:
        from canny.ledger.budget_tables import charge_lost

        for rid, call_id in reservations.items():
            charge_lost(tx, rid, call_id)
    return len(lost)


def _op_record(op: Op) -> AttemptRecord:
    """The record of a queued row (for the spool, when the ledger refuses it)."""
    if op.record is not None:
        return op.record
    assert op.params is not None
    return record_from_row(op.params)


def op_values(op: Op) -> Sequence[Any] | None:
    """The column values a queued operation of the writer writes: an attempt's row
    (:data:`COLUMNS`), a row in flight (:data:`INFLIGHT_COLUMNS`, built now if it was
    queued unbuilt) or the key of a row in flight to drop; ``None`` for a row in flight
    that cannot be built (it is skipped; its attempt's row is not)."""
    if op.kind == "record":
        return op.params if op.params is not None else _row_params(_op_record(op))
    if op.kind == "begin":
        if op.params is not None:
            return op.params
        assert op.build is not None
        assert op.lease_until is not None
        try:
            record = op.build()
        except Exception:  # a row in flight that cannot be built is skipped; its attempt's row is not
            return None
        return _inflight_params(record, op.lease_until, op.reservation_id)
    return op.key


def _apply(tx: Transaction, op: Op) -> None:
    """Write one queued operation of the writer in ``tx``."""
    values = op_values(op)
    if values is None:
        return
    if op.kind == "record":
        _store_values(tx, values)
    elif op.kind == "begin":
        tx.execute(_INFLIGHT_INSERT, values)
    else:
        tx.execute(_FORGET, values)


def _check(record: AttemptRecord) -> None:
    if record.outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {record.outcome!r}; expected one of {', '.join(OUTCOMES)}")


def _opt_us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def _tags_json(tags: tuple[str, ...]) -> str:
    """The stored form of an attempt's tags (most have none)."""
    return json.dumps(list(tags), ensure_ascii=False) if tags else "[]"


def _extra_json(extra: dict[str, str]) -> str:
    """The stored form of an attempt's notes (most have none)."""
    return json.dumps(extra, ensure_ascii=False, sort_keys=True) if extra else "{}"


def _row_params(r: AttemptRecord) -> tuple[Any, ...]:
    cost = r.cost_usd
    return (
        r.call_id, r.attempt, to_us(r.started_at), to_us(r.ended_at), r.model, r.outcome, r.session_id,
        _opt_us(r.first_token_at), r.status_code, r.error_type, r.error_code, r.request_id, r.stop_reason,
        r.refusal_category, *usage_columns(r.usage).values(),
        None if cost is None else format(cost, "f"), r.price_version, bool(r.batch),
        r.inference_geo, r.speed, bool(r.streamed), r.endpoint, r.project,
        _tags_json(r.tags), r.key_fingerprint, r.prompt_hash, r.prompt_text,
        r.response_text, _extra_json(r.extra), r.max_tokens, r.prefix_hashes,
        None if cost is None else usd_to_pico(cost),
    )  # fmt: skip


def record_from_row(row: Sequence[Any]) -> AttemptRecord:
    """The record of a row of ``attempts`` read in :data:`COLUMNS` order (``cost_pico``,
    last, may be left off)."""
    values = dict(zip(COLUMNS, row, strict=False))
    values.pop("cost_pico", None)
    first = values.pop("first_token_at_us")
    cost = values.pop("cost_usd")
    values.update(
        started_at=from_us(values.pop("started_at_us")),
        ended_at=from_us(values.pop("ended_at_us")),
        first_token_at=None if first is None else from_us(first),
        cost_usd=None if cost is None else Decimal(cost),
        batch=bool(values["batch"]),
        streamed=bool(values["streamed"]),
        tags=tuple(json.loads(values["tags"] or "[]")),
        extra=dict(json.loads(values["extra"] or "{}")),
    )
    return record_from_values(values)
