"""``canny replay FILE``: audit a recorded response with the code that bills live calls."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from canny.cli._render import cli_errors, echo_err, install_warning_printer, usage_line
from canny.usage import BUCKETS, TOKEN_BUCKETS, Bucket

__all__ = ["replay"]


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("-m", "--model", help="Price as this model (default: the model named in the response).")
@click.option("--at", "at", help="Price with the rates in force on this date (YYYY-MM-DD).")
@click.option("--batch", is_flag=True, help="Price at Batch API rates.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def replay(file: Path, model: str | None, at: str | None, batch: bool, as_json: bool) -> None:
    """Read a recorded SSE body or JSON response FILE exactly as the API sent it.

    Shows the text, stop reason, whether the stream was complete (a missing
    message_stop or an in-band error means it was not), usage in every bucket and cost.
    """
    install_warning_printer()
    with cli_errors():
        from canny.errors import ServerError
        from canny.pricing import cost
        from canny.streaming import parse_body

        raw = sys.stdin.buffer.read() if str(file) == "-" else _read(file)
        try:
            acc = parse_body(raw)
        except (ValueError, UnicodeDecodeError, ServerError) as exc:  # ServerError: a line over 16 MiB
            raise click.BadParameter(f"not an SSE stream or JSON response: {exc}", param_hint="FILE") from None
        when = _date(at)
        name = model or str(acc.message.get("model") or "")
        usage, estimated = acc.billed_usage()
        price = cost(name, usage, batch=batch, at=when, reported=acc.usage_acc.reported) if name else None
        complete = acc.error is None and acc.stopped
        if as_json:
            payload = {
                "model": name or None,
                "text": acc.text,
                "stop_reason": acc.stop_reason,
                "complete": complete,
                "usage": {_json_name(b): getattr(usage, b.name) for b in TOKEN_BUCKETS},
                "cost_usd": None if price is None else str(price),
            }
            if estimated:
                payload["output_tokens_estimated"] = estimated
            tools = {_json_name(b): getattr(usage, b.name) for b in BUCKETS if not b.tokens}
            if any(tools.values()):  # priced too (web search), so shown when present
                payload["server_tool_use"] = tools
            if acc.error is not None:
                payload["error"] = acc.error.get("error")
            click.echo(json.dumps(payload, ensure_ascii=False, indent=2))
            return
        if acc.text:
            click.echo(acc.text)
        status = "complete" if complete else "INCOMPLETE"
        why = ""
        if acc.error is not None:
            err = acc.error.get("error") or {}
            why = f" (in-band error: {err.get('type', 'unknown') if isinstance(err, dict) else err})"
        elif not acc.stopped:
            why = " (no message_stop)"
        echo_err(f"stop reason: {acc.stop_reason or 'none'} · {status}{why}")
        echo_err(usage_line(usage, price, name or "unknown model"))
        if estimated:
            echo_err(f"output tokens {estimated}")


def _json_name(bucket: Bucket) -> str:
    """A bucket's key in the JSON: the API's name for a top-level field or inside a nested
    object (``server_tool_use.web_search_requests``), the ledger column for a cache write
    (the API nests those without a total of their own)."""
    parent, _, name = bucket.api.rpartition(".")
    return bucket.column if parent == "cache_creation" else name


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint="FILE") from None


def _date(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"not a date: {text!r} (use YYYY-MM-DD)", param_hint="--at") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
