"""Message Batches at half price, on the books: ``client.batches`` and ``canny batch``.

::

    batch = client.batches.create(
        {"custom_id": f"doc-{i}", "params": {"max_tokens": 500, "messages": [...]}} for i in ...
    )
    batch = client.batches.wait(batch.id)           # or .retrieve(batch.id) now and then
    for item in client.batches.results(batch.id):   # one ledger row each, as it is read
        print(item.custom_id, item.call.outcome, item.call.cost)

``create`` fills each request's ``model`` and ``max_tokens`` from the client's settings
when the request leaves them out (aliases resolve), then reserves the whole batch's worst
case against every budget in scope, at batch prices, before anything is sent: one
reservation per request, all or none (a budget that would have to lower a request's
``max_tokens`` refuses the batch instead: it is a ``budget_refused`` row and
:class:`~canny.errors.BudgetExceeded`). The reservations' leases last
:data:`BATCH_LEASE` (a batch may take 24 hours).

``results`` reads the results and turns each into one ledger row (``batch = true``, priced
at the batch rates, half the standard ones) and settles that request's reservation with its
cost. Rows are written once: a result whose row is already in the ledger (a second
``results`` run) is returned with ``recorded = False`` and neither written nor settled again.

What ``create`` held is written to ``<data dir>/batches/<id>.json`` (ids, models, prompt
hashes, reservation ids: never the prompts), so ``results`` in another process settles the
same reservations. Where that file is missing (another machine), rows are still written
once, and each reservation ends with its lease, charged what the ledger holds for its call.
Two ``results`` runs of one batch at the same moment may both write a result's row once
but settle it twice: run one at a time.

Offline (``Client(offline=True)``, ``canny batch --offline``), the embedded emulator lives
only as long as its process, so ``create`` also keeps the ended batch and its results in
that file; ``retrieve`` and ``results`` offline read them from there.
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canny import errors
from canny._call import Attempt, CallRun, CallSpec
from canny._sdk_errors import error_from_event, translate
from canny.errors import CannyWarning

if TYPE_CHECKING:
    from canny.books import Books
    from canny.budget import Reservation
    from canny.ledger import Ledger
    from canny.result import CallResult, Outcome

__all__ = ["BATCH_LEASE", "Batch", "BatchBook", "BatchResult", "Batches", "state_path"]

#: Seconds a batch's reservations live: the API's 24 hours of processing, and an hour more.
BATCH_LEASE = 25 * 3600.0
_NAMESPACE = uuid.UUID("6f1d0c4e-2b8a-4f4e-9c1e-ba7c4e5a0b01")


@dataclass(frozen=True, slots=True)
class Batch:
    """A Message Batch as the API describes it."""

    id: str
    processing_status: str
    request_counts: dict[str, int]
    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: Any) -> Batch:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise errors.ServerError("the API sent a Message Batch without an id")
        counts = data.get("request_counts")
        return cls(
            id=data["id"],
            processing_status=str(data.get("processing_status")),
            request_counts={str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {},
            raw=data,
        )

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"

    @property
    def total(self) -> int:
        """How many requests the batch holds."""
        return sum(self.request_counts.values())


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One request's result: the API's line and the call it became on the books."""

    custom_id: str
    type: str
    call: CallResult
    line: dict[str, Any]
    #: ``True`` when its row was written now; ``False`` when an earlier run wrote it
    #: (nothing written or settled now), or there is no ledger (``ledger=False``).
    recorded: bool

    def to_json(self) -> dict[str, Any]:
        """The API's line with a ``canny`` object: outcome, cost (an exact decimal string), call id."""
        from canny.reports import plain_decimal

        cost = self.call.cost
        extra = {
            "outcome": self.call.outcome,
            "cost_usd": None if cost is None else plain_decimal(cost),
            "call_id": self.call.call_id,
            "recorded": self.recorded,
        }
        return {**self.line, "canny": extra}


def state_path(batch_id: str) -> Path:
    """Where what ``create`` held for ``batch_id`` is kept."""
    from canny.config import data_dir

    if not batch_id or not all(c.isalnum() or c in "_-" for c in batch_id):
        raise errors.ConfigError(f"{batch_id!r} is not a Message Batch id")
    return data_dir() / "batches" / f"{batch_id}.json"


