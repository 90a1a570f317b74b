"""``canny prices`` and ``canny cost``: the price table at a terminal.

``canny prices`` shows the rows in force (every model, or one model with its dated history,
fast-mode rows, modifiers, aliases and retirement). ``canny cost`` prints the exact cost of
a usage object and nothing else, so scripts can read it: a plain decimal such as
``0.000075``, or the word ``unpriced``. Bad input is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import UTC, date, datetime
from typing import IO, Any

import click

from canny.units import plain_decimal

__all__ = ["cost", "prices"]

_RATE_HEADS = ("input", "write 5m", "write 1h", "read", "output")


class _InputError(click.UsageError):
    """A usage error shown as one line (no usage banner): exit code 2."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error: {self.format_message()}", file=file or sys.stderr)


def _parse_at(value: str | None) -> date | datetime | None:
    """``--at``: what ``report --since`` takes (2026-10-07, an ISO datetime, today,
    yesterday, 7d ...), in UTC; a bare date stays a date."""
    if value is None:
        return None
    from canny.reports import parse_when

    text = value.strip()
    try:
        return date.fromisoformat(text)
    except ValueError:
        pass
    try:
        return parse_when(text, tz=UTC)
    except ValueError:
        raise _InputError(
            f"--at: expected a date like 2026-10-07, an ISO datetime, today, yesterday or 7d, got {value!r}"
        ) from None


def _day(at: date | datetime | None) -> date:
    from canny.pricing import utc_day

    return utc_day(at)


def _table() -> Any:
    """The default table; a broken user price file becomes one ``canny:`` line, exit 2."""
    from canny.cli._render import cli_errors
    from canny.pricing import default_table

    with cli_errors():
        return default_table()


# --------------------------------------------------------------------------- canny prices


def _row_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"effective_from": row.effective_from.isoformat(), "kind": row.kind}
    if row.rates is not None:
        out["rates"] = {k: str(v) for k, v in row.rates.as_dict().items()}
    if row.long_prompt is not None:
        out["long_prompt_threshold"] = row.long_prompt_threshold
        out["long_prompt"] = {k: str(v) for k, v in row.long_prompt.as_dict().items()}
    out.update(confidence=row.confidence, source=row.source, note=row.note, origin=row.origin)
    return out


def _info_json(info: Any, day: date) -> dict[str, Any]:
    def iso(d: date | None) -> str | None:
        return None if d is None else d.isoformat()

    return {
        "id": info.id,
        "display_name": info.display_name,
        "family": info.family,
        "aliases": list(info.aliases),
        "status": info.status_at(day),
        "released": iso(info.released),
        "deprecated_at": iso(info.deprecated_at),
        "retires_at": iso(info.retires_at),
        "inference_geo": info.inference_geo,
    }


def _rates_cells(row: Any) -> list[str]:
    if row is None:
        return ["-"] * 5
    if row.kind == "unavailable":
        return ["not available", *[""] * 4]
    if row.kind == "standard":
        return ["billed as standard", *[""] * 4]
    if row.rates is None:
        return ["unpriced", *[""] * 4]
    return [str(v) for v in row.rates.as_dict().values()]


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _show_all(table: Any, day: date, as_json: bool) -> None:
    from canny.pricing import row_at

    if as_json:
        models = []
        for entry in table.models.values():
            row = row_at(entry.prices, day)
            item = _info_json(entry.info, day)
            item["in_force"] = None if row is None else _row_json(row)
            models.append(item)
        click.echo(json.dumps({"version": table.version, "at": day.isoformat(), "models": models}, indent=2))
        return
    click.echo(f"price table {table.version}; USD per million tokens, rows in force on {day}")
    lines = [["model", *_RATE_HEADS, "status"]]
    for entry in table.models.values():
        row = row_at(entry.prices, day)
        mark = " *" if row is not None and row.confidence != "official" else ""
        lines.append([entry.info.id + mark, *_rates_cells(row), entry.info.lifecycle(day)])
        if row is not None and row.long_prompt is not None:
            cells = [str(v) for v in row.long_prompt.as_dict().values()]
            lines.append([f"  prompt > {row.long_prompt_threshold:,}", *cells, ""])
    for text in _columns(lines):
        click.echo(text)
    click.echo("* third-party figure, UNCONFIRMED on an official page; `canny prices --model M` for sources")


