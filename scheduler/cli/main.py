"""Entry point of the `fairpool` command. Subcommands load lazily so that
`fairpool policy validate` does not pay for importing the Kubernetes client."""

from __future__ import annotations

import importlib

import click
from rich.console import Console
from rich.markup import escape

from policies.errors import InputError, UnavailableError

# name -> "module:attribute" of a click command or group.
COMMANDS: dict[str, str] = {
    "policy": "scheduler.cli.policy:policy",
    "trace": "scheduler.cli.trace:trace",
    "simulate": "scheduler.cli.simulate:simulate",
    "shares": "scheduler.cli.shares:shares",
    "explain": "scheduler.cli.explain:explain",
    "usage": "scheduler.cli.usage:usage",
    "serve-api": "scheduler.cli.serve:serve_api",
    "run": "scheduler.cli.run:run",
    "report": "scheduler.cli.report:report",
    "meter": "scheduler.cli.meter:meter",
    "ledger": "scheduler.cli.ledger:ledger",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def invoke(self, ctx: click.Context) -> object:
        # Bad input from the user is exit code 2 with the field or line named, whichever
        # subcommand met it (click's own usage errors are 2 as well); a database or server
        # that is named correctly but cannot be reached is 1.
        try:
            return super().invoke(ctx)
        except InputError as exc:
            _error(str(exc))
            ctx.exit(2)
        except UnavailableError as exc:
            _error(str(exc))
            ctx.exit(1)


def _error(message: str) -> None:
    console = Console(stderr=True, soft_wrap=True, highlight=False)
    console.print("[bold red]error:[/]", escape(message))


@click.group(cls=LazyGroup)
@click.version_option(package_name="fairpool")
def cli() -> None:
    """fairpool: fair-share GPU scheduling and accounting for pooled clusters."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="fairpool")


if __name__ == "__main__":
    main()