@dataclass
class _State:
    """What a batch's ``create`` left for its ``results``."""

    batch_id: str
    ledger: str | None = None
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    snapshot: dict[str, Any] | None = None

    @classmethod
    def load(cls, batch_id: str) -> _State:
        path = state_path(batch_id)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(batch_id)
        except (OSError, ValueError) as exc:
            raise errors.ConfigError(f"cannot read {path}: {exc}") from None
        return cls(batch_id, data.get("ledger"), data.get("requests") or {}, data.get("snapshot"))

    def save(self) -> None:
        path = state_path(self.batch_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"id": self.batch_id, "ledger": self.ledger, "requests": self.requests, "snapshot": self.snapshot}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)


class _Stored:
    """A reservation held by another process, settled through the budget tables."""

    def __init__(self, ledger: Ledger, held: list[list[Any]], max_tokens: int) -> None:
        self._ledger = ledger
        self._held = held
        self.max_tokens = max_tokens

    def settle(self, cost: Decimal | None) -> None:
        from canny.budget import store
        from canny.budget.limits import as_ledger
        from canny.units import usd_to_pico

        db = as_ledger(self._ledger)
        for rid, counters, amount in self._held:
            store.settle(
                db, int(rid), [int(c) for c in counters], int(amount), None if cost is None else usd_to_pico(cost)
            )

    def release(self) -> None:
        from canny.budget import store
        from canny.budget.limits import as_ledger

        for rid, _, _ in self._held:
            store.release(as_ledger(self._ledger), int(rid))

    def renew(self, seconds: float | None = None) -> bool:
        return False


def _ledger_holds(reservation: Reservation) -> list[list[Any]]:
    """``[id, counters, pico]`` of each reservation kept in the ledger's budget tables."""
    from canny.units import usd_to_pico

    held = []
    for r in getattr(reservation, "reservations", (reservation,)):
        rid, counters, amount = getattr(r, "id", None), getattr(r, "counter_ids", None), getattr(r, "amount", None)
        if isinstance(rid, int) and isinstance(counters, list) and isinstance(amount, Decimal):
            held.append([rid, counters, usd_to_pico(amount)])
    return held


def _already_recorded(ledger: Ledger, call_id: str) -> bool:
    transaction = getattr(ledger, "transaction", None)
    if transaction is None:
        return any(r.call_id == call_id for r in ledger.records())
    with transaction(write=False) as tx:
        return bool(tx.execute("SELECT 1 FROM attempts WHERE call_id = ? LIMIT 1", [call_id]))


