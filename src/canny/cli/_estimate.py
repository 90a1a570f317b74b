"""``canny estimate``: what a call would cost, before sending it (nothing is sent but a count)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import click

from canny.cli._ask import _read_prompt, request_options
from canny.cli._render import check_known_model, cli_errors, hide, install_warning_printer

__all__ = ["estimate"]


def _usd(value: Decimal | None) -> str:
    from canny.pricing import format_usd

    return format_usd(value) if value is not None else "unpriced"


@click.command()
@request_options
@click.option("--tag", "tags", multiple=True, help="The call's tags: history is the rows carrying all of them.")
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as one JSON object.")
@click.option("--any-model", is_flag=True, help="Estimate for a model id the price table does not know (unpriced).")
def estimate(prompt: str | None, tags: tuple[str, ...], as_json: bool, any_model: bool, **request: Any) -> None:
    """Estimate what asking PROMPT would cost (`-`, or piped input, reads standard input).

    Input tokens come from the API's free count_tokens endpoint (with --offline, the
    embedded emulator's); the worst case adds --max-tokens of output; the expected cost
    adds the median output of the ledger's ok rows of the same model and tags (none when
    there is no history). Money in --json is exact decimal strings, null when unknown.
    """
    install_warning_printer()
    offline, base_url = bool(request["offline"]), request["base_url"]
    if offline and base_url:
        raise click.UsageError("--offline and --base-url cannot be used together")
    with cli_errors():
        from canny.client import Client
        from canny.config import load_settings

        text = _read_prompt(prompt)
        settings = load_settings(profile=request["profile"], model=request["model"], base_url=base_url)
        if not any_model:
            check_known_model(settings.model, settings.model_source)
        with Client(settings=settings, max_tokens=request["max_tokens"], offline=offline, tags=tags) as client:
            hide(client.resolve_key().secret.reveal())
            found = client.estimate(text, system=request["system"])
        if as_json:
            click.echo(json.dumps(found.to_json(), indent=2))
            return
        history = (
            f"{found.expected_output_tokens_p50:,} output tokens (p50; p95 {found.expected_output_tokens_p95:,},"
            f" from {found.history_rows:,} ok rows)"
            if found.expected_output_tokens_p50 is not None and found.expected_output_tokens_p95 is not None
            else "no ok rows of this model and tags in the ledger"
        )
        click.echo(f"model          {found.model}")
        click.echo(f"input          {found.input_tokens:,} tokens  {_usd(found.input_cost)}")
        click.echo(f"worst case     + {found.max_tokens:,} output tokens  {_usd(found.max_cost)}")
        expected = _usd(found.expected_cost) if found.expected_cost is not None else "unknown"
        click.echo(f"expected       {expected}  ({history})")
