"""How the CLI talks: data on stdout, everything else as single lines on stderr.

:func:`cli_errors` is the one place where library errors become an exit code and one
clean line (what happened, the request id, what to do next): never a traceback, and
never the key, which :func:`canny.secrets.redact` scrubs from every line printed here.
The exit codes are the table in :mod:`canny.cli._exit_codes`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO

import click

from canny.cli._exit_codes import exit_code_for
from canny.errors import CannyError
from canny.secrets import redact

if TYPE_CHECKING:
    from canny.result import CallResult
    from canny.usage import Usage

__all__ = ["cli_errors", "echo_err", "error_line", "install_warning_printer", "silence_stdout", "usage_line"]

_secrets_to_hide: list[str] = []


def hide(secret: str) -> None:
    """Register a value (the key in use) that must never be printed."""
    if secret:
        _secrets_to_hide.append(secret)


def echo_err(message: str, *, err_file: TextIO | None = None) -> None:
    """Print one line on stderr, scrubbed of secrets."""
    line = redact(message, *_secrets_to_hide).replace("\n", " ").strip()
    with contextlib.suppress(OSError, ValueError):  # stderr gone (a closed terminal): nowhere to say it
        click.echo(line, file=err_file or sys.stderr)


def silence_stdout() -> None:
    """The reader of stdout went away: send what is left to the null device, so that
    Python's own flush at exit cannot print ``Exception ignored ... BrokenPipeError``."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, sys.stdout.fileno())
        finally:
            os.close(null)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file (a test runner's buffer): nothing will flush it at exit


def error_line(error: CannyError) -> str:
    """``canny: <what happened> [request id] — <what to do>`` on one line."""
    text = str(error)
    hint = error.hint
    return f"canny: {text}" + (f" — {hint}" if hint else "")


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn every failure into one stderr line and its exit code."""
    try:
        yield
    except CannyError as exc:
        echo_err(error_line(exc))
        raise SystemExit(exit_code_for(exc)) from None
    except (click.ClickException, click.exceptions.Exit, click.Abort, SystemExit):
        raise
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM / SIGHUP under stop_on_signals
        from canny.cli._signals import Stopped

        if isinstance(exc, Stopped):
            echo_err(exc.message)
            raise SystemExit(exc.exit_code) from None
        echo_err("canny: interrupted")
        raise SystemExit(130) from None
    except BrokenPipeError:  # `canny ... | head`: the reader has what it wanted
        from canny.cli._exit_codes import EXIT_STDOUT_CLOSED

        silence_stdout()
        raise SystemExit(EXIT_STDOUT_CLOSED) from None
    except Exception as exc:
        echo_err(f"canny: unexpected error: {type(exc).__name__}: {exc} — please report this bug")
        raise SystemExit(1) from None


def install_warning_printer() -> None:
    """Show warnings as ``canny: warning: ...`` lines, once each."""
    seen: set[str] = set()

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            echo_err(f"canny: warning: {text}")

    warnings.showwarning = show
    warnings.simplefilter("default")
    # The SDK's own deprecation notices point at old URLs; canny warns about models itself.
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="anthropic")


@contextmanager
def log_printer(*, verbose: bool = False) -> Iterator[None]:
    """While a command runs, print canny's log records on stderr as ``canny: ...`` lines:
    each wait before a retry; with ``verbose``, also request ids and response headers."""
    import logging

    class _Line(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            echo_err(f"canny: {record.getMessage()}")

    logger = logging.getLogger("canny")
    handler, level = _Line(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def check_known_model(model: str, source: str) -> None:
    """Refuse a model id the price table does not know (a typo would go out, come back
    404 and stay in every report); ``--any-model`` sends one on purpose."""
    from canny.errors import ConfigError
    from canny.pricing import model_info, suggest_models

    if model_info(model) is not None:
        return
    close = suggest_models(model)
    guess = f" (did you mean {close[0]}?)" if close else ""
    where = "" if source == "argument" else f" (from {source})"
    raise ConfigError(
        f"unknown model {model!r}{where}{guess}",
        hint="`canny models` lists the known ones; --any-model sends an id the price table does not know yet",
    )


def _n(value: int) -> str:
    return f"{value:,}"


#: The buckets the usage line always shows (``tokens in/out: 1204/534``); the others
#: (``canny.usage.BUCKETS``) are shown by their label when not zero, cache reads first.
_ALWAYS = ("input", "output")
_FIRST = "cache_read"


def usage_line(usage: Usage, cost: Decimal | None, model: str, *, attempts: int = 1) -> str:
    """``[tokens in/out: 1204/534 · cache read 38,912 · write 1h 856 · $0.0101 · model]``."""
    from canny.pricing import format_usd
    from canny.usage import BUCKETS

    main = [b for b in BUCKETS if b.name in _ALWAYS]
    parts = ["tokens in/out: " + "/".join(str(getattr(usage, b.name)) for b in main)]
    rest = sorted((b for b in BUCKETS if b not in main), key=lambda b: b.name != _FIRST)
    parts += [f"{b.label} {_n(getattr(usage, b.name))}" for b in rest if getattr(usage, b.name)]
    parts.append(format_usd(cost) if cost is not None else "$ unpriced")
    parts.append(model)
    if attempts > 1:
        parts.append(f"{attempts} attempts")
    return "[" + " · ".join(parts) + "]"


def result_usage_line(result: CallResult) -> str:
    return usage_line(result.usage, result.cost, result.model, attempts=result.attempts)
