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
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Literal

from canny.ledger import records  # its names are re-exported: `X as X`, and __all__ below
from canny.ledger.records import ANSWER_OUTCOMES as ANSWER_OUTCOMES
from canny.ledger.records import GROUP_BYS as GROUP_BYS
from canny.ledger.records import OFFLINE_TAG as OFFLINE_TAG
from canny.ledger.records import OUTCOMES as OUTCOMES
from canny.ledger.records import ROW_FIELDS as ROW_FIELDS
from canny.ledger.records import AttemptRecord as AttemptRecord
from canny.ledger.records import GroupBy as GroupBy
from canny.ledger.records import GroupTotals as GroupTotals
from canny.ledger.records import InflightLedger as InflightLedger
from canny.ledger.records import Ledger as Ledger
from canny.ledger.records import Outcome as Outcome
from canny.ledger.records import ReportFilter as ReportFilter
from canny.ledger.records import ReportingLedger as ReportingLedger
from canny.ledger.records import ReportQuery as ReportQuery
from canny.ledger.records import Sums as Sums
from canny.ledger.records import record_from_values as record_from_values
from canny.ledger.records import record_values as record_values

__all__ = ["Waiting", "display_location", "open_for_calls", "open_ledger", "parse_ledger_target", "waiting_rows"]
__all__ += records.__all__  # the contract and the row, re-exported


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
    them (:mod:`canny.ledger.spool`) are written into the ledger now. The ledger then
    writes behind the call (:mod:`canny.ledger.writer`) unless ``CANNY_LEDGER_WRITES=sync``.
    """
    from canny import errors
    from canny.ledger import spool

    try:
        ledger = open_ledger(target)
    except errors.LedgerUnavailable:
        raise
    except (errors.LedgerError, ValueError, OSError) as exc:
        location = display_location(target)
        text = exc.message if isinstance(exc, errors.LedgerError) else str(exc) or type(exc).__name__
        reason = _scrub(text.removeprefix(f"ledger {location}: "), target)
        raise errors.LedgerUnavailable(
            f"ledger {location} cannot be opened, so nothing was sent: {reason}",
            location=location,
            reason=reason,
            hint=_hint(exc),
        ) from None
    spool.drain(ledger)
    from canny.ledger import journal

    if hasattr(ledger, "record_all"):
        journal.recover(ledger)  # rows of processes killed before their writer committed them
    from canny.ledger.writer import background_writes_enabled

    write_behind = getattr(ledger, "write_behind", None)
    if write_behind is not None and background_writes_enabled():
        write_behind(partial(spool.keep, ledger), journal=journal.Journal(ledger.location))
    return ledger


@dataclass(frozen=True)
class Waiting:
    """Rows of billed calls that are not in a ledger yet (:func:`waiting_rows`): spooled
    by a process that could not write them, or left in the journal of a process that ended
    before its writer committed them. The next client or meter that opens the ledger
    (:func:`open_for_calls`) writes both."""

    spooled: int
    spool: Path
    journaled: int
    journals: Path
    #: Journal files that ended processes left for other ledgers (written when each of
    #: those ledgers is next opened for calls, or never, if it was deleted).
    others: int = 0

    def facts(self) -> list[tuple[str, str]]:
        """``(where, sentence)`` for each place where this ledger's rows wait, the same
        words for ``canny doctor`` and ``canny report``."""
        found = []
        if self.spooled:
            found.append(("spool", f"{self.spooled} spooled row(s) wait in {self.spool}"))
        if self.journaled:
            where = f"their journals in {self.journals}"
            found.append(("journal", f"{self.journaled} row(s) of ended processes wait in {where}"))
        return found


def waiting_rows(target: str | Path, *, others: bool = False) -> Waiting:
    """How many rows wait outside the ledger at ``target`` (a path or URL), and where; with
    ``others``, also how many journal files wait for other ledgers. Raises ``OSError`` when
    they cannot be read, ``ValueError`` for a target that names no ledger."""
    from canny.ledger import journal, spool

    location = spool.location_of(target)
    return Waiting(
        spooled=spool.pending(location),
        spool=spool.spool_path(location),
        journaled=journal.waiting(location),
        journals=journal.journal_dir(),
        others=journal.others(location) if others else 0,
    )


def _scrub(text: str, target: str | Path) -> str:
    if str(target).startswith(("postgres://", "postgresql://")):
        from canny.ledger.postgres import url_secrets

        for secret in url_secrets(str(target)):
            text = text.replace(secret, "****")
    return text


def display_location(target: str | Path) -> str:
    """The ledger's location as canny shows it: a file path, or a PostgreSQL URL with its
    password masked; never the password, even for a URL too broken to parse."""
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
