"""`fairpool ledger upgrade`: create the usage ledger's tables or bring them to the newest
schema, ahead of the meter, the reports and the API (which also do it when they open it)."""

from __future__ import annotations

import click
from rich.console import Console

from scheduler.cli.options import ledger_option


@click.group()
def ledger() -> None:
    """The usage ledger's database."""


@ledger.command()
@ledger_option("Usage ledger database URL (postgresql+psycopg://... needs fairpool[postgres]).")
def upgrade(ledger_url: str) -> None:
    """Create the ledger's tables, or migrate them to this version's schema (rows kept).
    A ledger made before migrations existed is adopted as it is."""
    from reports.ledger.connect import upgrade as upgrade_ledger
    from reports.ledger.database import masked

    before, head = upgrade_ledger(ledger_url)
    where = masked(ledger_url)
    if before == head:
        Console().print(f"ledger {where}: already at revision {head}")
    else:
        was = f"revision {before}" if before else "no revision"
        Console().print(f"ledger {where}: {was} -> revision {head}")
