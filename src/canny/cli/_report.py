"""``canny report`` and ``canny ledger export|path``: read the ledger, never write to it.

The ledger is the one in the settings (``CANNY_LEDGER``, else ``$CANNY_HOME/ledger.db``,
else the user data dir), or ``--ledger PATH|URL``. A report on a ledger file that does not
exist yet says so and exits 0 without creating one. Errors are one line on stderr: exit 2
for bad usage (a date, a time zone, clashing flags), 1 for a ledger that cannot be read.
"""

from __future__ import annotations

import codecs
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

import click

from canny.cli._advice import advice_options, check_alone, show_advice
from canny.cli._render import cli_errors, echo_err, install_warning_printer
from canny.errors import ConfigError
from canny.ledger import GROUP_BYS, OUTCOMES, Ledger, open_ledger, parse_ledger_target

if TYPE_CHECKING:
    from canny.ledger import GroupBy

__all__ = ["ledger", "report"]


def _one_line_usage_errors(make: Any, info_name: str | None) -> click.Context:
    """Run ``make()`` (a ``make_context``); a usage error becomes one stderr line, exit 2."""
    try:
        context: click.Context = make()
    except click.UsageError as exc:
        if isinstance(exc, click.exceptions.NoArgsIsHelpError):
            raise
        path = exc.ctx.command_path if exc.ctx else f"canny {info_name}"
        echo_err(f"canny: {exc.format_message()} — see `{path} --help`")
        raise click.exceptions.Exit(2) from None
    return context


class _OneLineErrors(click.Command):
    """A command whose usage errors are one stderr line (and exit 2), not a usage block."""

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        make = super().make_context
        return _one_line_usage_errors(lambda: make(info_name, args, parent=parent, **extra), info_name)


class _OneLineGroup(click.Group):
    """The same for a group; its subcommands default to :class:`_OneLineErrors`."""

    command_class = _OneLineErrors

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        make = super().make_context
        return _one_line_usage_errors(lambda: make(info_name, args, parent=parent, **extra), info_name)


def _settings() -> tuple[str, str]:
    """(ledger location, report time zone) from the settings."""
    from canny.config import load_settings

    settings = load_settings()
    return settings.ledger, settings.time_zone


def _location(target: str | None) -> str:
    return target or _settings()[0]


def _missing_file(target: str) -> bool:
    """True for a SQLite ledger path that does not exist (nothing recorded yet)."""
    kind, where = parse_ledger_target(target)  # a bad location is a ConfigError here
    return kind == "sqlite" and not Path(where).expanduser().exists()


def _masked(target: str) -> str:
    kind, where = parse_ledger_target(target)
    if kind == "postgres":
        from canny.ledger.postgres import mask_url

        return mask_url(where)
    return str(Path(where).expanduser())


@contextmanager
def _opened(target: str) -> Iterator[Ledger]:
    ledger_ = open_ledger(target)
    try:
        yield ledger_
    finally:
        ledger_.close()


