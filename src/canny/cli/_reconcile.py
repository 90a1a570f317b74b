"""``canny reconcile``: the ledger against Anthropic's Usage and Cost Admin API, by UTC day
and model, with the drift and its likely cause. Exit code 9 when the drift is over
``--tolerance``."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING

import click

from canny.cli._render import cli_errors

if TYPE_CHECKING:
    from canny.reconcile import Reconciliation, Row

__all__ = ["reconcile"]


def _signed(amount: Decimal) -> str:
    from canny.pricing import format_usd

    return ("+" if amount > 0 else "") + format_usd(amount)


def _token_drift(row: Row) -> str:
    labels = {"input": "in", "cache_write_5m": "w5m", "cache_write_1h": "w1h", "cache_read": "read", "output": "out"}
    parts = [f"{labels.get(k, k)} {v:+,}" for k, v in row.token_drift.items() if v]
    return " ".join(parts) or "-"


def _table(result: Reconciliation) -> None:
    from canny.pricing import format_usd

    head = ("day", "model", "ledger", "provider", "drift", "tokens (provider - ledger)", "likely cause")
    cells = [
        (
            r.day.isoformat(),
            r.model,
            format_usd(r.ledger_cost_usd),
            format_usd(r.provider_cost_usd),
            _signed(r.drift_usd),
            _token_drift(r),
            "; ".join(r.causes) or "-",
        )
        for r in result.rows
    ]
    total = (
        "total",
        f"{result.since} .. {result.until}",
        format_usd(result.ledger_cost_usd),
        format_usd(result.provider_cost_usd),
        _signed(result.drift_usd),
        "",
        "",
    )
    table = [head, *cells, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        left = "  ".join(row[i].ljust(widths[i]) for i in (0, 1))
        money = "  ".join(row[i].rjust(widths[i]) for i in (2, 3, 4))
        click.echo(f"{left}  {money}  {row[5].ljust(widths[5])}  {row[6]}".rstrip())


@click.command()
@click.option("--since", help="First UTC day (YYYY-MM-DD, today, yesterday, 7d ...; default: 6 days ago).")
@click.option("--until", help="Last UTC day, included (default: today).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--base-url", help="Read the Admin API from this server (default: https://api.anthropic.com).")
@click.option("--tolerance", default="0.01", show_default=True, help="Dollars of drift allowed before exit code 9.")
@click.option("--ledger", "target", help="Ledger path or postgresql:// URL (default: CANNY_LEDGER).")
@click.option("--profile", help="Use a [profiles.NAME] table from config.toml.")
def reconcile(
    since: str | None,
    until: str | None,
    as_json: bool,
    base_url: str | None,
    tolerance: str,
    target: str | None,
    profile: str | None,
) -> None:
    """Compare the ledger with what Anthropic bills, by UTC day and model.

    Reads the Usage and Cost Admin API with an Admin API key (ANTHROPIC_ADMIN_KEY, or the
    OS keyring: service canny, user anthropic-admin-key; never printed) and shows per day
    and model the ledger's and the provider's tokens and dollars, the drift (provider
    minus ledger) and its likely cause: calls made outside canny, price changes, unpriced
    models, lost attempts. Exits 9 when the drift of the range, or of any day and model,
    is over --tolerance.
    """
    with cli_errors():
        from datetime import UTC, datetime

        from canny import reconcile as rec
        from canny.config import load_settings, parse_money
        from canny.ledger import open_ledger
        from canny.reports import parse_when

        allowed = parse_money(tolerance, "--tolerance")
        first, after = rec.default_range()
        now = datetime.now(UTC)
        if since:
            first = parse_when(since, tz=UTC, now=now).date()
        if until:
            after = parse_when(until, tz=UTC, now=now, end=True).date()
        settings = load_settings(profile=profile)
        key = rec.resolve_admin_key()
        ledger = open_ledger(target or settings.ledger)
        try:
            result = rec.reconcile(
                ledger, since=first, until=after, admin_key=key, base_url=base_url or rec.DEFAULT_BASE_URL
            )
        finally:
            ledger.close()
        if as_json:
            click.echo(json.dumps(result.to_json(), indent=2))
        else:
            _table(result)
        rec.check_drift(result, allowed)
