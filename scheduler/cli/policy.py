"""`fairpool policy ...`: local policy commands (the gRPC-backed ones join later)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from policies.loader import load_policy


@click.group()
def policy() -> None:
    """Read and check fairpool policies."""


@policy.command()
@click.argument("file", type=click.Path(path_type=Path))
def validate(file: Path) -> None:
    """Check FILE; exit 0 when valid, 2 with every error (field path and line) when not."""
    loaded = load_policy(file)
    members = ", ".join(loaded.member_names())
    Console().print(f"[green]valid[/]: {file} ({len(loaded.members)} members: {members})")
