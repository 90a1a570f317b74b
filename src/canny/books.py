"""The books a :class:`canny.Client` and a :class:`canny.Meter` both keep.

One :class:`Books` holds the settings and their defaults (project, tags, content
logging), opens and owns the ledger (failing closed: a call is never sent without a
record unless the caller chose ``ledger=False``), chooses the budget guards, reserves a
call's worst case against them (a guard that cannot be checked refuses the call), writes
the ``budget_refused`` row of a refused call, and sets up the
:class:`~canny._call.CallRun` that turns each attempt into a ledger row and a result.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from canny import errors
from canny._call import DEFAULT_LEASE, CallObserver, CallRun, CallSpec, budget_refused_record

if TYPE_CHECKING:
    from canny.budget import Reservation, Reserver
    from canny.config import Settings
    from canny.ledger import Ledger
    from canny.retry import RetryPolicy
    from canny.telemetry import Telemetry

__all__ = ["Books", "checked", "critical_sections"]

_T = TypeVar("_T")


class Books:
    """Settings, ledger, budgets and runs shared by a client's (or a meter's) calls."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | str | Path | Literal[False] | None = None,  # None: the configured one
        budget: Reserver | None = None,
        project: str | None = None,
        tags: Iterable[str] = (),
        log_content: bool | None = None,
        lock: threading.RLock | None = None,
    ) -> None:
        self.settings = settings
        self.budget = budget
        self.project = project or settings.project
        self.tags = tuple(tags) or settings.tags
        self.log_content = settings.log_content if log_content is None else log_content
        self._ledger_arg = ledger
        self._ledger: Ledger | None = None
        self._ledger_opened = ledger is False
        self._lock = lock or threading.RLock()
        #: canny's telemetry when ``otel`` is on (``canny[otel]`` installed), else ``None``.
        self.telemetry = _telemetry() if settings.otel else None

    # -- the ledger ----------------------------------------------------------------------
    @property
    def ledger(self) -> Ledger | None:
        """The ledger (opened on first use); ``None`` when disabled with ``ledger=False``.
        Raises :class:`~canny.errors.LedgerUnavailable` when it cannot be opened (tried
        again on the next call)."""
        if not self._ledger_opened:
            with self._lock:
                if not self._ledger_opened:
                    self._ledger = self._open_ledger()
                    self._ledger_opened = True  # last: other threads never see it half-open
        return self._ledger

    def _open_ledger(self) -> Ledger | None:
        arg = self._ledger_arg
        if arg is None or isinstance(arg, (str, Path)):
            from canny.ledger import open_for_calls

            return open_for_calls(arg if arg is not None else self.settings.ledger)
        if arg is False:
            return None
        from canny.ledger.spool import drain

        drain(arg)  # rows an earlier run could not write into this ledger
        return arg

    def flush(self) -> None:
        """Wait until the rows of the calls made so far are in the ledger: rows are written
        behind the call (:mod:`canny.ledger.writer`). Warnings for rows that had to be
        spooled are shown now."""
        flush = getattr(self._ledger, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Close the ledger if these books opened it (a path, or the configured one)."""
        owned = self._ledger_arg is None or isinstance(self._ledger_arg, (str, Path))
        with self._lock:
            if self._ledger is not None and owned:
                self._ledger.close()
            self._ledger, self._ledger_opened = None, self._ledger_arg is False

    # -- budgets -------------------------------------------------------------------------
    def guards(self, spec: CallSpec, ledger: Ledger | None, *, per_call: Reserver | None = None) -> list[Reserver]:
        """The budgets a call is held to: its own ``per_call`` one (``max_cost``), then the
        budget given to the books, else the ledger's stored and the profile's budgets."""
        guards: list[Reserver] = [per_call] if per_call is not None else []
        if self.budget is not None:
            guards.append(self.budget)
        elif ledger is not None:
            from canny.budget import guard_for

            stored = checked(lambda: guard_for(ledger, self.settings), ledger)
            if stored is not None:
                guards.append(stored)
        return guards

    def reserve(
        self, spec: CallSpec, ledger: Ledger | None, *, per_call: Reserver | None = None, attempt: int = 1
    ) -> Reservation | None:
        """Reserve ``spec``'s worst case against every guard, lowering ``max_tokens`` to
        the tightest; ``None`` when no budget applies. A refusal releases what was held,
        writes the ``budget_refused`` row and raises
        :class:`~canny.errors.BudgetExceeded`; a budget that cannot be checked raises
        :class:`~canny.errors.LedgerUnavailable`. Nothing is sent either way."""
        reservations: list[Reservation] = []
        try:
            for guard in self.guards(spec, ledger, per_call=per_call):
                reservation = checked(partial(guard.reserve, spec), ledger)
                reservations.append(reservation)
                spec.params["max_tokens"] = min(spec.max_tokens, reservation.max_tokens)
        except BaseException as exc:
            for reservation in reservations:
                reservation.release()
            if isinstance(exc, errors.BudgetExceeded) and ledger is not None:
                self.refused(spec, exc, ledger, attempt=attempt)
            raise
        return _Combined(reservations) if reservations else None

    def refused(self, spec: CallSpec, error: errors.BudgetExceeded, ledger: Ledger, *, attempt: int = 1) -> None:
        """Write the ``budget_refused`` row of a call refused before sending (spooled if
        the ledger fails)."""
        row = dataclasses.replace(budget_refused_record(spec, error), attempt=attempt)
        CallRun(spec, ledger=ledger, observer=self.trace(spec)).write_unsent(row)

    # -- runs ----------------------------------------------------------------------------
    def spec(
        self,
        model: str,
        params: dict[str, Any],
        *,
        stream: bool,
        endpoint: str | None,
        key_fingerprint: str | None,
        project: str | None = None,
        tags: Iterable[str] | None = None,
        **call: Any,
    ) -> CallSpec:
        """THE spec of one call, for Client and meter alike: the books' project, tags and
        content logging unless the call names its own, and ``call``'s other fields."""
        return CallSpec(
            model=model,
            params=params,
            stream=stream,
            project=project or self.project,
            tags=self.tags if tags is None else tuple(tags),
            log_content=self.log_content,
            endpoint=endpoint,
            key_fingerprint=key_fingerprint,
            **call,
        )

    def run(
        self,
        spec: CallSpec,
        ledger: Ledger | None,
        *,
        reservation: Reservation | None,
        policy: RetryPolicy | None = None,
        lease: float = DEFAULT_LEASE,
    ) -> CallRun:
        """The :class:`~canny._call.CallRun` that books each attempt of ``spec``."""
        return CallRun(
            spec, policy=policy, ledger=ledger, reservation=reservation, lease=lease, observer=self.trace(spec)
        )

    def trace(self, spec: CallSpec) -> CallObserver | None:
        """THE hook of telemetry, for Client and meter alike: what watches ``spec``'s run
        (its attempts' rows and its end), or ``None`` when telemetry is off."""
        if self.telemetry is None:
            return None
        return self.telemetry.trace(
            request_model=spec.model,
            max_tokens=spec.params.get("max_tokens") if isinstance(spec.params.get("max_tokens"), int) else None,
            stream=spec.stream,
            prompt=spec.prompt_json,
        )


def _telemetry() -> Telemetry:
    """canny's telemetry; a clear error when ``otel`` is on without the ``canny[otel]`` extra."""
    try:
        from canny import telemetry

        return telemetry.get()
    except ImportError as exc:
        raise errors.ConfigError(
            f"otel is on but OpenTelemetry is not installed ({exc.name or exc})",
            hint="pip install 'canny[otel]', or turn it off: CANNY_OTEL=0 / otel = false",
        ) from None


def checked(step: Callable[[], _T], ledger: Ledger | None) -> _T:
    """Run a budget step; a ledger failure refuses the call (budgets fail closed)."""
    try:
        return step()
    except (errors.LedgerUnavailable, errors.BudgetExceeded, errors.ConfigError):
        raise
    except errors.CannyError as exc:
        location = ledger.location if ledger is not None else ""
        raise errors.LedgerUnavailable(
            f"budgets could not be checked, so nothing was sent: {exc.message}",
            location=location,
            reason=exc.message,
            hint=exc.hint or None,
        ) from None


class _Combined:
    """The reservations of one call, held and ended together."""

    def __init__(self, reservations: list[Reservation]) -> None:
        self.reservations = reservations
        self.max_tokens = min(r.max_tokens for r in reservations)

    def settle(self, cost: Decimal | None) -> None:
        for r in self.reservations:
            r.settle(cost)

    def release(self) -> None:
        for r in self.reservations:
            r.release()

    def renew(self, seconds: float | None = None) -> bool:
        renewed = [r.renew(seconds) for r in self.reservations]  # renew every one, no short-circuit
        return all(renewed)


def critical_sections() -> tuple[Callable[..., object], ...]:
    """The functions that write a ledger row or hold, settle or release a budget: a stop
    signal must wait until they return (the command line's ``stop_on_signals``)."""
    return (
        CallRun.close_attempt,  # writes the attempt's row (and whatever the ledger does to keep it)
        CallRun.write,
        CallRun.write_unsent,
        CallRun._settle,  # settles the budget reservation
        CallRun.release,
        Books.reserve,  # holds reservations it has not handed over yet
        Books.refused,
    )
