"""The ledger: one row per attempt, for every outcome, in SQLite (default) or PostgreSQL.

This module holds the contract every backend implements (:class:`Ledger`) and the row
(:class:`AttemptRecord`). :func:`open_ledger` picks the backend from a URL or path:
``sqlite:///path/ledger.db`` or a bare path for SQLite, ``postgresql://...`` for
PostgreSQL (needs the ``postgres`` extra; imported only then). Both backends also
implement :class:`ReportingLedger` (sums per group in SQL, as :class:`GroupTotals`), and
share their schema through :mod:`canny.ledger.migrations`. Schema and usage:
``docs/ledger.md``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from canny.pricing import CacheSavingRates

from canny.result import OUTCOMES, Outcome

__all__ = [
    "ANSWER_OUTCOMES",
    "GROUP_BYS",
    "OUTCOMES",
    "AttemptRecord",
    "GroupBy",
    "GroupTotals",
    "InflightLedger",
    "Ledger",
    "Outcome",
    "ReportingLedger",
    "open_for_calls",
    "open_ledger",
    "parse_ledger_target",
]

#: Outcomes that are answers; reports count every other outcome as a failure.
ANSWER_OUTCOMES: frozenset[str] = frozenset({"ok", "max_tokens", "refused"})

GroupBy = Literal["day", "week", "month", "model", "tag", "project", "outcome"]
GROUP_BYS: tuple[GroupBy, ...] = ("day", "week", "month", "model", "tag", "project", "outcome")


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
    input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0
    web_fetch_requests: int = 0
    code_execution_requests: int = 0
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


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """Sums over the attempts of one report group (or of the whole range).

    ``key`` is the group's label (``2026-11-24``, ``2026-W48``, ``2026-11``, a model, tag,
    project or outcome; ``None`` for attempts with no project/tag; ``"total"`` for totals).
    ``calls`` counts distinct call ids, ``attempts`` rows.
    ``cost_usd`` sums the priced attempts only and is ``None`` when none was priced;
    ``unpriced`` counts attempts with no cost, which are never folded into $0.
    """

    key: str | None
    calls: int
    attempts: int
    input_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    cache_read_tokens: int
    output_tokens: int
    cost_usd: Decimal | None
    unpriced: int
    failures: int
    #: With ``savings=``: the net saving of prompt caching over the attempts that count
    #: (:meth:`canny.pricing.CacheSavingRates.saving_units`); ``None`` without it, or when ``cost_usd`` is.
    saved_usd: Decimal | None = None


@runtime_checkable
class ReportingLedger(Ledger, Protocol):
    """A ledger that can sum its own rows (in SQL), which reports use when available."""

    def aggregate(
        self,
        by: GroupBy | None,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        tz: tzinfo | None = None,
        savings: CacheSavingRates | None = None,
    ) -> tuple[list[GroupTotals], GroupTotals]:
        """Totals per group of the attempts started in ``[since, until)``, and over all of
        them (key ``"total"``). Time groups are calendar periods in ``tz`` (UTC if None);
        ``by=None`` gives no groups, only the total. A call counts once per group it has
        attempts in, and once in the total; ``--by tag`` groups overlap (an attempt counts
        under each of its tags). With ``savings``, ``saved_usd`` sums
        :meth:`CacheSavingRates.saving_units` over the group's attempts."""


def open_ledger(target: str | Path) -> Ledger:
    """Open (creating and migrating as needed) the ledger at a path or URL.

    A bad target (an unknown scheme such as ``mysql://``, a malformed ``postgresql://``
    URL, ``sqlite:///`` naming no file) raises :class:`canny.errors.ConfigError`.
    """
    kind, where = parse_ledger_target(target)
    if kind == "postgres":
        from canny.ledger.postgres import PostgresLedger

        return PostgresLedger(where)
    from canny.ledger.sqlite import SQLiteLedger

    return SQLiteLedger(Path(where))


def open_for_calls(target: str | Path) -> Ledger:
    """Open the ledger a client or meter records its calls in, failing closed.

    Any failure to open it (a corrupt or read-only file, a directory, a lock held past the
    busy timeout, a PostgreSQL server down, a bad URL) raises
    :class:`~canny.errors.LedgerUnavailable` naming the ledger and the reason, so that no
    call is sent without a record. Rows spooled by an earlier process that could not write
    them (:mod:`canny.ledger.spool`) are written into the ledger now.
    """
    from canny import errors
    from canny.ledger import spool

    try:
        ledger = open_ledger(target)
    except errors.LedgerUnavailable:
        raise
    except (errors.LedgerError, ValueError, OSError) as exc:
        location = _safe_location(target)
        text = exc.message if isinstance(exc, errors.LedgerError) else str(exc) or type(exc).__name__
        reason = _scrub(text.removeprefix(f"ledger {location}: "), target)
        raise errors.LedgerUnavailable(
            f"ledger {location} cannot be opened, so nothing was sent: {reason}",
            location=location,
            reason=reason,
            hint=_hint(exc),
        ) from None
    spool.drain(ledger)
    return ledger


