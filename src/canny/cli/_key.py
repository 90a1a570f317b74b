"""``canny key set|status|delete``: the API key in the OS keyring, never on screen."""

from __future__ import annotations

import sys

import click

from canny.cli._render import cli_errors, echo_err

__all__ = ["key"]


@click.group()
def key() -> None:
    """Store, inspect or delete the API key in the OS keyring.

    canny looks for the key in this order: the `api_key` argument (library), the
    ANTHROPIC_API_KEY environment variable, then the OS keyring.
    """


@key.command("set")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input (for scripts).")
def set_key(from_stdin: bool) -> None:
    """Store a key in the OS keyring (typed without echo)."""
    with cli_errors():
        from canny.errors import ConfigError
        from canny.secrets import Secret, set_keyring_key

        if from_stdin or not sys.stdin.isatty():
            value = sys.stdin.readline().strip()
        else:
            value = click.prompt("Anthropic API key", hide_input=True, confirmation_prompt=False).strip()
        if not value:
            raise ConfigError("no key given")
        if not value.startswith("sk-ant-"):
            echo_err("canny: warning: this does not look like an Anthropic key (they start with sk-ant-)")
        set_keyring_key(value)
        echo_err(f"canny: key {Secret(value).masked} stored in the OS keyring")


@key.command("status")
def status() -> None:
    """Say where the key comes from, without showing it."""
    with cli_errors():
        from canny.secrets import resolve_api_key

        found = resolve_api_key()
        if found is None:
            click.echo("no API key: set one with `canny key set` or export ANTHROPIC_API_KEY")
            raise SystemExit(2)
        where = {
            "environment": "the ANTHROPIC_API_KEY environment variable",
            "keyring": "the OS keyring",
            "argument": "an explicit argument",
            "offline": "the offline emulator",
        }[found.source]
        click.echo(f"API key {found.secret.masked} from {where}")


@key.command("delete")
def delete() -> None:
    """Remove the key from the OS keyring."""
    with cli_errors():
        from canny.secrets import delete_keyring_key

        if delete_keyring_key():
            echo_err("canny: key deleted from the OS keyring")
        else:
            echo_err("canny: no key was stored in the OS keyring")
