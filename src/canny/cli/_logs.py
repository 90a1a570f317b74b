"""``canny logs``: the last attempts in the ledger, one line each; ``--follow`` tails it.

Reads only (the ledger's :meth:`tail`); a ledger file that does not exist yet is "nothing
recorded yet", never created. Newest first; with ``--follow`` the rows come in the order
they were written (oldest first, like ``tail -f``) and new ones as they land, until Ctrl-C
(exit 130), SIGTERM (143) or a reader that went away (``| head``: 141).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, tzinfo
from typing import TYPE_CHECKING, Any

import click

from canny.cli._render import cli_errors
from canny.cli._report import _missing_file, _OneLineErrors, _settings, _usage
from canny.errors import ConfigError
from canny.ledger import AttemptRecord, Ledger, open_ledger

if TYPE_CHECKING:
    from canny.usage import Usage

__all__ = ["logs"]

#: How much of a stored prompt or answer a line shows (``--json`` gives all of it).
_TEXT_WIDTH = 200
#: Rows read per poll while following.
_BATCH = 1000
#: Short labels of the two buckets every line shows.
_SHORT = {"input": "in", "output": "out"}


@click.command(cls=_OneLineErrors)
@click.option("-n", "count", type=click.IntRange(min=1), default=20, show_default=True, help="How many attempts.")
@click.option("--json", "as_json", is_flag=True, help="A JSON array (JSON Lines with --follow), amounts as strings.")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new attempts as they are recorded (Ctrl-C ends).")
@click.option(
    "--interval", type=click.FloatRange(min=0.01), default=1.0, show_default=True, help="Seconds between polls."
)
@click.option("--tz", metavar="ZONE", help="Time zone of the times shown (default: config, else UTC).")
@click.option("--ledger", "target", metavar="PATH|URL", help="Ledger to read (default: the configured one).")
def logs(count: int, as_json: bool, follow: bool, interval: float, tz: str | None, target: str | None) -> None:
    """Show the last attempts: time, model, outcome, tokens, cost, project and tags.

    Newest first. The stored prompt and answer are shown too when text storage is on
    (`log_content`). With --follow, rows are printed in the order written and new ones as
    they arrive, until Ctrl-C.
    """
    from canny import reports
    from canny.cli._signals import stop_on_signals

    with cli_errors():
        location, default_tz = _settings()
        location = target or location
        zone = _usage(reports.resolve_tz, tz or default_tz)
        if not follow:
            rows = [] if _missing_file(location) else _read(location, count, None)
            _print_batch([r for _, r in reversed(rows)], as_json=as_json, zone=zone)
            return
        with stop_on_signals():
            _follow(location, count, interval, as_json=as_json, zone=zone)


def _tail(ledger: Ledger, count: int, after: int | None) -> list[tuple[int, AttemptRecord]]:
    tail = getattr(ledger, "tail", None)
    if tail is None:
        raise ConfigError(f"this ledger ({type(ledger).__name__}) cannot list its last rows")
    rows: list[tuple[int, AttemptRecord]] = tail(count, after=after)
    return rows


def _read(location: str, count: int, after: int | None) -> list[tuple[int, AttemptRecord]]:
    ledger = open_ledger(location)
    try:
        return _tail(ledger, count, after)
    finally:
        ledger.close()


def _follow(location: str, count: int, interval: float, *, as_json: bool, zone: tzinfo) -> None:
    """Print the last ``count`` rows, then every new one, polling every ``interval`` seconds."""
    while _missing_file(location):  # nothing recorded yet: wait for the first call
        time.sleep(interval)
    ledger = open_ledger(location)
    try:
        rows, last = _tail(ledger, count, None), 0
        while True:
            for row_id, record in rows:
                click.echo(_json_line(record) if as_json else _line(record, zone))
                last = row_id
            if rows:
                sys.stdout.flush()  # a pipe reader sees each row at once
            if len(rows) < _BATCH:
                time.sleep(interval)
            rows = _tail(ledger, _BATCH, last)
    finally:
        ledger.close()


def _print_batch(records: Sequence[AttemptRecord], *, as_json: bool, zone: tzinfo) -> None:
    if as_json:
        click.echo(json.dumps([_json(r) for r in records], ensure_ascii=False, indent=2))
        return
    if not records:
        click.echo("canny: nothing recorded yet", err=True)
    for record in records:
        click.echo(_line(record, zone))


def _json(record: AttemptRecord) -> dict[str, Any]:
    from canny.reports import export_row

    return export_row(record, include_text=True)


def _json_line(record: AttemptRecord) -> str:
    return json.dumps(_json(record), ensure_ascii=False)


def _line(record: AttemptRecord, zone: tzinfo) -> str:
    """``2026-12-03 14:31:02  claude-sonnet-5-5  ok  in 1,204 · out 534 · cache read 38,912  $0.0101  acme  #a #b``."""
    from canny.pricing import format_usd

    started = record.started_at if record.started_at.tzinfo else record.started_at.replace(tzinfo=UTC)
    outcome = record.outcome + (f" ({record.error_type})" if record.error_type and record.outcome != "ok" else "")
    if record.attempt > 1:
        outcome += f" #{record.attempt}"
    fields = [
        started.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
        record.model,
        outcome,
        _tokens(record.usage),
        format_usd(record.cost_usd),
    ]
    if record.project:
        fields.append(record.project)
    if record.tags:
        fields.append(" ".join(f"#{tag}" for tag in record.tags))
    lines = ["  ".join(fields)]
    if record.prompt_text is not None:
        lines.append("  > " + _short(_prompt(record.prompt_text)))
    if record.response_text is not None:
        lines.append("  < " + _short(record.response_text))
    return "\n".join(lines)


def _tokens(usage: Usage) -> str:
    """``in 1,204 · cache read 38,912 · out 534``: input and output always, the others when not zero."""
    from canny.usage import BUCKETS

    shown = [b for b in BUCKETS if b.name in _SHORT or getattr(usage, b.name)]
    return " · ".join(f"{_SHORT.get(b.name, b.label)} {getattr(usage, b.name):,}" for b in shown)


def _prompt(stored: str) -> str:
    """The last user turn's text of a stored prompt (``{"system", "messages", "tools"}`` JSON)."""
    try:
        messages = json.loads(stored).get("messages") or []
        content = messages[-1]["content"]
    except (ValueError, AttributeError, LookupError, TypeError):
        return stored
    if isinstance(content, str):
        return content
    return " ".join(_texts(content)) or stored


def _texts(blocks: Iterable[Any]) -> list[str]:
    return [str(b.get("text")) for b in blocks if isinstance(b, dict) and b.get("type") == "text"]


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _TEXT_WIDTH else flat[: _TEXT_WIDTH - 1] + "…"
