"""``canny ledger datasette-metadata``: the Datasette ``metadata.json`` of a ledger.

It also refreshes the ledger's ``model_rates`` table from canny's price table (the rates
the ``cache_savings`` view prices with), so run it again after upgrading canny.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from canny.errors import ConfigError
from canny.ledger import open_ledger, parse_ledger_target

__all__ = ["datasette_metadata"]


def datasette_metadata(location: str, *, output: Path | None, database: str | None) -> None:
    """Refresh ``model_rates`` in the ledger at ``location``; print (or write) its metadata.json."""
    from canny.ledger.datasette import metadata, write_rates

    kind, where = parse_ledger_target(location)
    name = database or (Path(where).stem if kind == "sqlite" else "ledger")
    ledger = open_ledger(location)
    try:
        transaction = getattr(ledger, "transaction", None)
        if transaction is None:
            raise ConfigError(f"this ledger ({type(ledger).__name__}) has no SQL tables to describe")
        with transaction() as tx:
            write_rates(tx)
    finally:
        ledger.close()
    text = json.dumps(metadata(name), indent=2, ensure_ascii=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"canny: wrote {output}; now: datasette {where} -m {output}", err=True)
