"""`python -m tests.controlplane build|up|down|status|nodes [INVENTORY.yaml]`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click
from rich.console import Console

from policies.errors import InputError
from policies.inventory import load_inventory
from tests.controlplane import build as build_mod
from tests.controlplane import cluster
from tests.controlplane import crds as crds_mod
from tests.controlplane.layout import cache_dir, default_cluster_dir
from tests.controlplane.processes import StartError

console = Console(stderr=True)

_dir_option = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cluster folder (state, kubeconfigs, logs). Default: <cache>/controlplane/cluster.",
)


def _directory(directory: Path | None) -> Path:
    return directory if directory is not None else default_cluster_dir()


@click.group()
def main() -> None:
    """A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
    kwok) for fairpool's tests."""


@main.command()
@click.option("--force", is_flag=True, help="Rebuild even binaries that are up to date.")
def build(force: bool) -> None:
    """Build the binaries that are missing or out of date."""
    started = time.monotonic()
    paths = build_mod.ensure_built(cache_dir(), force=force, console=console)
    for name, path in paths.items():
        console.print(f"{name:15} {path}", soft_wrap=True)
    console.print(f"build step took {time.monotonic() - started:.1f}s")


@main.command()
def crds() -> None:
    """Fetch the Go modules the workload CRDs (JobSet, PyTorchJob) are read from."""
    for name, source in crds_mod.WORKLOAD_CRDS.items():
        where = crds_mod.module_dir(source.module, source.version, cache_dir()) / source.path
        console.print(f"{name:26} {where}", soft_wrap=True)


@main.command()
@_dir_option
def up(directory: Path | None) -> None:
    """Build what is missing, start the control plane and wait until it is ready."""
    started = time.monotonic()
    plane = cluster.start(_directory(directory), console=console)
    console.print(f"control plane up in {time.monotonic() - started:.1f}s: {plane.server}")
    for name in ("admin", "scheduler"):
        console.print(f"  kubeconfig {name:10} {plane.kubeconfig(name)}", soft_wrap=True)


@main.command()
@_dir_option
def down(directory: Path | None) -> None:
    """Stop every process of the control plane; nothing is left running."""
    stopped = cluster.stop(_directory(directory))
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@main.command()
@_dir_option
def status(directory: Path | None) -> None:
    """Print the control plane's state as JSON; exit 1 unless it is up and ready."""
    info = cluster.status(_directory(directory))
    click.echo(json.dumps(info, indent=2))
    if not info.get("ready"):
        sys.exit(1)


@main.command()
@click.argument("inventory", required=False, type=click.Path(dir_okay=False, path_type=Path))
@_dir_option
@click.option("--concurrency", default=16, show_default=True, help="Parallel create calls.")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until Ready.")
def nodes(inventory: Path | None, directory: Path | None, concurrency: int, wait: bool) -> None:
    """Create fake GPU nodes from INVENTORY (default: the built-in demo cluster)."""
    from tests.controlplane.nodes import create_nodes, wait_nodes_ready

    plane = cluster.running(_directory(directory))
    if plane is None:
        raise click.ClickException("no control plane runs there; start one with `up`")
    result = create_nodes(plane.admin, load_inventory(inventory), concurrency=concurrency)
    console.print(
        f"created {len(result.created)} node(s), {len(result.existing)} already there, "
        f"in {result.seconds:.1f}s"
    )
    if wait:
        wait_nodes_ready(plane.admin, result.created + result.existing)
        console.print("all Ready")


def run() -> None:
    try:
        main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except InputError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
    except (build_mod.BuildError, StartError, cluster.ClusterError, TimeoutError) as exc:
        # Plain print: go's and the processes' logs contain [brackets] rich would eat.
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run()
