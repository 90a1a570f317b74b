"""Budget alerts: a command run or a URL posted when spend crosses a share of a budget.

A stored budget may carry thresholds in percent of its limit (``alert_at=(50, 80, 100)``)
and where to send an alert (``alert_command``, ``alert_url``, either or both). Whether a
threshold fired is decided in the transaction that settles a call's spend
(:func:`crossed`, called by :func:`canny.budget.store.settle`): it inserts one row per
budget, period window and threshold into ``budget_alerts_fired`` (migration
``budget.0002_alerts``), and only the transaction whose insert went in fires it. So an
alert fires exactly once per threshold per period, however many threads, processes or
machines share the budget. Spend that lands another way (an expired lease, a lost attempt)
fires at the next settle in that period.

Delivery (:func:`deliver`) happens after the transaction committed, outside any lock, with
a timeout (:data:`ALERT_TIMEOUT`): the command gets the figures as JSON on its stdin, the
URL gets them as a JSON ``POST`` body. A failure is a :class:`~canny.errors.CannyWarning`,
once per destination per process, and never fails the call. An alert is not sent again:
delivery is at most once, the decision exactly once.
"""

from __future__ import annotations

# SQL here is built from constants and ``?`` placeholders only; values are never spliced in.
# ruff: noqa: S608
import json
import shlex
import subprocess
import threading
import urllib.request
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from canny.budget.scope import Scope
from canny.errors import CannyWarning, ConfigError
from canny.units import from_us, pico_to_usd, plain_decimal, to_us

if TYPE_CHECKING:
    from canny.budget.limits import Budget
    from canny.budget.store import BudgetLedger
    from canny.ledger.migrations import Transaction

__all__ = [
    "ALERT_TIMEOUT",
    "BUDGET_ROW",
    "Alert",
    "AlertRule",
    "FiredAlert",
    "check_rule",
    "crossed",
    "deliver",
    "fired_alerts",
    "parse_thresholds",
    "read_rule",
    "write_rule",
]

#: Seconds an alert command may run, or an alert URL take to answer.
ALERT_TIMEOUT = 10.0
#: The highest threshold accepted, in percent of the limit.
MAX_THRESHOLD = Decimal(1000)

#: The condition on a budget table's row that picks one budget: ``(period, *scope.stored)``.
BUDGET_ROW = "period = ? AND project = ? AND tag = ? AND key_fingerprint = ?"


@dataclass(frozen=True, slots=True)
class AlertRule:
    """A budget's thresholds (percent of its limit, ascending) and where alerts go."""

    thresholds: tuple[Decimal, ...]
    command: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class FiredAlert:
    """One threshold that fired in one period window, as stored."""

    threshold: Decimal
    window: str
    time_zone: str
    limit: Decimal
    spent: Decimal
    fired_at: datetime


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold that just fired, with where to send it."""

    period: str
    scope: Scope
    fired: FiredAlert
    command: str | None
    url: str | None

    def payload(self) -> dict[str, Any]:
        """The figures sent to the command (stdin) and the URL (body), as JSON."""
        f = self.fired
        return {
            "event": "canny.budget_alert",
            "period": self.period,
            **self.scope.as_dict(),
            "window": f.window,
            "time_zone": f.time_zone,
            "threshold_percent": plain_decimal(f.threshold),
            "limit_usd": plain_decimal(f.limit),
            "spent_usd": plain_decimal(f.spent),
            "spent_percent": plain_decimal((f.spent * 100 / f.limit).quantize(Decimal("0.01"))) if f.limit else None,
            "fired_at": f.fired_at.isoformat(),
        }


# --- rules -------------------------------------------------------------------------------


def parse_thresholds(value: str | Iterable[Decimal | int | str] | None) -> tuple[Decimal, ...]:
    """``"50,80,100"`` (or numbers) as ascending, distinct percentages in (0, 1000]."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    found: set[Decimal] = set()
    for part in parts:
        text = str(part).strip().removesuffix("%")
        if not text:
            continue
        try:
            number = Decimal(text)
        except InvalidOperation:
            hint = "for example --alert-at 50,80,100"
            raise ConfigError(f"alert threshold {text!r} is not a number", hint=hint) from None
        if not number.is_finite() or not 0 < number <= MAX_THRESHOLD:
            raise ConfigError(f"alert threshold {text} must be a percentage above 0 and at most {MAX_THRESHOLD}")
        found.add(Decimal(plain_decimal(number)))  # 80.0 is 80, and never 8E+1
    return tuple(sorted(found))


def check_rule(rule: AlertRule) -> None:
    """Refuse a command that cannot be split into words, or a URL that is not http(s)."""
    command, url = rule.command, rule.url
    if command is not None:
        try:
            if not shlex.split(command):
                raise ConfigError("the alert command is empty")
        except ValueError as exc:
            raise ConfigError(f"the alert command cannot be split into words ({exc})") from None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"the alert URL must be an http(s) URL, got {url!r}")


def _which(budget: Budget) -> tuple[str, str, str, str]:
    """The values of :data:`BUDGET_ROW` for ``budget``."""
    return (budget.period, *budget.scope.stored)


def write_rule(ledger: BudgetLedger, budget: Budget, rule: AlertRule | None) -> None:
    """Store the alert rule of ``budget`` (``None`` or no thresholds: remove it)."""
    with ledger.transaction() as tx:
        tx.execute(f"DELETE FROM budget_alert_rules WHERE {BUDGET_ROW}", _which(budget))
        if rule is None or not rule.thresholds:
            return
        check_rule(rule)
        thresholds = json.dumps([plain_decimal(t) for t in rule.thresholds])
        tx.execute(
            "INSERT INTO budget_alert_rules (period, project, tag, key_fingerprint, thresholds, command, url) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*_which(budget), thresholds, rule.command, rule.url),
        )


