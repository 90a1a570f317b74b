"""``canny models`` and ``canny doctor``: what canny knows, and whether it can work here."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from typing import Any

import click

from canny.cli._render import cli_errors, echo_err, hide

__all__ = ["doctor", "models"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per model, in a list.")
@click.option("--all", "show_all", is_flag=True, help="Include retired models.")
def models(as_json: bool, show_all: bool) -> None:
    """List the models canny knows: aliases, prices per million tokens, retirement."""
    with cli_errors():
        from canny.pricing import known_models, rates

        today = date.today()
        rows: list[dict[str, object]] = []
        info_aliases: dict[str, list[str]] = {}
        for info in known_models():
            retired = info.is_retired(today)
            if retired and not show_all:
                continue
            r = rates(info.id)
            info_aliases[info.id] = list(info.aliases)
            rows.append(
                {
                    "id": info.id,
                    "name": info.display_name,
                    "aliases": list(info.aliases),
                    "input": None if r is None else str(r.input),
                    "output": None if r is None else str(r.output),
                    "cache_read": None if r is None else str(r.cache_read),
                    "retires_at": info.retires_at.isoformat() if info.retires_at else None,
                    "status": info.status_at(today),
                }
            )
        if as_json:
            click.echo(json.dumps(rows, indent=2))
            return
        width = max((len(str(row["id"])) for row in rows), default=10)
        statuses = {info.id: info.lifecycle(today) for info in known_models()}
        status_width = max((len(statuses[str(row["id"])]) for row in rows), default=8)
        click.echo(f"{'model':<{width}}  {'in $/MTok':>9}  {'out $/MTok':>10}  {'status':<{status_width}}  aliases")
        for row in rows:
            price_in = "unpriced" if row["input"] is None else f"${row['input']}"
            price_out = "unpriced" if row["output"] is None else f"${row['output']}"
            status = statuses[str(row["id"])]
            aliases = ", ".join(info_aliases[str(row["id"])])
            line = f"{row['id']!s:<{width}}  {price_in:>9}  {price_out:>10}  {status:<{status_width}}  {aliases}"
            click.echo(line.rstrip())


@click.command()
@click.option("--offline", is_flag=True, help="Check against the embedded emulator instead of the API.")
@click.option("--profile", help="Use a [profiles.NAME] table from config.toml.")
def doctor(offline: bool, profile: str | None) -> None:
    """Check configuration, key, model, ledger and connectivity; say what to fix."""
    with cli_errors():
        from canny.config import config_path, load_settings
        from canny.errors import CannyError
        from canny.secrets import resolve_api_key

        problems = 0

        def line(ok: bool, text: str) -> None:
            nonlocal problems
            problems += 0 if ok else 1
            click.echo(f"{'ok ' if ok else 'FIX'}  {text}")

        path = config_path()
        try:
            settings = load_settings(profile=profile)
            line(True, f"config: {path}{'' if path.exists() else ' (not present; defaults apply)'}")
        except CannyError as exc:
            line(False, f"config: {exc}")
            raise SystemExit(2) from None
        key = None
        try:
            key = None if offline else resolve_api_key()
        except CannyError as exc:
            line(False, f"key: {exc}")
        if offline:
            line(True, "key: not needed offline")
        elif key is None:
            line(False, "key: none found (`canny key set`, or export ANTHROPIC_API_KEY)")
        else:
            hide(key.secret.reveal())
            line(True, f"key: {key.secret.masked} from {key.source}")
        line(True, _key_store())
        try:
            from canny.client import check_model

            model = check_model(settings.model)
            line(True, f"model: {model} (from {settings.model_source})")
        except CannyError as exc:
            line(False, f"model: {exc}")
        opened = False
        try:
            from canny.ledger import open_ledger

            ledger = open_ledger(settings.ledger)
            line(True, f"ledger: {ledger.location}")
            ledger.close()
            opened = True
        except CannyError as exc:
            line(False, f"ledger: {exc}")
        _check_spool(settings.ledger, opened, line)
        if offline or key is not None:
            _check_api(settings.base_url, key.secret.reveal() if key else None, offline, line)
        if problems:
            echo_err(f"canny: {problems} problem(s) found")
            raise SystemExit(2)


def _key_store() -> str:
    """Which store `canny key set` writes to here, and why."""
    from canny.secrets import key_file_path, keyring_available

    if keyring_available():
        return "key store: the OS keyring (`canny key set --file` uses the key file instead)"
    return f"key store: no OS keyring works here; `canny key set` writes the 0600 key file {key_file_path()}"


def _check_spool(target: str, opened: bool, report: Callable[[bool, str], None]) -> None:
    """Rows that could not be written after billed calls, waiting for the ledger; and
    journals that ended processes left for other ledgers."""
    from canny.ledger import waiting_rows

    try:
        waiting = waiting_rows(target, others=True)
    except (OSError, ValueError) as exc:
        report(False, f"rows waiting outside the ledger: cannot be counted ({exc})")
        return
    then = "the next call writes them into the ledger" if opened else "they wait until the ledger opens again"
    for where, fact in waiting.facts():
        report(opened, f"{where}: {fact}; {then}")
    if waiting.others:
        report(
            True,
            f"journal: {waiting.others} journal file(s) of ended processes wait for other ledgers in "
            f"{waiting.journals}; each goes into its ledger when a call next opens it "
            "(a file whose ledger was deleted can be deleted too)",
        )


def _check_api(base_url: str | None, key: str | None, offline: bool, report: Callable[[bool, str], None]) -> None:
    """Call GET /v1/models (free) to check the key and the connection."""
    import anthropic

    from canny.client import OFFLINE_KEY, sdk_http_client, translate
    from canny.errors import CannyError

    emu_cm = None
    try:
        if offline:
            from canny.emulator import serve_in_thread

            emu_cm = serve_in_thread()
            base_url = emu_cm.__enter__().base_url
            key = OFFLINE_KEY
        try:  # the transport Client uses: no redirects, no plain-http route via another host
            http = sdk_http_client(base_url or "https://api.anthropic.com", offline=offline, timeout=15.0)
        except CannyError as exc:
            report(False, f"API: {exc}")
            return
        client = anthropic.Anthropic(api_key=key, base_url=base_url, max_retries=0, timeout=15.0, http_client=http)
        where = base_url or "https://api.anthropic.com"
        try:
            with translate():
                raw = client.models.with_raw_response.list(limit=1)
            report(*_models_page(raw, where))
        except CannyError as exc:
            report(False, f"API: {exc}")
        finally:
            client.close()
    finally:
        if emu_cm is not None:
            emu_cm.__exit__(None, None, None)


def _models_page(raw: Any, where: str) -> tuple[bool, str]:
    """Judge a 2xx answer to ``GET /v1/models``: an Anthropic API answers a JSON page;
    an HTML page (a proxy, a login portal, a web server) is a wrong base URL."""
    kind = raw.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    wrong = f"API: {where} answered {kind} with status {raw.status_code}, not the Anthropic API: check the base URL"
    if "json" not in kind:
        return False, wrong
    try:
        count = len(raw.parse().data)
    except Exception:  # the SDK could not read the page: whatever answered is not the API
        return False, wrong
    return True, f"API: reachable at {where}, key accepted ({count} model listed)"
