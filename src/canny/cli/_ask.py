"""``canny ask``: stream an answer to stdout, then one usage-and-cost line on stderr."""

from __future__ import annotations

import gc
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import click

from canny.cli._render import (
    check_known_model,
    cli_errors,
    echo_err,
    hide,
    install_warning_printer,
    log_printer,
    result_usage_line,
    silence_stdout,
)
from canny.cli._signals import stop_on_signals

if TYPE_CHECKING:
    from canny.client import MessageStream

__all__ = ["ask"]


def _read_prompt(prompt: str | None) -> str:
    """The prompt argument; standard input for ``-``, or when no argument is given and
    stdin is not a terminal (``echo hi | canny ask``)."""
    if prompt is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("missing the PROMPT argument (or pipe the prompt on standard input)")
        prompt = "-"
    if prompt == "-":
        text = _read_stdin()
        if not text.strip():
            raise click.UsageError("no prompt on standard input")
        return text
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that are not UTF-8 arrive as lone surrogates
        raise click.UsageError("the prompt is not valid UTF-8 text") from None
    if not prompt.strip():
        raise click.UsageError("the prompt is empty")
    return prompt


def _read_stdin() -> str:
    """All of standard input as UTF-8 text; binary or non-UTF-8 input is a usage error."""
    stream = sys.stdin
    if stream is None:
        return ""
    raw = stream.buffer.read() if hasattr(stream, "buffer") else stream.read().encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise click.UsageError(
            f"standard input holds binary data (a NUL byte at offset {raw.index(0)}); the prompt must be UTF-8 text"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.UsageError(
            f"standard input is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start});"
            " convert it first, e.g. with iconv -t UTF-8"
        ) from None


def stacked(*decorators: Callable[[Any], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One decorator applying ``decorators`` in order (as if written one above the other)."""

    def apply(command: Callable[..., Any]) -> Callable[..., Any]:
        for decorate in reversed(decorators):
            command = decorate(command)
        return command

    return apply


#: PROMPT and the options that say what is asked and where (``ask`` and ``estimate``).
request_options = stacked(
    click.argument("prompt", required=False),
    click.option("-m", "--model", help="Model id or alias (default: CANNY_MODEL, CLAUDE_MODEL, profile, built-in)."),
    click.option("--max-tokens", type=click.IntRange(min=1), help="Most output tokens to allow."),
    click.option("-s", "--system", help="System prompt."),
    click.option("--offline", is_flag=True, help="Answer from the embedded emulator: no key, no network."),
    click.option("--base-url", help="Send to this Anthropic-compatible server (or ANTHROPIC_BASE_URL)."),
    click.option("--profile", help="Use a [profiles.NAME] table from config.toml."),
)


@click.command()
@request_options
@click.option("--no-stream", is_flag=True, help="Make a non-streamed request; print the answer at the end.")
@click.option("--json", "as_json", is_flag=True, help="Print message, outcome, usage and cost as one JSON object.")
@click.option("--max-cost", help="Refuse (or shorten) the call if it could cost more than this many dollars.")
@click.option(
    "--cache",
    type=click.Choice(["auto", "off"]),
    help="Prompt caching: auto marks a long enough system prompt for the cache (default: config, else off).",
)
@click.option(
    "--cache-ttl", type=click.Choice(["5m", "1h"]), help="Lifetime of the cache entries (default: config, else 5m)."
)
@click.option("--fallback-model", help="After a refusal, ask this model once more (both calls are recorded and shown).")
@click.option("--tag", "tags", multiple=True, help="Tag the ledger rows (repeatable).")
@click.option("--project", help="Project name for the ledger rows and budgets.")
@click.option("--log-content", is_flag=True, default=None, help="Store prompt and answer text in the ledger.")
@click.option("--no-ledger", is_flag=True, help="Do not record this call in the ledger.")
@click.option(
    "--any-model",
    is_flag=True,
    help="Send a model id the price table does not know (a model newer than the table); it is recorded unpriced.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also show each attempt's request id and response headers.")
def ask(
    prompt: str | None,
    model: str | None,
    max_tokens: int | None,
    system: str | None,
    offline: bool,
    base_url: str | None,
    profile: str | None,
    no_stream: bool,
    as_json: bool,
    max_cost: str | None,
    cache: Literal["auto", "off"] | None,
    cache_ttl: Literal["5m", "1h"] | None,
    fallback_model: str | None,
    tags: tuple[str, ...],
    project: str | None,
    log_content: bool | None,
    no_ledger: bool,
    any_model: bool,
    verbose: bool,
) -> None:
    """Ask Claude PROMPT (`-`, or no PROMPT with piped input, reads standard input).

    The answer streams to stdout as it arrives; one line with tokens and cost goes to
    stderr. Exit codes: 0 ok, 2 usage/config, 3 auth, 4 budget, 5 refused, 6 interrupted,
    7 transient failure after retries, 8 request rejected, 9 ledger unavailable (nothing
    sent; --no-ledger calls without one); 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP and 141 closed
    stdout cancel the call and record what was billed.
    """
    install_warning_printer()
    with cli_errors(), stop_on_signals(), log_printer(verbose=verbose):
        from canny.client import Client
        from canny.config import load_settings, parse_money
        from canny.errors import APIError, StreamInterrupted

        text = _read_prompt(prompt)
        settings = load_settings(  # the command line over the environment and config.toml
            profile=profile,
            model=model,
            base_url=None if offline else base_url,
            max_tokens=max_tokens,
            project=project,
            tags=tags or None,
            log_content=log_content,
        )
        if not any_model:
            check_known_model(settings.model, settings.model_source)
        limit = parse_money(max_cost, "--max-cost") if max_cost is not None else None
        client = Client(settings=settings, offline=offline, ledger=False if no_ledger else None)
        import anthropic  # noqa: F401 - imported before freezing the heap

        gc.freeze()  # the SDK's ~3k modules need no collection; this halves exit time
        try:
            key = client.resolve_key()
            hide(key.secret.reveal())
            options: dict[str, Any] = {
                "system": system,
                "max_tokens": max_tokens,
                "max_cost": limit,
                "cache": cache,
                "cache_ttl": cache_ttl,
                "fallback_model": fallback_model,
            }
            if no_stream or as_json:
                result = client.create(text, **options)
                try:
                    if as_json:
                        click.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
                    else:
                        _print_text(result.text)
                except BrokenPipeError:  # the call is complete and recorded; say what it cost
                    silence_stdout()
                    echo_err(result_usage_line(result))
                    raise
            else:
                stream: MessageStream | None = None
                shown: list[str] = []
                try:
                    stream = client.stream(text, **options)
                    stream.on_fallback = lambda _refused: _fresh_line(shown)
                    for chunk in stream:
                        sys.stdout.write(chunk)
                        sys.stdout.flush()
                        shown.append(chunk)
                except StreamInterrupted as exc:
                    _end_line(shown)
                    if exc.result is not None:
                        echo_err(result_usage_line(exc.result))
                    raise
                except (KeyboardInterrupt, BrokenPipeError) as exc:
                    # Ctrl-C, SIGTERM, SIGHUP or a closed stdout: cancel the call (its row
                    # says `cancelled`), then say what was billed before it stopped.
                    if stream is not None:
                        stream.close()
                    if isinstance(exc, BrokenPipeError):
                        silence_stdout()
                    else:
                        _end_line_quietly(shown)
                    run = stream.run if stream is not None else None
                    if run is not None and run.attempts:
                        echo_err(result_usage_line(run.result(run.attempts[-1])))
                    if isinstance(exc, BrokenPipeError):
                        echo_err("canny: standard output was closed; the call was cancelled")
                    raise
                _end_line(shown)
                assert stream.result is not None
                result = stream.result
            _finish(result)
        except APIError as exc:
            if exc.result is not None and not isinstance(exc, StreamInterrupted) and not exc.result.usage.is_empty:
                echo_err(result_usage_line(exc.result))
            raise
        finally:
            client.close()


def _print_text(text: str) -> None:
    sys.stdout.write(text)
    if text and not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def _end_line(shown: list[str]) -> None:
    if shown and not shown[-1].endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()


def _fresh_line(shown: list[str]) -> None:
    """A fallback answer starts on a line of its own, after the refused text (if any)."""
    _end_line(shown)
    shown.clear()


def _end_line_quietly(shown: list[str]) -> None:
    """End the partial answer's line, if stdout is still there (a stopped pipeline may be gone)."""
    try:
        _end_line(shown)
    except OSError:
        silence_stdout()


def _finish(result: object) -> None:
    from canny.result import CallResult

    assert isinstance(result, CallResult)
    echo_err(result_usage_line(result))
    if result.outcome == "max_tokens":
        echo_err(
            f"canny: warning: the answer stopped at the max_tokens limit ({result.usage.output} tokens)"
            " — raise --max-tokens for a longer answer"
        )
    if result.outcome == "refused":
        category = f" (category: {result.refusal_category})" if result.refusal_category else ""
        discard = "; discard the partial text above" if result.text else ""
        echo_err(
            f"canny: the model declined to answer{category}{discard}"
            + (f" [request id {result.request_id}]" if result.request_id else "")
            + " — rephrase the request or start a new conversation"
        )
        raise SystemExit(5)
