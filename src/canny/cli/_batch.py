"""``canny batch``: submit a JSONL file as a Message Batch, follow it, fetch its results.

Results are written as JSONL (to ``-o FILE`` or stdout), each line the API's own with a
``canny`` object (outcome, cost, call id); every result is one ledger row at batch prices.
A progress bar goes to stderr when it is a terminal; a summary line goes there at the end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from canny.cli._ask import stacked
from canny.cli._render import cli_errors, echo_err, hide, install_warning_printer

if TYPE_CHECKING:
    from canny.batches import Batch
    from canny.client import Client

__all__ = ["batch"]


#: The options every subcommand shares: where to send, and which profile.
_route = stacked(
    click.option("--offline", is_flag=True, help="Use the embedded emulator (batches kept in CANNY_HOME)."),
    click.option("--base-url", help="Send to this Anthropic-compatible server (or ANTHROPIC_BASE_URL)."),
    click.option("--profile", help="Use a [profiles.NAME] table from config.toml."),
)


@contextmanager
def _client(offline: bool, base_url: str | None, profile: str | None, **kwargs: Any) -> Iterator[Client]:
    if offline and base_url:
        raise click.UsageError("--offline and --base-url cannot be used together")
    install_warning_printer()
    with cli_errors():
        from canny.client import Client
        from canny.config import load_settings

        settings = load_settings(profile=profile, base_url=base_url)
        with Client(settings=settings, offline=offline, **kwargs) as client:
            hide(client.resolve_key().secret.reveal())
            yield client


def _status_line(batch: Batch) -> str:
    counts = ", ".join(f"{n} {name}" for name, n in batch.request_counts.items() if n)
    return f"{batch.id} {batch.processing_status} ({counts or 'no requests'})"


@click.group()
def batch() -> None:
    """Message Batches: half the price, answered within 24 hours.

    `submit FILE.jsonl` (one {"custom_id": ..., "params": {...}} a line; `-` reads stdin)
    reserves the batch's worst case against your budgets and prints the batch id alone.
    `results ID` writes one JSONL line per result and records each in the ledger, once.
    With --offline, a batch lives in the embedded emulator and its results are kept in
    CANNY_HOME, so `status` and `results` work in later commands too.
    """


def _read_requests(stream: TextIO, name: str) -> list[dict[str, Any]]:
    requests = []
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise click.UsageError(f"{name}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or set(item) != {"custom_id", "params"}:
            raise click.UsageError(f'{name}:{number}: expected {{"custom_id": ..., "params": {{...}}}}')
        requests.append(item)
    if not requests:
        raise click.UsageError(f"{name} holds no requests")
    return requests


@batch.command()
@click.argument("file", type=click.File("r", encoding="utf-8"))
@_route
@click.option("--tag", "tags", multiple=True, help="Tag the ledger rows (repeatable).")
@click.option("--project", help="Project name for the ledger rows and budgets.")
def submit(
    file: TextIO, offline: bool, base_url: str | None, profile: str | None, tags: tuple[str, ...], project: str | None
) -> None:
    """Submit FILE (JSONL) as one batch; print its id."""
    requests = _read_requests(file, file.name)
    with _client(offline, base_url, profile, tags=tags, project=project) as client:
        created = client.batches.create(requests)
        click.echo(created.id)
        echo_err(f"canny: submitted {len(requests)} requests; `canny batch results {created.id} --wait` fetches them")


@batch.command()
@click.argument("batch_id")
@_route
@click.option("--json", "as_json", is_flag=True, help="Print the API's batch object as JSON.")
def status(batch_id: str, offline: bool, base_url: str | None, profile: str | None, as_json: bool) -> None:
    """Show where batch BATCH_ID stands."""
    with _client(offline, base_url, profile) as client:
        found = client.batches.retrieve(batch_id)
        click.echo(json.dumps(found.raw, indent=2) if as_json else _status_line(found))


@batch.command()
@click.argument("batch_id")
@_route
def cancel(batch_id: str, offline: bool, base_url: str | None, profile: str | None) -> None:
    """Ask the API to cancel batch BATCH_ID (requests not yet processed end `canceled`)."""
    with _client(offline, base_url, profile) as client:
        click.echo(_status_line(client.batches.cancel(batch_id)))


@batch.command()
@click.argument("batch_id")
@_route
@click.option("--wait", is_flag=True, help="Wait for the batch to end first.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSONL here.")
def results(
    batch_id: str, offline: bool, base_url: str | None, profile: str | None, wait: bool, output: Path | None
) -> None:
    """Write the results of BATCH_ID as JSONL, recording each in the ledger (once)."""
    with _client(offline, base_url, profile) as client:
        found = client.batches.wait(batch_id) if wait else client.batches.retrieve(batch_id)
        out = output.open("w", encoding="utf-8") if output is not None else sys.stdout
        total, new, cost, unpriced, failed = 0, 0, Decimal(0), 0, 0
        try:
            with _progress(found.total) as advance:
                for item in client.batches.results(batch_id):
                    out.write(json.dumps(item.to_json(), ensure_ascii=False) + "\n")
                    total += 1
                    new += item.recorded
                    failed += item.type != "succeeded"
                    if item.call.cost is None:
                        unpriced += 1
                    else:
                        cost += item.call.cost
                    advance()
        finally:
            if out is not sys.stdout:
                out.close()
        from canny.pricing import format_usd

        extra = f" · {unpriced} unpriced" if unpriced else ""
        echo_err(
            f"[{total} results · {new} recorded now · {failed} not succeeded"
            f" · {format_usd(cost)} at batch prices{extra}]"
        )


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """A one-line progress bar on stderr when it is a terminal (nothing otherwise), erased
    at the end. canny's own: rich is not among its dependencies."""
    stream = sys.stderr
    if not stream.isatty():
        yield lambda: None
        return
    done = 0

    def draw() -> None:
        width = 30
        filled = width * done // total if total else 0
        stream.write(f"\rresults {done:,}/{total:,} [{'#' * filled}{'-' * (width - filled)}]")
        stream.flush()

    def advance() -> None:
        nonlocal done
        done += 1
        draw()

    draw()
    try:
        yield advance
    finally:
        stream.write("\r\033[K")
        stream.flush()