def _show_one(table: Any, entry: Any, day: date, as_json: bool) -> None:
    from canny.pricing import row_at

    info = entry.info
    current = row_at(entry.prices, day)
    current_fast = row_at(entry.fast, day)
    fee = table.web_search_fee(day)
    modifiers = {
        "batch": str(table.batch),
        "inference_geo_us": str(table.inference_geo_us) if info.inference_geo else None,
        "fast_mode": bool(entry.fast),
        "web_search_per_request": None if fee is None else str(fee),
    }
    if as_json:
        out = _info_json(info, day)
        out.update(
            version=table.version,
            at=day.isoformat(),
            note=info.note,
            prices=[_row_json(r) for r in entry.prices],
            fast=[_row_json(r) for r in entry.fast],
            in_force=None if current is None else current.effective_from.isoformat(),
            fast_in_force=None if current_fast is None else current_fast.effective_from.isoformat(),
            modifiers=modifiers,
        )
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"{info.id}  {info.display_name}" + (f"  ({info.family})" if info.family else ""))
    click.echo(f"aliases: {', '.join(info.aliases) or '-'}")
    click.echo(f"status: {info.lifecycle(day)}" + (f"; released {info.released}" if info.released else ""))
    if info.note:
        click.echo(f"note: {info.note}")
    for title, rows, now in (("prices", entry.prices, current), ("fast mode (speed=fast)", entry.fast, current_fast)):
        if not rows:
            continue
        click.echo(f"\n{title}, USD per million tokens (> = in force on {day}):")
        lines = [["", "from", *_RATE_HEADS, "confidence"]]
        notes: list[str] = []
        for row in rows:
            confidence = row.confidence if row.kind == "priced" else ""
            lines.append(["> " if row is now else "  ", str(row.effective_from), *_rates_cells(row), confidence])
            if row.long_prompt is not None:
                cells = [str(v) for v in row.long_prompt.as_dict().values()]
                lines.append(["", f"prompt > {row.long_prompt_threshold:,}", *cells, ""])
            detail = "; ".join(x for x in (row.source, row.note) if x)
            notes.append(f"  {row.effective_from}: {detail}" if detail else "")
        for text in _columns(lines):
            click.echo(text)
        for text in filter(None, notes):
            click.echo(text)
    if not entry.fast:
        click.echo("\nfast mode: not offered (speed='fast' is rejected)")
    click.echo("\nmodifiers:")
    click.echo(f"  batch: x{table.batch} on every token bucket (not with fast mode)")
    geo = f"x{table.inference_geo_us} on every token bucket" if info.inference_geo else "not accepted by this model"
    click.echo(f"  inference_geo=us: {geo}")
    click.echo(f"  web search: {'$' + str(fee) + ' per request' if fee is not None else 'unpriced'}; web fetch: free")
    click.echo("  code execution: billed by container time, not priced from usage")
    click.echo(f"price table {table.version}")


@click.command()
@click.option("--model", "-m", "model", metavar="MODEL", help="One model (id or alias), with its history.")
@click.option("--at", "at_text", metavar="DATE", help="Show the rows in force on DATE (default: today, UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def prices(model: str | None, at_text: str | None, as_json: bool) -> None:
    """Show the price rows that apply: every model, or one with its dated history."""
    day = _day(_parse_at(at_text))
    table = _table()
    if model is None:
        _show_all(table, day, as_json)
        return
    entry = table.entry(model)
    if entry is None:
        raise _InputError(f"--model: unknown model {model!r}; `canny prices` lists the known ones")
    _show_one(table, entry, day, as_json)


# --------------------------------------------------------------------------- canny cost


def _read_usage(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise _InputError(f"--usage: cannot read {text[1:]}: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise _InputError(f"--usage: {text[1:]} is not UTF-8 text (byte {exc.start} is invalid)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _InputError(f"--usage: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except (ValueError, RecursionError) as exc:  # a number of over 4,300 digits; nesting too deep
        reason = "nested too deeply" if isinstance(exc, RecursionError) else "a number is too long"
        raise _InputError(f"--usage: not valid JSON ({reason})") from None
    if not isinstance(data, dict):
        raise _InputError("--usage: expected a JSON object (a usage object, or a message with a usage)")
    return data


def _check_fields(usage: dict[str, Any]) -> None:
    """A misspelt field would price as 0 tokens: name it, with the nearest known one."""
    import difflib

    from canny.pricing import known_usage_fields, unknown_usage_fields

    unknown = unknown_usage_fields(usage)
    if not unknown:
        return
    known = known_usage_fields()
    close = difflib.get_close_matches(unknown[0], known, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known fields: {', '.join(known)}"
    listed = ", ".join(repr(name) for name in unknown)
    raise _InputError(f"--usage: unknown field{'s' if len(unknown) > 1 else ''} {listed}{hint}")


@click.command()
@click.option("--model", "-m", "model", metavar="MODEL", help="Model id or alias (default: the message's model).")
@click.option("--usage", "usage_text", required=True, metavar="JSON", help="Usage JSON; '-' reads stdin, @FILE a file.")
@click.option("--batch", is_flag=True, help="Priced as a Batch API request.")
@click.option("--geo", type=click.Choice(["global", "us"]), help="inference_geo of the request.")
@click.option("--speed", type=click.Choice(["standard", "fast"]), help="speed of the request.")
@click.option("--at", "at_text", metavar="DATE", help="Price with the rows in force on DATE (default: now).")
def cost(
    model: str | None, usage_text: str, batch: bool, geo: str | None, speed: str | None, at_text: str | None
) -> None:
    """Print the exact cost in USD of a usage object (or `unpriced`), and nothing else.

    USAGE is the API's usage object (input_tokens, cache_creation ...), canny's buckets
    (input, cache_write_1h ...), or a whole message with a "usage" and a "model".
    """
    from canny.pricing import cost as price

    at = _parse_at(at_text)
    data = _read_usage(usage_text)
    if isinstance(data.get("usage"), dict):
        model = model or (data["model"] if isinstance(data.get("model"), str) else None)
        data = data["usage"]
    if not model:
        raise _InputError("--model: required (the usage JSON names no model)")
    _check_fields(data)
    table = _table()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            amount = price(model, data, batch=batch, inference_geo=geo, speed=speed, at=at, table=table)
        except ValueError as exc:
            raise _InputError(str(exc)) from None
        except ArithmeticError:  # decimal overflow: token counts no real usage reaches
            raise _InputError("--usage: token counts too large to price") from None
    for warning in caught:
        click.echo(f"canny: {warning.message}", err=True)
    click.echo("unpriced" if amount is None else plain_decimal(amount))
