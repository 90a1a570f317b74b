"""What a ledger is: the row of one attempt (:class:`AttemptRecord`) and the contract every
backend implements (:class:`Ledger`, :class:`InflightLedger`, :class:`ReportingLedger`).

Kept apart from :mod:`canny.ledger` (which opens a ledger and picks its backend) so that
the backends can import the contract without importing the package that imports them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from canny.pricing import CacheSavingRates

from canny.result import OUTCOMES, Outcome
from canny.usage import Usage, usage_columns, usage_from_columns

__all__ = [
    "ANSWER_OUTCOMES",
    "GROUP_BYS",
    "OFFLINE_TAG",
    "OUTCOMES",
    "ROW_FIELDS",
    "AttemptRecord",
    "GroupBy",
    "GroupTotals",
    "InflightLedger",
    "Ledger",
    "Outcome",
    "ReportFilter",
    "ReportQuery",
    "ReportingLedger",
    "Sums",
    "record_from_values",
    "record_values",
]

#: Outcomes that are answers; reports count every other outcome as a failure.
ANSWER_OUTCOMES: frozenset[str] = frozenset({"ok", "max_tokens", "refused"})

GroupBy = Literal["day", "week", "month", "model", "tag", "project", "outcome", "session"]
GROUP_BYS: tuple[GroupBy, ...] = ("day", "week", "month", "model", "tag", "project", "outcome", "session")
#: The tag of attempts sent to the local emulator (``--offline``, or a loopback base URL).
OFFLINE_TAG = "offline"


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of one call, as stored. Text is stored only when the user opts in."""

    call_id: str
    attempt: int
    started_at: datetime
    ended_at: datetime
    model: str
    outcome: Outcome
    session_id: str | None = None
    first_token_at: datetime | None = None
    status_code: int | None = None
    error_type: str | None = None
    error_code: str | None = None
    request_id: str | None = None
    stop_reason: str | None = None
    refusal_category: str | None = None
    #: The attempt's usage, bucket totals only (no ``iterations``): stored as the bucket
    #: columns of :data:`canny.usage.BUCKETS`.
    usage: Usage = Usage()
    #: Exact USD; ``None`` means unpriced (never stored as 0).
    cost_usd: Decimal | None = None
    price_version: str | None = None
    batch: bool = False
    inference_geo: str | None = None
    speed: str | None = None
    streamed: bool = True
    endpoint: str | None = None
    project: str | None = None
    tags: tuple[str, ...] = ()
    #: A short fingerprint of the key (never the key), for per-key budgets and reports.
    key_fingerprint: str | None = None
    #: SHA-256 of the request's messages/system, always stored; text only on opt-in.
    prompt_hash: str | None = None
    prompt_text: str | None = None
    response_text: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    #: The request's ``max_tokens`` as sent (after any budget lowered it); ``None`` when
    #: unknown (rows written before canny kept it).
    max_tokens: int | None = None
    #: The request's cacheable prefix boundaries as hashes and estimated sizes, never text
    #: (:mod:`canny.prefixes`); ``""`` when none was long enough, ``None`` when unknown.
    prefix_hashes: str | None = None


_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AttemptRecord))
#: The names of a record's values in a ledger row, an export line and a spooled row, in
#: order: the fields of :class:`AttemptRecord`, with ``usage`` spelled out as its bucket
#: columns (:data:`canny.usage.BUCKETS`).
ROW_FIELDS: tuple[str, ...] = tuple(
    column for name in _FIELDS for column in (tuple(usage_columns(Usage())) if name == "usage" else (name,))
)


def record_values(record: AttemptRecord) -> dict[str, Any]:
    """The values of ``record`` keyed by :data:`ROW_FIELDS`, in that order, each as it is."""
    values: dict[str, Any] = {}
    for name in _FIELDS:
        if name == "usage":
            values.update(usage_columns(record.usage))
        else:
            values[name] = getattr(record, name)
    return values


def record_from_values(values: Mapping[str, Any]) -> AttemptRecord:
    """The record of ``values`` keyed by :data:`ROW_FIELDS` (the inverse of
    :func:`record_values`); other keys are ignored, a field left out takes its default."""
    kept = {name: values[name] for name in _FIELDS if name in values and name != "usage"}
    return AttemptRecord(**kept, usage=usage_from_columns(values))


@runtime_checkable
class Ledger(Protocol):
    """What the client needs from a ledger backend."""

    #: Where the ledger lives (a path or a URL with the password masked).
    location: str

    def record(self, record: AttemptRecord) -> None:
        """Store one attempt. Must be safe across threads and processes."""

    def records(self, *, since: datetime | None = None, until: datetime | None = None) -> Iterator[AttemptRecord]:
        """Attempts started in ``[since, until)``, oldest first."""

    def close(self) -> None:
        """Release connections."""


