"""``canny config path|show``: where canny's files are, and the settings in force."""

from __future__ import annotations

import json
from dataclasses import fields
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from canny.cli._render import cli_errors

__all__ = ["config"]


@click.group()
def config() -> None:
    """Show where canny's files live and the settings in force.

    Settings come from, in order: the command line or library argument, the
    environment, the chosen profile of config.toml, its top level, then the
    defaults (see docs/configuration.md). Edit config.toml to change them.
    """


@config.command("path")
@click.option("--all", "show_all", is_flag=True, help="Every file canny uses, not only config.toml.")
def path(show_all: bool) -> None:
    """Print the path of config.toml (whether or not it exists yet)."""
    with cli_errors():
        from canny.config import config_path

        if not show_all:
            click.echo(str(config_path()))
            return
        for name, where in _files().items():
            click.echo(f"{name:<9} {where}")


def _files() -> dict[str, str]:
    from canny.config import config_dir, config_path, default_ledger
    from canny.ledger import display_location
    from canny.secrets import key_file_path

    def state(file: Path) -> str:
        return f"{file}{'' if file.exists() else '  (not present)'}"

    prices = config_dir() / "prices.toml"
    return {
        "config": state(config_path()),
        "prices": state(prices),
        "ledger": display_location(default_ledger()),
        "key file": state(key_file_path()),
    }


@config.command("show")
@click.option("--profile", help="Show the settings of a [profiles.NAME] table.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(profile: str | None, as_json: bool) -> None:
    """Print every setting in force, as canny resolves it (the key is never shown)."""
    with cli_errors():
        from canny.config import load_settings
        from canny.ledger import display_location

        settings = load_settings(profile=profile)
        values: dict[str, Any] = {}
        for item in fields(settings):
            value = getattr(settings, item.name)
            if item.name == "ledger":
                value = display_location(value)
            values[item.name] = _plain(value)
        if as_json:
            click.echo(json.dumps(values, indent=2))
            return
        for name, value in values.items():
            if isinstance(value, dict):
                for sub, item in value.items():
                    click.echo(f"{name}.{sub} = {_toml(item)}")
            else:
                click.echo(f"{name} = {_toml(value)}")


def _plain(value: Any) -> Any:
    """JSON-ready: Decimals as strings (money is never a float), tuples as lists, dataclasses as dicts."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    return value


def _toml(value: Any) -> str:
    if value is None:
        return "(not set)"
    return json.dumps(value)