class BatchBook:
    """What both clients' batches do around the HTTP calls: requests to specs, the
    all-or-none reservation, the state file, and each result's row and settlement."""

    def __init__(
        self,
        books: Books,
        *,
        spec_for: Callable[[Mapping[str, Any]], CallSpec],
        reserve: Callable[[CallSpec], Reservation | None],
        offline: bool,
    ) -> None:
        self.books = books
        self._spec_for = spec_for
        self._reserve = reserve
        self.offline = offline
        #: Same-process memory: the full spec and reservation of each call_id created here.
        self._specs: dict[str, CallSpec] = {}
        self._held: dict[str, Reservation] = {}

    # -- create ------------------------------------------------------------------------
    def prepare(self, requests: Iterable[Mapping[str, Any]]) -> list[tuple[str, CallSpec, Reservation | None]]:
        """Each request's spec, every one reserved (all or none)."""
        specs: list[tuple[str, CallSpec]] = []
        for i, item in enumerate(requests, 1):
            if not isinstance(item, Mapping) or not isinstance(item.get("custom_id"), str):
                raise errors.ConfigError(f"request {i}: expected {{'custom_id': str, 'params': {{...}}}}")
            params = item.get("params")
            if not isinstance(params, Mapping) or not isinstance(params.get("messages"), list):
                raise errors.ConfigError(f"request {i} ({item['custom_id']}): params.messages must be a list")
            spec = self._spec_for(params)
            spec.batch = True
            specs.append((item["custom_id"], spec))
        if not specs:
            raise errors.ConfigError("a batch needs at least one request")
        held: list[tuple[str, CallSpec, Reservation | None]] = []
        try:
            for custom_id, spec in specs:
                held.append((custom_id, spec, self._reserve_whole(spec, specs)))
        except BaseException:
            for _, _, reservation in held:
                if reservation is not None:
                    reservation.release()
            raise
        for _, _, reservation in held:
            if reservation is not None:
                reservation.renew(BATCH_LEASE)
        return held

    def _reserve_whole(self, spec: CallSpec, batch: list[tuple[str, CallSpec]]) -> Reservation | None:
        requested = spec.max_tokens
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="max_tokens lowered", category=CannyWarning)
            reservation = self._reserve(spec)
        if spec.max_tokens >= requested:
            return reservation
        if reservation is not None:
            reservation.release()
        worst = [s.worst_case(s.max_tokens if s is not spec else requested) for _, s in batch]
        total = sum((w for w in worst if w is not None), Decimal(0))
        error = errors.BudgetExceeded(
            f"the batch could cost up to ${total} at batch prices, more than its budgets hold now",
            budget="batch",
            needed=total,
            hint="split the batch, lower its max_tokens, or raise the budget",
        )
        ledger = self.books.ledger
        if ledger is not None:
            self.books.refused(spec, error, ledger)
        raise error

    def created(self, batch: Batch, held: list[tuple[str, CallSpec, Reservation | None]]) -> None:
        """Keep what ``prepare`` held under the batch's id."""
        ledger = self.books.ledger
        state = _State(batch.id, ledger.location if ledger is not None else None)
        for custom_id, spec, reservation in held:
            self._specs[spec.call_id] = spec
            if reservation is not None:
                self._held[spec.call_id] = reservation
            state.requests[custom_id] = {
                "call_id": spec.call_id,
                "model": spec.model,
                "max_tokens": spec.max_tokens,
                "prompt_sha256": spec.prompt_hash,
                "project": spec.project,
                "tags": list(spec.tags),
                "endpoint": spec.endpoint,
                "key_fingerprint": spec.key_fingerprint,
                "reservations": _ledger_holds(reservation) if reservation is not None else [],
            }
        state.save()

    def keep_snapshot(self, batch: Batch, lines: list[dict[str, Any]]) -> None:
        """Offline: keep the ended batch and its results, for later processes."""
        state = _State.load(batch.id)
        state.snapshot = {"batch": batch.raw, "results": lines}
        state.save()

    def snapshot(self, batch_id: str) -> tuple[Batch, list[dict[str, Any]]] | None:
        """Offline: the batch and results ``keep_snapshot`` kept, if any."""
        if not self.offline:
            return None
        snap = _State.load(batch_id).snapshot
        if snap is None:
            raise errors.RequestRejected(
                f"no offline batch {batch_id} here: offline batches are kept in this CANNY_HOME only",
                status_code=404,
                error_type="not_found_error",
            )
        return Batch.from_json(snap["batch"]), list(snap["results"])

    # -- results -----------------------------------------------------------------------
    def record_all(self, batch_id: str, lines: Iterable[Any]) -> Iterator[BatchResult]:
        """Each result line as a :class:`BatchResult`, its row written (once) and its
        reservation settled."""
        state = _State.load(batch_id)
        for line in lines:
            yield self.record(state, line)

    def record(self, state: _State, line: Any) -> BatchResult:
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise errors.ServerError("the API sent a batch result without a custom_id")
        custom_id, result = line["custom_id"], line.get("result")
        kind = str(result.get("type")) if isinstance(result, dict) else "errored"
        info = state.requests.get(custom_id, {})
        call_id = info.get("call_id") or uuid.uuid5(_NAMESPACE, f"{state.batch_id}/{custom_id}").hex
        message = result.get("message") if isinstance(result, dict) and kind == "succeeded" else None
        spec = self._specs.get(call_id) or self._stub_spec(call_id, info, message)
        ledger = self.books.ledger
        fresh = ledger is None or not _already_recorded(ledger, call_id)
        run = CallRun(
            spec,
            ledger=ledger if fresh else None,
            reservation=self._reservation(state, call_id, info) if fresh else None,
        )
        attempt = Attempt(number=1, started_at=datetime.now(UTC))
        run.attempts.append(attempt)
        if isinstance(message, dict):
            attempt.body(json.dumps(message).encode())
            call = run.succeeded(attempt)
        else:
            outcome: Outcome = "cancelled" if kind == "canceled" else "error"
            run.record(attempt, outcome, _result_error(kind, result))
            call = run.result(attempt)
        return BatchResult(custom_id, kind, call, line, fresh and ledger is not None)

    def _stub_spec(self, call_id: str, info: Mapping[str, Any], message: Any) -> CallSpec:
        model = info.get("model") or (message.get("model") if isinstance(message, dict) else None) or "unknown"
        return CallSpec(
            model=str(model),
            params={"model": model, "max_tokens": int(info.get("max_tokens") or 0)},
            stream=False,
            project=info.get("project"),
            tags=tuple(info.get("tags") or ()),
            endpoint=info.get("endpoint"),
            key_fingerprint=info.get("key_fingerprint"),
            call_id=call_id,
            batch=True,
            prompt_sha256=info.get("prompt_sha256"),
        )

    def _reservation(self, state: _State, call_id: str, info: Mapping[str, Any]) -> Reservation | None:
        held = self._held.pop(call_id, None)
        if held is not None:
            return held
        ledger = self.books.ledger
        stored = info.get("reservations")
        if ledger is None or not stored or state.ledger != ledger.location:
            return None  # another ledger's reservations: their leases end them
        return _Stored(ledger, list(stored), int(info.get("max_tokens") or 0))