@runtime_checkable
class InflightLedger(Ledger, Protocol):
    """A ledger that also keeps the attempts in flight (both SQL backends), so an attempt is
    on the record from the moment the API accepted it: a process killed mid-call leaves its
    attempt, which becomes a row with outcome ``lost`` when its lease ends."""

    def begin_attempt(self, record: AttemptRecord, *, lease_until: datetime, reservation_id: int | None = None) -> None:
        """Keep ``record`` (its input-side usage and their cost) as the provisional row of an
        attempt in flight until ``lease_until``; :meth:`record` of the same ``(call_id,
        attempt)`` replaces it in one transaction. ``reservation_id``: the call's budget
        reservation, settled with the provisional cost if the attempt is lost."""

    def forget_attempt(self, call_id: str, attempt: int) -> None:
        """Drop the provisional row of an attempt that was never sent after all."""

    def in_flight(self) -> list[AttemptRecord]:
        """The attempts in flight, oldest first, as the ``lost`` rows they would become
        (``ended_at`` is the end of their lease)."""

    def sweep_lost(self, *, now: datetime | None = None, everything: bool = False) -> int:
        """Record the attempts in flight whose lease ended before ``now`` (all of them with
        ``everything``) as ``lost`` rows, settling their budget reservations; return how many."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sums:
    """What a report sums over attempts, keyword-only (a report group and a report row add
    their label). ``calls`` counts distinct call ids, ``attempts`` rows. ``cost_usd`` sums
    the priced attempts only and is ``None`` when none was priced; ``unpriced`` counts
    attempts with no cost, which are never folded into $0.
    """

    calls: int = 0
    attempts: int = 0
    #: The token buckets summed (:data:`canny.usage.TOKEN_BUCKETS`; server-tool requests are
    #: not summed and read 0).
    tokens: Usage = Usage()
    cost_usd: Decimal | None = None
    unpriced: int = 0
    failures: int = 0
    #: With ``savings=``: the net saving of prompt caching over the attempts that count
    #: (:meth:`canny.pricing.CacheSavingRates.saving_units`); ``None`` without it, or when ``cost_usd`` is.
    saved_usd: Decimal | None = None


@dataclass(frozen=True, slots=True)
class GroupTotals(Sums):
    """The :class:`Sums` of one report group (or of the whole range).

    ``key`` is the group's label (``2026-11-24``, ``2026-W48``, ``2026-11``, a model, tag,
    project, outcome or session; ``None`` for attempts with no project/tag/session;
    ``"total"`` for totals). ``subkey`` is the label of the second grouping (``then``), if any.
    """

    key: str | None
    subkey: str | None = None


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Which attempts a report reads: each non-empty tuple keeps the attempts whose field is
    one of its values (``tags``: that carry at least one of them); the tuples combine with
    AND. ``offline=False`` leaves out the attempts tagged :data:`OFFLINE_TAG`."""

    projects: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    outcomes: tuple[str, ...] = ()
    offline: bool = True

    def keeps_tags(self, tags: tuple[str, ...] | list[str]) -> bool:
        """Whether an attempt with these tags passes the tag part of the filter."""
        if not self.offline and OFFLINE_TAG in tags:
            return False
        return not self.tags or any(tag in self.tags for tag in tags)

    def keeps(self, record: AttemptRecord) -> bool:
        """Whether ``record`` passes the whole filter."""
        return (
            (not self.projects or record.project in self.projects)
            and (not self.models or record.model in self.models)
            and (not self.outcomes or record.outcome in self.outcomes)
            and self.keeps_tags(record.tags)
        )


@dataclass(frozen=True, slots=True)
class ReportQuery:
    """What :meth:`ReportingLedger.aggregate` sums: the attempts started in ``[since, until)``
    that pass ``filters``, in groups ``by`` one key and, with ``then``, in pairs of a ``by``
    group and a ``then`` group (``subkey``). Time groups are calendar periods in ``tz``;
    ``by=None`` gives no groups, only the total. With ``savings``, ``saved_usd`` sums
    :meth:`CacheSavingRates.saving_units` over each group's attempts. ``calls=False`` (for
    charts of cost, attempts and failures) lets a ledger skip counting distinct calls, which
    may then read 0."""

    by: GroupBy | None
    then: GroupBy | None = None
    since: datetime | None = None
    until: datetime | None = None
    tz: tzinfo = UTC
    savings: CacheSavingRates | None = None
    filters: ReportFilter = ReportFilter()
    calls: bool = True


@runtime_checkable
class ReportingLedger(Ledger, Protocol):
    """A ledger that can sum its own rows (in SQL), which reports use when available."""

    def aggregate(self, query: ReportQuery) -> tuple[list[GroupTotals], GroupTotals]:
        """Totals per group of the attempts ``query`` selects, and over all of them (key
        ``"total"``). A call counts once per group it has attempts in, and once in the
        total; ``tag`` groups overlap (an attempt counts under each of its tags)."""