def _scrub(text: str, target: str | Path) -> str:
    if str(target).startswith(("postgres://", "postgresql://")):
        from canny.ledger.postgres import _secrets

        for secret in _secrets(str(target)):
            text = text.replace(secret, "****")
    return text


def _safe_location(target: str | Path) -> str:
    from canny.ledger.spool import location_of

    try:
        return location_of(target)
    except Exception:  # a URL too broken to mask: never print it whole
        return "(unreadable ledger location)"


def _hint(exc: Exception) -> str:
    from canny.errors import LedgerUnavailable

    own = getattr(exc, "hint", "")
    tail = "or run without a ledger: --no-ledger / ledger=False"
    return f"{own}; {tail}" if own else LedgerUnavailable.hint


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_KNOWN_SCHEMES = frozenset({"sqlite", "postgres", "postgresql"})
_LEDGER_FORMS = "a file path, sqlite:///PATH or postgresql://USER@HOST/DATABASE"
_PG_FORM = "the form is postgresql://USER:PASSWORD@HOST:PORT/DATABASE"


def parse_ledger_target(target: str | Path) -> tuple[Literal["sqlite", "postgres"], str]:
    """``("sqlite", path)`` or ``("postgres", url)`` for a ledger path or URL.

    Anything else (an unknown ``scheme://``, a malformed PostgreSQL URL, ``sqlite:///``
    naming no file, ``:memory:``) is a :class:`canny.errors.ConfigError` naming the problem.
    """
    from canny.errors import ConfigError

    text = str(target)
    shown = _mask(text)
    if not text.strip():
        raise ConfigError("the ledger location is empty", hint=f"a ledger is {_LEDGER_FORMS}")
    if "\x00" in text:
        raise ConfigError(f"ledger {shown!r}: contains a NUL character", hint=f"a ledger is {_LEDGER_FORMS}")
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if isinstance(target, Path) or match is None or not (scheme in _KNOWN_SCHEMES or text[match.end() :][:2] == "//"):
        return "sqlite", _sqlite_path(text, shown)
    if scheme in ("postgres", "postgresql"):
        return "postgres", _postgres_url(text, shown)
    if scheme == "sqlite":
        rest = text[match.end() :]
        if not rest.startswith("///") or len(rest) == 3:
            raise ConfigError(f"ledger {shown!r}: a SQLite URL is sqlite:///PATH (three slashes, then the file)")
        if "?" in rest or "#" in rest:
            raise ConfigError(f"ledger {shown!r}: a SQLite URL takes no ?query or #fragment, only the file")
        return "sqlite", _sqlite_path(rest[3:], shown)
    raise ConfigError(f"ledger {shown!r}: unknown scheme {scheme}://", hint=f"a ledger is {_LEDGER_FORMS}")


def _sqlite_path(text: str, shown: str) -> str:
    from canny.errors import ConfigError

    if text == ":memory:":
        raise ConfigError("ledger ':memory:': the ledger must be a file that outlives the process")
    if text.endswith(("/", "\\")):
        raise ConfigError(f"ledger {shown!r}: names a directory, not a file", hint=f"for example {text}ledger.db")
    return text


def _postgres_url(text: str, shown: str) -> str:
    from urllib.parse import urlsplit

    from canny.errors import ConfigError

    try:
        parts = urlsplit(text)
        port = parts.port  # a ValueError unless a number from 0 to 65535
    except ValueError as exc:
        raise ConfigError(f"ledger {shown!r}: not a valid PostgreSQL URL ({exc})", hint=_PG_FORM) from None
    if port == 0:
        raise ConfigError(f"ledger {shown!r}: not a valid PostgreSQL URL (port 0)", hint=_PG_FORM)
    if parts.fragment:
        raise ConfigError(f"ledger {shown!r}: a PostgreSQL URL takes no #fragment", hint=_PG_FORM)
    return text


def _mask(text: str) -> str:
    """``text`` with a URL password or a ``password=`` value replaced, for error messages
    (works on malformed URLs, which :func:`urllib.parse.urlsplit` refuses)."""
    text = re.sub(r"(://[^/?#@:]*:)[^/?#]*@", r"\1****@", text)
    return re.sub(r"(password\s*=\s*)[^&#\s]*", r"\1****", text, flags=re.IGNORECASE)
