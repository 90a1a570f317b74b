"""``canny emulator``: run the local Anthropic-compatible server, or list its faults.

``serve`` prints where it listens (and the ``export`` lines that point the SDK at it) on
stderr, then serves until Ctrl-C, which exits 0. A bad ``--scenario`` file is one line on
stderr and exit code 2. The emulator's web stack is imported only when ``serve`` runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import click

from canny.emulator import FAULTS, Scenario, load_scenario

__all__ = ["emulator"]


class _ScenarioError(click.UsageError):
    """A bad scenario file: one ``Error: ...`` line, exit code 2 (no usage block)."""

    def show(self, file: object = None) -> None:
        click.echo(f"Error: {self.format_message()}", err=True)


@click.group()
def emulator() -> None:
    """Run the local Anthropic-compatible emulator, or list its faults."""


def _describe(scenario: Scenario) -> str:
    parts = []
    if scenario.description:
        parts.append(scenario.description)
    if scenario.steps:
        parts.append(f"{scenario.scripted} scripted request(s)")
    if scenario.random:
        mix = ", ".join(f"{fault} {p:g}" for fault, p in scenario.random)
        parts.append(f"then random (seed {scenario.seed}): {mix}")
    if scenario.batch_seconds:
        parts.append(f"batches take {scenario.batch_seconds:g} s")
    if scenario.files_downloadable:
        parts.append("uploaded files downloadable")
    return "; ".join(parts) or "every request ok"


@emulator.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8787, show_default=True, type=click.IntRange(0, 65535), help="TCP port (0: any free port)."
)
@click.option(
    "--scenario",
    "scenario_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML or JSON file scripting faults for unprefixed requests (see docs/emulator.md).",
)
@click.option("--api-key", default=None, help="Accept only this key (default: any non-empty key).")
@click.option(
    "--chunk-delay",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0.0),
    help="Seconds between streamed text deltas.",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bound port to this file once listening (for CI; pair with --port 0).",
)
def serve(
    host: str, port: int, scenario_file: Path | None, api_key: str | None, chunk_delay: float, port_file: Path | None
) -> None:
    """Serve the Messages API on HOST:PORT until Ctrl-C."""
    scenario = None
    if scenario_file is not None:
        try:
            scenario = load_scenario(scenario_file)
        except ValueError as exc:
            raise _ScenarioError(f"--scenario: {exc}") from None
    from canny.emulator.app import create_app
    from canny.emulator.server import base_url_of, bind, serve_forever

    app = create_app(scenario, api_key=api_key, chunk_delay=chunk_delay)
    try:
        sock = bind(host, port)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    base_url = base_url_of(sock)
    click.echo(f"canny emulator listening on {base_url}", err=True)
    click.echo(f"  scenario: {_describe(scenario or Scenario())}", err=True)
    click.echo(f"  export ANTHROPIC_BASE_URL={base_url}", err=True)
    if api_key is None:
        click.echo("  export ANTHROPIC_API_KEY=sk-ant-emulator  # any non-empty key is accepted", err=True)
    click.echo(f"  fault plans: {base_url}/x/RUN/rate_limit,ok (see `canny emulator faults`)", err=True)
    click.echo("Press Ctrl-C to stop.", err=True)
    if port_file is not None:
        try:
            _write_port(port_file, sock.getsockname()[1])
        except click.ClickException:
            sock.close()
            raise
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises SIGINT after a clean shutdown
        serve_forever(app, sock)
    click.echo("emulator stopped", err=True)


def _write_port(path: Path, port: int) -> None:
    """Write ``port`` to ``path`` atomically (a reader never sees a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(f"{port}\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise click.ClickException(f"cannot write --port-file {str(path)!r}: {exc.strerror or exc}") from None


def _status(name: str) -> str:
    status = FAULTS[name].http_status
    return "-" if status is None else str(status)


@emulator.command()
def faults() -> None:
    """List the fault catalogue: name, HTTP status, what it does."""
    width = max(len(name) for name in FAULTS)
    click.echo(f"{'NAME':<{width}}  STATUS  WHAT IT DOES")
    for name, spec in FAULTS.items():
        click.echo(f"{name:<{width}}  {_status(name):<6}  {spec.summary}")