def _result_error(kind: str, result: Any) -> errors.APIError:
    if kind == "errored" and isinstance(result, dict) and isinstance(result.get("error"), dict):
        return error_from_event(result["error"], None)
    return errors.APIError(f"the batch request was {kind}", error_type=kind)


class Batches:
    """``client.batches``: create, retrieve, wait, results and cancel (synchronous)."""

    def __init__(self, book: BatchBook, sdk: Callable[[], Any], *, timeout: Any = None) -> None:
        self.book = book
        self._sdk = sdk
        self._timeout = timeout

    def create(self, requests: Iterable[Mapping[str, Any]]) -> Batch:
        """Reserve the batch's worst case, submit it, and keep what was held."""
        held = self.book.prepare(requests)
        body = [{"custom_id": custom_id, "params": spec.params} for custom_id, spec, _ in held]
        try:
            with translate():
                raw = self._sdk().messages.batches.with_raw_response.create(requests=body, timeout=self._timeout)
            batch = Batch.from_json(json.loads(raw.http_response.content))
        except BaseException:
            for _, _, reservation in held:
                if reservation is not None:
                    reservation.release()
            raise
        self.book.created(batch, held)
        if self.book.offline:
            ended = self._wait_online(batch.id, poll=0.05)
            self.book.keep_snapshot(ended, list(self._lines(ended)))
        return batch

    def retrieve(self, batch_id: str) -> Batch:
        snap = self.book.snapshot(batch_id)
        if snap is not None:
            return snap[0]
        with translate():
            raw = self._sdk().messages.batches.with_raw_response.retrieve(batch_id, timeout=self._timeout)
        return Batch.from_json(json.loads(raw.http_response.content))

    def cancel(self, batch_id: str) -> Batch:
        snap = self.book.snapshot(batch_id)
        if snap is not None:
            return snap[0]  # an offline batch has ended by the time create returns
        with translate():
            raw = self._sdk().messages.batches.with_raw_response.cancel(batch_id, timeout=self._timeout)
        return Batch.from_json(json.loads(raw.http_response.content))

    def wait(self, batch_id: str, *, poll: float = 5.0, sleep: Callable[[float], None] = time.sleep) -> Batch:
        """Retrieve the batch until it has ended (every ``poll`` seconds, up to a minute apart)."""
        snap = self.book.snapshot(batch_id)
        if snap is not None:
            return snap[0]
        return self._wait_online(batch_id, poll=poll, sleep=sleep)

    def _wait_online(self, batch_id: str, *, poll: float, sleep: Callable[[float], None] = time.sleep) -> Batch:
        while True:
            with translate():
                raw = self._sdk().messages.batches.with_raw_response.retrieve(batch_id, timeout=self._timeout)
            batch = Batch.from_json(json.loads(raw.http_response.content))
            if batch.ended:
                return batch
            sleep(poll)
            poll = min(poll * 1.5, 60.0)

    def results(self, batch_id: str) -> Iterator[BatchResult]:
        """The results, each recorded once in the ledger (and its reservation settled)."""
        snap = self.book.snapshot(batch_id)
        if snap is not None:
            return self.book.record_all(batch_id, snap[1])
        batch = self.retrieve(batch_id)
        if not batch.ended:
            raise _not_ended(batch)
        return self.book.record_all(batch_id, self._lines(batch))

    def _lines(self, batch: Batch) -> Iterator[Any]:
        with translate(), self._sdk().messages.batches.with_streaming_response.results(batch.id) as response:
            for text in response.iter_lines():
                if text.strip():
                    yield json.loads(text)


def _not_ended(batch: Batch) -> errors.RequestRejected:
    left = batch.request_counts.get("processing", 0)
    return errors.RequestRejected(
        f"batch {batch.id} has not ended yet ({batch.processing_status}, {left} of {batch.total} requests processing)",
        status_code=None,
        error_type="batch_not_ended",
        hint="wait for it (canny batch results ID --wait, or client.batches.wait)",
    )
