"""``canny budget set|show|reset``: daily and monthly budgets stored in the ledger.

Stored budgets bind every process and machine that uses the same ledger. ``show`` also
lists the budgets of the active config profile (``[profiles.NAME.budget]``), which bind
only the processes that load that profile.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import click

from canny.cli._render import cli_errors, echo_err
from canny.ledger import InflightLedger

if TYPE_CHECKING:
    from canny.budget import Budget, BudgetStatus, Period
    from canny.budget.alerts import AlertRule, FiredAlert
    from canny.ledger import Ledger

__all__ = ["budget"]


@contextmanager
def _ledger(target: str | None, profile: str | None) -> Iterator[tuple[Ledger, Any]]:
    from canny.config import load_settings
    from canny.ledger import open_ledger

    settings = load_settings(profile=profile)
    ledger = open_ledger(target or settings.ledger)
    try:
        yield ledger, settings
    finally:
        ledger.close()


def _key(value: str | None) -> str | None:
    """A key fingerprint; ``current`` means the key canny would use now."""
    if value != "current":
        return value
    from canny.errors import MissingKeyError
    from canny.secrets import resolve_api_key

    found = resolve_api_key()
    if found is None:
        raise MissingKeyError("--key current: no API key found")
    return found.secret.fingerprint


_ledger_option = click.option("--ledger", "target", help="Ledger path or postgresql:// URL (default: CANNY_LEDGER).")
_profile_option = click.option("--profile", help="Use a [profiles.NAME] table from config.toml.")
_scope_options = [
    click.option("--project", help="Only calls of this project."),
    click.option("--tag", help="Only calls with this tag."),
    click.option("--key", help="Only calls made with this key: its fingerprint, or `current`."),
]


def _scoped(func: Any) -> Any:
    for option in reversed(_scope_options):
        func = option(func)
    return func


@click.group()
def budget() -> None:
    """Set, show or reset spending budgets.

    A budget caps what calls may spend per day or per month, in a time zone, for all
    calls or those of one project, tag or key. Before each call canny reserves its worst
    case; a call that does not fit gets a lower max_tokens or is refused (exit code 4)
    before anything is sent. Budgets live in the ledger, so every process sharing it
    shares them.
    """


@budget.command("set")
@click.option("--day", help="Limit per day, in dollars.")
@click.option("--month", help="Limit per month, in dollars.")
@_scoped
@click.option("--tz", "time_zone", help="IANA time zone of the periods (default: the profile's time_zone, or UTC).")
@click.option("--alert-at", help="Alert when spend reaches these percentages of the limit, e.g. 50,80,100.")
@click.option("--alert-command", help="Run this command (figures as JSON on its stdin) for each alert.")
@click.option("--alert-url", help="POST each alert's figures as JSON to this URL.")
@click.option("--no-alerts", is_flag=True, help="Remove the budget's alerts.")
@_ledger_option
@_profile_option
def set_budget(
    day: str | None,
    month: str | None,
    project: str | None,
    tag: str | None,
    key: str | None,
    time_zone: str | None,
    alert_at: str | None,
    alert_command: str | None,
    alert_url: str | None,
    no_alerts: bool,
    target: str | None,
    profile: str | None,
) -> None:
    """Set (or replace) the daily and/or monthly budget of a scope.

    With --alert-at, each threshold fires once per period, however many processes share
    the budget: --alert-command runs (the figures as JSON on its stdin; split into words
    like a shell, not run by one) and/or --alert-url gets a JSON POST. Without --alert-at
    a budget keeps the alerts it had.
    """
    with cli_errors():
        from canny import budget as budgets
        from canny.config import parse_money
        from canny.pricing import format_usd

        if day is None and month is None:
            raise click.UsageError("give --day, --month or both")
        if no_alerts and (alert_at or alert_command or alert_url):
            raise click.UsageError("--no-alerts takes no other alert option")
        if (alert_command or alert_url) and not alert_at:
            raise click.UsageError("--alert-command and --alert-url need --alert-at")
        pairs: tuple[tuple[Period, str | None], ...] = (("day", day), ("month", month))
        limits = {p: parse_money(v, f"--{p}") for p, v in pairs if v is not None}
        with _ledger(target, profile) as (ledger, settings):
            zone = time_zone or settings.time_zone
            scope = budgets.Scope(project, tag, _key(key))
            for period, limit in limits.items():
                found = budgets.set_budget(
                    ledger, period=period, limit=limit, scope=scope, time_zone=zone,
                    alert_at=() if no_alerts else alert_at, alert_command=alert_command, alert_url=alert_url,
                )  # fmt: skip
                echo_err(f"canny: {period} budget for {found.scope}: {format_usd(found.limit)} per {period} ({zone})")


def _alerts(rule: AlertRule | None, fired: list[FiredAlert]) -> dict[str, Any] | None:
    if rule is None and not fired:
        return None
    return {
        "thresholds": [str(t) for t in rule.thresholds] if rule else [],
        "command": rule.command if rule else None,
        "url": rule.url if rule else None,
        "fired": [
            {"threshold": str(f.threshold), "spent": str(f.spent), "fired_at": f.fired_at.isoformat()} for f in fired
        ],
    }


def _alert_cell(rule: AlertRule | None, fired: list[FiredAlert]) -> str:
    """``50%✓ 80%✓ 100%``: each threshold, ticked once it fired this period."""
    done = {f.threshold for f in fired}
    shown = sorted(set(rule.thresholds if rule else ()) | done)
    return " ".join(f"{t}%" + ("✓" if t in done else "") for t in shown) or "-"


def _row(line: BudgetStatus, alerts: dict[str, Any] | None = None) -> dict[str, Any]:
    b = line.budget
    return {
        "period": b.period,
        **b.scope.as_dict(),
        "time_zone": b.time_zone,
        "source": b.source,
        "window": line.window.label,
        "window_start": line.window.start.isoformat(),
        "window_end": line.window.end.isoformat(),
        "limit": str(b.limit),
        "spent": str(line.spent),
        "reserved": str(line.reserved),
        "headroom": str(line.headroom),
        "alerts": alerts,
    }


@budget.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_ledger_option
@_profile_option
def show(as_json: bool, target: str | None, profile: str | None) -> None:
    """List each budget's limit, spent, reserved and headroom in its current period.

    Reserved includes the slices of headroom that busy processes hold to reserve from in
    memory; their spend reaches "spent" at least once a second while they run."""
    with cli_errors():
        from datetime import UTC, datetime

        from canny import budget as budgets
        from canny.budget.limits import as_ledger, dollars
        from canny.budget.slices import held_slices
        from canny.pricing import format_usd

        with _ledger(target, profile) as (ledger, settings):
            chosen: list[Budget] = budgets.stored_budgets(ledger) + budgets.profile_budgets(settings)
            lines = budgets.budget_status(ledger, chosen)
            held, expired, next_end = budgets.reservations_in_flight(ledger)
            sliced, sliced_pico, slice_end_us = held_slices(as_ledger(ledger))
            alerts = [
                budgets.budget_alerts(ledger, x.budget) if x.budget.source == "ledger" else (None, []) for x in lines
            ]
        if as_json:
            reservations = {
                "held": held,
                "expired": expired,
                "next_lease_end": None if next_end is None else next_end.isoformat(),
            }
            slice_end = None if slice_end_us is None else datetime.fromtimestamp(slice_end_us / 1e6, UTC)
            slices_held = {
                "held": sliced,
                "amount_usd": str(dollars(sliced_pico)),
                "next_lease_end": None if slice_end is None else slice_end.isoformat(),
            }
            rows = [_row(x, _alerts(*a)) for x, a in zip(lines, alerts, strict=True)]
            click.echo(json.dumps({"budgets": rows, "reservations": reservations, "slices": slices_held}, indent=2))
            return
        if not lines:
            echo_err("canny: no budgets: set one with `canny budget set --day 5` (dollars per day)")
            return
        cells = [
            (
                f"{x.budget.period} · {x.budget.scope}" + (" (profile)" if x.budget.source == "profile" else ""),
                f"{x.window.label} {x.budget.time_zone}",
                *(format_usd(v) for v in (x.budget.limit, x.spent, x.reserved, x.headroom)),
            )
            for x in lines
        ]
        head: tuple[str, ...] = ("budget", "period", "limit", "spent", "reserved", "headroom")
        if any(rule or fired for rule, fired in alerts):
            head += ("alerts",)
            cells = [(*row, _alert_cell(*a)) for row, a in zip(cells, alerts, strict=True)]
        widths = [max(len(row[i]) for row in [head, *cells]) for i in range(len(head))]
        for row in [head, *cells]:
            left = "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:2]))
            right = "  ".join(cell.rjust(widths[i + 2]) for i, cell in enumerate(row[2:]))
            click.echo(f"{left}  {right}")
        if held:
            when = next_end.strftime("%Y-%m-%d %H:%M:%S UTC") if next_end else "?"
            click.echo(f"{held} reservation(s) held by calls in flight; the first lease ends {when}")
        if sliced:
            click.echo(
                f"{sliced} slice{'s' if sliced > 1 else ''} of headroom held by running processes "
                f"({format_usd(dollars(sliced_pico))}, counted as reserved; their spend is written back "
                "at least once a second, and the rest given back when they stop)"
            )


@budget.command("reset")
@click.option("--reservations", is_flag=True, help="End every in-flight reservation instead of removing budgets.")
@click.option("--period", type=click.Choice(["day", "month"]), help="Only budgets of this period.")
@_scoped
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@_ledger_option
@_profile_option
def reset(
    reservations: bool,
    period: str | None,
    project: str | None,
    tag: str | None,
    key: str | None,
    yes: bool,
    target: str | None,
    profile: str | None,
) -> None:
    """Remove stored budgets (all, or those matching every option given), or with
    --reservations end the reservations of calls in flight.

    Ending reservations is for after a crash, when no call is really running: each is
    charged what the ledger holds for its call, as if its lease had run out, and a call
    that was still running is charged in full when it ends. Budgets from a config profile
    are removed by editing config.toml.
    """
    with cli_errors():
        from canny import budget as budgets

        with _ledger(target, profile) as (ledger, _settings):
            if reservations:
                if period or project or tag or key:
                    raise click.UsageError("--reservations ends every reservation; it takes no scope options")
                held, _expired, _next = budgets.reservations_in_flight(ledger)
                running = len(ledger.in_flight()) if isinstance(ledger, InflightLedger) else 0
                if (held or running) and not yes:
                    _confirm(f"End {held} reservation(s) and record {running} attempt(s) in flight as lost?")
                lost, ended = budgets.clear_in_flight(ledger)
                echo_err(f"canny: {ended} reservation(s) ended, {lost} attempt(s) in flight recorded as lost")
                return
            wanted = cast("Period | None", period)
            matching = budgets.Scope(project, tag, _key(key))  # a filter: Scope.selects
            chosen = budgets.matching_budgets(ledger, period=wanted, matching=matching)
            if not chosen:
                echo_err("canny: no stored budget matches; nothing to remove")
                return
            if not yes:
                listed = "; ".join(f"{b.period} {b.scope}" for b in chosen)
                _confirm(f"Remove {len(chosen)} budget(s): {listed}?")
            removed = budgets.remove_budgets(ledger, period=wanted, matching=matching)
            echo_err(f"canny: removed {len(removed)} budget(s)")


def _confirm(question: str) -> None:
    """Ask; a "no" ends the command (exit 1), and no answer at all (no terminal, stdin at
    its end) says how to confirm without one."""
    try:
        agreed = click.confirm(question, err=True)
    except click.Abort:
        raise click.UsageError("no answer on standard input, so nothing was changed; pass -y to confirm") from None
    if not agreed:
        echo_err("canny: nothing was changed")
        raise SystemExit(1)