def _usage(func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a parser; a ValueError becomes a usage error (exit 2), and so does an
    OverflowError (``--since 99999999999d`` reaches before year 1)."""
    try:
        return func(*args, **kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    except OverflowError:
        text = str(args[0])[:40] if args else ""
        raise ConfigError(f"{text!r} is out of the range of dates (years 1 to 9999)") from None


def _range_options(command: Any) -> Any:
    """``--since`` and ``--until``, the range of attempts a command reads (see :func:`_range`)."""
    command = click.option("--until", metavar="WHEN", help="Up to this time (a date includes that whole day).")(command)
    since_help = "From this time on: YYYY-MM-DD, an ISO datetime, today, 7d ..."
    return click.option("--since", metavar="WHEN", help=since_help)(command)


def _range(since: str | None, until: str | None, tz: tzinfo) -> tuple[datetime | None, datetime | None]:
    from canny.reports import parse_when

    start = _usage(parse_when, since, tz=tz) if since else None
    end = _usage(parse_when, until, tz=tz, end=True) if until else None
    if start and end and start >= end:
        raise ConfigError(f"--since ({start.isoformat()}) must be before --until ({end.isoformat()})")
    return start, end


def _color(stream: TextIO) -> bool:
    return not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb" and stream.isatty()


def _blocks(stream: TextIO) -> bool:
    try:
        "█▏".encode(stream.encoding or "ascii")
    except (LookupError, UnicodeEncodeError):
        return False
    return True


def _groupings(by: str) -> tuple[GroupBy, GroupBy | None]:
    """``--by KEY`` or ``--by KEY,KEY`` as (first, second or None); a usage error otherwise."""
    keys = [k.strip() for k in by.split(",")]
    bad = [k for k in keys if k not in GROUP_BYS]
    if bad or len(keys) > 2 or len(set(keys)) < len(keys):
        raise ConfigError(
            f"--by {by!r}: expected one or two different keys of {', '.join(GROUP_BYS)} (e.g. month,model)"
        )
    return cast("GroupBy", keys[0]), cast("GroupBy", keys[1]) if len(keys) > 1 else None


@click.command(cls=_OneLineErrors)
@click.option(
    "--by",
    metavar="KEY[,KEY]",
    default="day",
    show_default=True,
    help=f"How to group attempts: {', '.join(GROUP_BYS)}; two keys (month,model) group by both.",
)
@_range_options
@click.option("--tz", metavar="ZONE", help="Time zone of days, weeks and months (default: config, else UTC).")
@click.option("--project", "projects", multiple=True, metavar="NAME", help="Only this project (repeatable).")
@click.option("--model", "models", multiple=True, metavar="MODEL", help="Only this model id (repeatable).")
@click.option(
    "--tag", "tags", multiple=True, metavar="TAG", help="Only attempts with this tag (repeatable: any of them)."
)
@click.option(
    "--outcome", "outcomes", multiple=True, type=click.Choice(OUTCOMES), help="Only this outcome (repeatable)."
)
@click.option(
    "--include-offline/--exclude-offline",
    default=True,
    show_default=True,
    help="Count the calls made to the local emulator (--offline, tagged `offline`).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", help="Show N groups: the latest periods, else the costliest."
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list (amounts as strings).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the rows as CSV.")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML page.")
@click.option("--reprice", is_flag=True, help="Price every attempt again at today's prices; show the difference.")
@click.option("--savings", is_flag=True, help="Add `saved`: what prompt caching saved against uncached input (slower).")
@click.option("--ledger", "target", metavar="PATH|URL", help="Ledger to read (default: CANNY_LEDGER or the data dir).")
@advice_options
def report(
    by: str,
    since: str | None,
    until: str | None,
    tz: str | None,
    projects: tuple[str, ...],
    models: tuple[str, ...],
    tags: tuple[str, ...],
    outcomes: tuple[str, ...],
    include_offline: bool,
    limit: int | None,
    as_json: bool,
    as_csv: bool,
    html_file: Path | None,
    reprice: bool,
    savings: bool,
    target: str | None,
    what_if: str | None,
    right_size: bool,
) -> None:
    """Summarise the ledger: calls, attempts, tokens, cost, unpriced and failures per group.

    Cost sums priced attempts only; attempts with no price are counted in `unpriced`, never
    as $0. The cache hit rate is cache reads over all input tokens. `--savings` adds the
    net dollars prompt caching saved: reads at the uncached input rate minus what they
    cost, minus the premium paid for cache writes (negative when writes were not repaid).
    Filters combine (AND); a repeated filter keeps any of its values. Calls to the local
    emulator count unless `--exclude-offline`. The table fits the terminal's width.
    """
    from canny import reports
    from canny.cli import _report_render as render
    from canny.ledger import ReportFilter

    install_warning_printer()
    with cli_errors():
        if as_json and as_csv:
            raise ConfigError("choose one of --json and --csv")
        group, then = _groupings(by)
        filters = ReportFilter(projects, models, tags, outcomes, offline=include_offline)
        location, default_tz = _settings()
        location = target or location
        zone = _usage(reports.resolve_tz, tz or default_tz)
        start, end = _range(since, until, zone)
        _spool_line(location)
        views: dict[GroupBy, reports.Report] = {}
        if what_if is not None or right_size:
            check_alone(
                what_if, right_size, as_csv=as_csv, html=html_file is not None, reprice=reprice, savings=savings
            )
            with _maybe_opened(location) as found:
                show_advice(found, what_if=what_if, by=group, since=start, until=end, tz=zone, as_json=as_json)
            return
        if _missing_file(location):
            empty = reports.ReportRow("total")
            result = reports.Report(group, reports.zone_name(zone), start, end, (), empty, savings=savings, then=then)
        else:
            with _opened(location) as opened:
                kwargs: dict[str, Any] = {"since": start, "until": end, "tz": zone, "filters": filters}
                result = reports.build_report(
                    opened, group, reprice=reprice, savings=savings, then=then, limit=limit, **kwargs
                )
                if html_file is not None and not result.is_empty:
                    from canny.cli import _report_html as page_html

                    # The charts show cost, attempts and failures: their reports skip distinct calls.
                    views = page_html.chart_reports(
                        result, lambda g: reports.build_report(opened, g, calls=False, **kwargs)
                    )
        if html_file is not None:
            from canny.cli._report_html import render_html

            page = render_html(result, views)
            try:
                html_file.write_text(page, encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"cannot write {html_file}: {exc.strerror or exc}") from None
            echo_err(f"canny: wrote {html_file}")
        if as_json:
            click.echo(render.render_json(result))
        elif as_csv:
            click.echo(render.render_csv(result), nl=False)
        elif result.is_empty:
            where = " in that range" if (start or end) else " yet"
            echo_err(f"canny: no attempts recorded{where} in the ledger at {_masked(location)}.")
        else:
            out = sys.stdout
            width = shutil.get_terminal_size((100, 24)).columns
            click.echo(render.render_table(result, width=width))
            if result.omitted:
                echo_err(f"canny: {result.omitted} more group(s) not shown (--limit {limit}); the total covers them")
            chart = render.render_bars(result, width=width, color=_color(out), blocks=_blocks(out))
            if chart:
                click.echo("\n" + chart)


def _spool_line(target: str) -> None:
    """One stderr line for each place where rows of this ledger wait outside it (the spool,
    the journals of ended processes): they are not in the report."""
    from canny.ledger import waiting_rows

    try:
        waiting = waiting_rows(target)
    except (OSError, ValueError):
        return
    for _, fact in waiting.facts():
        echo_err(f"canny: {fact}; they go into the ledger the next time a call opens it")


@click.group(cls=_OneLineGroup)
def ledger() -> None:
    """Export the ledger, or show where it lives."""


@ledger.command("path")
@click.option("--ledger", "target", metavar="PATH|URL", help="Ledger to show (default: the configured one).")
def path_command(target: str | None) -> None:
    """Print where the ledger is (a PostgreSQL password is masked)."""
    with cli_errors():
        click.echo(_masked(_location(target)))


@ledger.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@_range_options
@click.option("--tz", metavar="ZONE", help="Time zone for dates in --since/--until (default: config, else UTC).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@click.option("--include-text", is_flag=True, help="Include stored prompt/response text (off by default).")
@click.option("--ledger", "target", metavar="PATH|URL", help="Ledger to read (default: the configured one).")
def export(
    fmt: str,
    since: str | None,
    until: str | None,
    tz: str | None,
    output: Path | None,
    include_text: bool,
    target: str | None,
) -> None:
    """Write every attempt as JSON lines or CSV: ids, times, model, outcome, usage, cost.

    `cost_usd` is an exact decimal string, or null/empty when the attempt is unpriced.
    """
    from canny import reports

    with cli_errors():
        location, default_tz = _settings()
        location = target or location
        zone = _usage(reports.resolve_tz, tz or default_tz)
        start, end = _range(since, until, zone)
        with _output(output) as write, _maybe_opened(location) as opened:
            source: Ledger = _EmptyLedger() if opened is None else opened  # no file yet: CSV has its header
            for chunk in reports.export_bytes(source, fmt, since=start, until=end, include_text=include_text):
                write(chunk)


class _EmptyLedger:
    """A ledger with no attempts (the file does not exist yet)."""

    location = ""

    def record(self, record: Any) -> None:
        raise NotImplementedError

    def records(self, *, since: datetime | None = None, until: datetime | None = None) -> Iterator[Any]:
        return iter(())

    def close(self) -> None:
        return None


@contextmanager
def _maybe_opened(target: str) -> Iterator[Ledger | None]:
    if _missing_file(target):
        yield None
        return
    with _opened(target) as opened:
        yield opened


@contextmanager
def _output(path: Path | None) -> Iterator[Callable[[bytes], object]]:
    """A writer of UTF-8 bytes to ``path`` or stdout. Stdout gets the bytes as they are
    when it takes UTF-8 and writes line breaks as they are; else (another encoding, or
    Windows line ends) they go through its text layer, as any other output does."""
    if path is None:
        stdout = sys.stdout
        buffer = getattr(stdout, "buffer", None)
        encoding = codecs.lookup(stdout.encoding or "ascii").name
        if buffer is not None and encoding == "utf-8" and os.linesep == "\n":
            stdout.flush()
            yield buffer.write
            buffer.flush()
        else:
            yield lambda chunk: stdout.write(chunk.decode())
            stdout.flush()
        return
    try:
        stream = path.open("wb")
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    with stream:
        yield stream.write


@ledger.command("datasette-metadata")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here, not stdout.")
@click.option("--database", metavar="NAME", help="The database's name in Datasette (default: the file's stem).")
@click.option("--ledger", "target", metavar="PATH|URL", help="Ledger to describe (default: the configured one).")
def datasette_metadata_command(output: Path | None, database: str | None, target: str | None) -> None:
    """Print a Datasette metadata.json describing the ledger's views (cost per day and model,
    failures, cache savings, lost attempts); also refreshes the rates the cache_savings view uses.

    Then: `datasette ledger.db -m metadata.json`.
    """
    from canny.cli._datasette import datasette_metadata

    with cli_errors():
        datasette_metadata(_location(target), output=output, database=database)
