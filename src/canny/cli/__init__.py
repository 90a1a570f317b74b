"""The ``canny`` command line: a click group whose commands are imported on first use.

``canny --help`` imports only click and this module; each command's module (and whatever
heavy library it needs: the SDK, the emulator's web stack, psycopg) is imported when that
command runs. Library errors are turned into one clean stderr line and an exit code in
:mod:`canny.cli._render`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

__all__ = ["main"]

#: command name -> "module:attribute"; modules live in this package.
COMMANDS: dict[str, tuple[str, str]] = {
    "ask": ("canny.cli._ask:ask", "Ask Claude; stream the answer, then a usage-and-cost line."),
    "key": ("canny.cli._key:key", "Store, inspect or delete the API key (OS keyring or a 0600 key file)."),
    "models": ("canny.cli._models:models", "List the models canny knows, with prices and retirement dates."),
    "doctor": ("canny.cli._models:doctor", "Check configuration, key, ledger and connectivity."),
    "emulator": ("canny.cli._emulator:emulator", "Run the local Anthropic-compatible emulator."),
    "prices": ("canny.cli._prices:prices", "Show the price rows that apply to a model."),
    "cost": ("canny.cli._prices:cost", "Price a usage object; prints the dollar figure alone."),
    "replay": ("canny.cli._replay:replay", "Read a recorded SSE or JSON response; show text, usage, cost."),
    "report": ("canny.cli._report:report", "Summarise the ledger by day, model, tag, project or outcome."),
    "ledger": ("canny.cli._report:ledger", "Export the ledger, or show where it lives."),
    "budget": ("canny.cli._budget:budget", "Set, show or reset spending budgets."),
    "config": ("canny.cli._config:config", "Show where canny's files live and the settings in force."),
    "reconcile": ("canny.cli._reconcile:reconcile", "Compare the ledger with Anthropic's usage and cost reports."),
    "logs": ("canny.cli._logs:logs", "Show the last attempts, one line each; --follow tails new ones."),
    "estimate": ("canny.cli._estimate:estimate", "Estimate a call's cost before sending it."),
    "batch": ("canny.cli._batch:batch", "Submit, follow, fetch or cancel a Message Batch (half price)."),
}


class LazyGroup(click.Group):
    """A group that imports a command's module only when the command is used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module_name, attr = spec[0].split(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Like click's, but usage errors are one stderr line (``canny: ... — see --help``)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # `canny`, `canny budget`: the help
            click.echo(exc.ctx.get_help() if exc.ctx is not None else self.get_help(click.Context(self)))
            _exit(0)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "canny"
            _fail(f"{exc.format_message()} — see `{where} --help`", exc.exit_code)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        except KeyboardInterrupt:  # Ctrl-C outside a command's own handling (while importing it)
            _fail("interrupted", 130)
        except BrokenPipeError:  # `canny ... | head`: the reader has what it wanted
            _exit(_stdout_closed_code())
        except SystemExit as exc:
            # click turns a write to a closed stdout into a quiet exit 1; say it as `| head` does
            _exit(_stdout_closed_code() if exc.code == 1 and _stdout_reader_gone() else exc.code)
        return _exit(rv if isinstance(rv, int) else 0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table above, so `canny --help` imports no command module.
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """``--version``; the version is looked up only then (importlib.metadata costs ~50 ms)."""
    if value and not ctx.resilient_parsing:
        from canny import __version__

        click.echo(f"canny, version {__version__}")
        ctx.exit()


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_version, help="Show the version and exit."
)
def main() -> None:
    """Production-grade, cost-aware calls to Claude.

    Every call streams, retries safely, is priced to the micro-dollar and recorded in a
    ledger. Try `canny ask --offline "hello"`: it needs no key and no network.
    """


def _fail(message: str, code: int) -> NoReturn:
    from canny.secrets import redact

    click.echo("canny: " + redact(message).replace("\n", " "), err=True)
    _exit(code)


def _stdout_closed_code() -> int:
    """141, as a shell reports SIGPIPE (imported only on that path)."""
    from canny.cli._exit_codes import EXIT_STDOUT_CLOSED

    return EXIT_STDOUT_CLOSED


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe or socket whose reader has closed it."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


def _exit(code: int | str | None) -> NoReturn:
    """Exit with ``code`` once stdout is flushed; a reader that went away (``| head``) is
    exit 141 with no ``Exception ignored ... BrokenPipeError`` from Python's own flush."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        from canny.cli._render import silence_stdout

        silence_stdout()
        if code in (0, None):
            code = _stdout_closed_code()
    except (OSError, ValueError):
        pass  # stdout closed or unusable: nothing more can be said on it
    sys.exit(code)


def run(argv: list[str] | None = None) -> Any:
    """Entry point for ``python -m canny`` and the console script."""
    return main.main(args=argv, prog_name="canny")
