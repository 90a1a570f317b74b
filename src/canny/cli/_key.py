"""``canny key set|status|delete``: the API key in the OS keyring or a 0600 key file, never on screen."""

from __future__ import annotations

import sys

import click

from canny.cli._render import cli_errors, echo_err

__all__ = ["key"]


@click.group()
def key() -> None:
    """Store, inspect or delete the API key (OS keyring or a 0600 key file).

    canny looks for the key in this order: the `api_key` argument (library), the
    ANTHROPIC_API_KEY environment variable, the OS keyring, then the key file
    (`key` in canny's config directory, readable by you only). On a machine with no
    keyring (a headless server, a container) `canny key set` uses the key file.
    """


@key.command("set")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from standard input (for scripts).")
@click.option(
    "--file",
    "to_file",
    is_flag=True,
    help="Store it in the 0600 key file instead of the OS keyring (the default when there is no keyring).",
)
def set_key(from_stdin: bool, to_file: bool) -> None:
    """Store a key in the OS keyring or the key file (typed without echo)."""
    with cli_errors():
        from canny.errors import ConfigError
        from canny.secrets import Secret, keyring_available, set_key_file, set_keyring_key

        if from_stdin or not sys.stdin.isatty():
            value = sys.stdin.readline().strip()
        else:
            value = click.prompt("Anthropic API key", hide_input=True, confirmation_prompt=False).strip()
        if not value:
            raise ConfigError("no key given")
        if not value.startswith("sk-ant-"):
            echo_err("canny: warning: this does not look like an Anthropic key (they start with sk-ant-)")
        if to_file or not keyring_available():
            path = set_key_file(value)
            why = "" if to_file else " (no OS keyring works here)"
            echo_err(f"canny: key {Secret(value).masked} stored in {path}, readable by you only{why}")
            return
        set_keyring_key(value)
        echo_err(f"canny: key {Secret(value).masked} stored in the OS keyring")


@key.command("status")
def status() -> None:
    """Say where the key comes from, without showing it."""
    with cli_errors():
        from canny.secrets import key_file_path, resolve_api_key

        found = resolve_api_key()
        if found is None:
            echo_err("canny: no API key: set one with `canny key set` or export ANTHROPIC_API_KEY")
            raise SystemExit(2)
        where = {
            "environment": "the ANTHROPIC_API_KEY environment variable",
            "keyring": "the OS keyring",
            "file": f"the key file {key_file_path()}",
            "argument": "an explicit argument",
            "offline": "the offline emulator",
        }[found.source]
        click.echo(f"API key {found.secret.masked} from {where}")


@key.command("delete")
def delete() -> None:
    """Remove the stored key from the OS keyring and the key file."""
    with cli_errors():
        from canny.secrets import delete_key_file, delete_keyring_key, key_file_path

        gone = []
        if delete_keyring_key():
            gone.append("the OS keyring")
        if delete_key_file():
            gone.append(str(key_file_path()))
        if gone:
            echo_err("canny: key deleted from " + " and ".join(gone))
        else:
            echo_err("canny: no key was stored in the OS keyring or the key file")