def _rule(thresholds: str, command: str | None, url: str | None) -> AlertRule:
    return AlertRule(tuple(Decimal(t) for t in json.loads(thresholds)), command or None, url or None)


def read_rule(ledger: BudgetLedger, budget: Budget) -> AlertRule | None:
    """The alert rule of ``budget`` (``None``: no alerts)."""
    with ledger.transaction(write=False) as tx:
        rows = tx.execute(f"SELECT thresholds, command, url FROM budget_alert_rules WHERE {BUDGET_ROW}", _which(budget))
    return _rule(*rows[0]) if rows else None


def fired_alerts(ledger: BudgetLedger, budget: Budget, window: str) -> list[FiredAlert]:
    """The thresholds of ``budget`` that fired in its period window ``window``, lowest first."""
    with ledger.transaction(write=False) as tx:
        rows = tx.execute(
            "SELECT threshold, label, time_zone, limit_usd, spent_pico, fired_at_us FROM budget_alerts_fired "
            f"WHERE {BUDGET_ROW} AND time_zone = ? AND label = ?",
            (*_which(budget), budget.time_zone, window),
        )
    found = [_fired(*row) for row in rows]
    return sorted(found, key=lambda f: f.threshold)


def _fired(threshold: str, label: str, zone: str, limit: str, spent: int, at_us: int) -> FiredAlert:
    spent_usd, when = Decimal(plain_decimal(pico_to_usd(int(spent)))), from_us(int(at_us))
    return FiredAlert(Decimal(threshold), str(label), str(zone), Decimal(limit), spent_usd, when)


# --- the decision, inside the transaction that settles spend ------------------------------

_CROSSING = (
    "SELECT c.period, c.project, c.tag, c.key_fingerprint, c.time_zone, c.label, c.spent_pico, l.limit_usd, "
    "r.thresholds, r.command, r.url FROM budget_counters c "
    "JOIN budget_limits l ON l.period = c.period AND l.project = c.project AND l.tag = c.tag "
    "AND l.key_fingerprint = c.key_fingerprint AND l.time_zone = c.time_zone "
    "JOIN budget_alert_rules r ON r.period = c.period AND r.project = c.project AND r.tag = c.tag "
    "AND r.key_fingerprint = c.key_fingerprint WHERE c.id IN ({marks})"
)


def crossed(tx: Transaction, counter_ids: Sequence[int], now_us: int | None = None) -> list[Alert]:
    """In the transaction that just charged spend to ``counter_ids``: the thresholds their
    budgets have now reached that no transaction fired before in this period window. Each
    is recorded as fired here; only this transaction's insert goes in, so only its caller
    delivers it (after commit: :func:`deliver`)."""
    if not counter_ids:
        return []
    now_us = to_us(datetime.now(UTC)) if now_us is None else now_us
    alerts: list[Alert] = []
    sql = _CROSSING.format(marks=", ".join("?" * len(counter_ids)))
    rows = tx.execute(sql, list(counter_ids))
    for period, project, tag, key, zone, label, spent, limit_text, thresholds, command, url in rows:
        limit = Decimal(limit_text)
        rule = _rule(thresholds, command, url)
        reached = [t for t in rule.thresholds if Decimal(int(spent)) * 100 >= t * limit.scaleb(12)]
        for threshold in reached:
            inserted = tx.execute(
                "INSERT INTO budget_alerts_fired (period, project, tag, key_fingerprint, time_zone, label, threshold, "
                "limit_usd, spent_pico, fired_at_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING RETURNING threshold",
                (period, project, tag, key, zone, label, plain_decimal(threshold), limit_text, int(spent), now_us),
            )
            if inserted:
                fired = _fired(plain_decimal(threshold), label, zone, limit_text, int(spent), now_us)
                scope = Scope.from_stored(project, tag, key)
                alerts.append(Alert(str(period), scope, fired=fired, command=rule.command, url=rule.url))
    return alerts


# --- delivery, after commit ----------------------------------------------------------------

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _warn_once(where: str, problem: str) -> None:
    with _warned_lock:
        if where in _warned:
            return
        _warned.add(where)
    warnings.warn(f"budget alert not delivered to {where}: {problem}", CannyWarning, stacklevel=4)


def deliver(alerts: Iterable[Alert], *, timeout: float = ALERT_TIMEOUT) -> None:
    """Run each alert's command and post it to its URL. Never raises: a failure is a
    warning, once per destination per process."""
    for alert in alerts:
        body = json.dumps(alert.payload()).encode()
        if alert.command:
            _run(alert.command, body, timeout)
        if alert.url:
            _post(alert.url, body, timeout)


def _run(command: str, body: bytes, timeout: float) -> None:
    where = f"command {shlex.split(command)[0]!r}"
    try:
        done = subprocess.run(  # noqa: S603 - the user's own configured command, no shell
            shlex.split(command), input=body, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        _warn_once(where, f"still running after {timeout:g} s (stopped)")
    except (OSError, ValueError) as exc:
        _warn_once(where, f"{type(exc).__name__}: {exc}")
    else:
        if done.returncode != 0:
            _warn_once(where, f"exit code {done.returncode}")


def _post(url: str, body: bytes, timeout: float) -> None:
    parts = urlsplit(url)
    where = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked to be http(s)
        url, data=body, method="POST", headers={"content-type": "application/json", "user-agent": "canny-alert"}
    )
    try:
        if parts.scheme not in ("http", "https"):
            raise ValueError("not an http(s) URL")
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read()
    except Exception as exc:  # any failure is a warning: an alert never fails the call
        _warn_once(where, f"{type(exc).__name__}: {exc}")
