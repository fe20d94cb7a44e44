"""`fairpool serve-api`: the gRPC API on its own, over a simulated cluster (an inventory
and a queue of pending jobs from a trace), for demos and tests until the daemon hosts it."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType

import click
from prometheus_client import CollectorRegistry
from rich.console import Console

from policies.errors import InputError, listen_error
from policies.files import write_whole
from policies.inventory import load_inventory
from policies.loader import DEFAULT_POLICY, load_policy
from scheduler.cli.options import Address, ledger_option


def _serve_metrics(listen: str) -> CollectorRegistry:
    """`listen` is host:port, checked by its option (`Address`)."""
    from prometheus_client import start_http_server

    from scheduler.api.tls import address_host

    registry = CollectorRegistry()
    try:
        start_http_server(
            int(listen.rpartition(":")[2]), addr=address_host(listen), registry=registry
        )
    except OSError as exc:
        raise listen_error(listen, exc) from exc
    return registry


@click.command("serve-api")
@click.option(
    "--listen",
    type=Address(listen=True),
    default="127.0.0.1:50051",
    show_default=True,
    help="host:port (port 0: any free port)",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("fairpool-policy.yaml"),
    show_default=True,
    help="the policy store file; created from the built-in demo policy when missing",
)
@click.option(
    "--cluster",
    type=click.Path(path_type=Path, dir_okay=False),
    help="ClusterInventory YAML (default: the built-in demo cluster)",
)
@click.option(
    "--trace",
    type=click.Path(path_type=Path, dir_okay=False),
    help="trace CSV of pending work (default: a demo queue)",
)
@click.option(
    "--tokens",
    envvar="FAIRPOOL_TOKENS",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="token file (YAML or CSV: token, role[, name]) [env FAIRPOOL_TOKENS]",
)
@ledger_option("ledger database (also keeps the policy audit log)", "--ledger-url")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--client-ca",
    type=click.Path(path_type=Path, dir_okay=False),
    help="require client certificates signed by this CA (mutual TLS)",
)
@click.option(
    "--max-message-bytes",
    # gRPC takes a C int: 99999999999 was an OverflowError traceback.
    type=click.IntRange(min=1024, max=1 << 30),
    default=4 << 20,
    show_default=True,
    help="largest request the API accepts (1 KiB to 1 GiB)",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="serve without TLS on an address other hosts can reach (tokens travel in clear)",
)
@click.option(
    "--keep-tokens-on-reload-error",
    is_flag=True,
    help="when the token file changes into something unusable, keep serving the last good "
    "tokens (default: refuse every call until it is fixed)",
)
@click.option(
    "--metrics-listen",
    type=Address(listen=True),
    help="host:port for the API's own /metrics (token reloads, refused calls); default: not served",
)
@click.option(
    "--port-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="write the bound port here once serving",
)
def serve_api(
    listen: str,
    policy_file: Path,
    cluster: Path | None,
    trace: Path | None,
    tokens: Path,
    ledger_url: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    client_ca: Path | None,
    max_message_bytes: int,
    insecure_plaintext: bool,
    keep_tokens_on_reload_error: bool,
    metrics_listen: str | None,
    port_file: Path | None,
) -> None:
    """Serve the fairpool gRPC API over a simulated cluster."""
    from policies.inventory import check_inventory
    from reports.ledger.connect import probe
    from scheduler.api.auth import TokenTable
    from scheduler.api.frozen_view import FrozenClusterView
    from scheduler.api.policy_store import FileSource
    from scheduler.api.server import ApiConfig, ApiServer
    from scheduler.traces.csv import read_trace

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if client_ca is not None and tls_cert is None:
        raise InputError("--client-ca needs --tls-cert and --tls-key (mutual TLS is TLS)")
    probe(ledger_url)  # before anything is written
    created = not policy_file.exists()
    if created:
        write_whole(policy_file, DEFAULT_POLICY.read_text(encoding="utf-8"))
    try:
        policy = load_policy(policy_file)
        inventory = load_inventory(cluster)
        check_inventory(inventory, policy, cluster)
        pending = read_trace(trace, members=set(policy.member_names())) if trace else None
        view = FrozenClusterView.from_inventory(policy, inventory, pending)
        registry = _serve_metrics(metrics_listen) if metrics_listen else None
        config = ApiConfig(
            tokens=TokenTable(tokens, keep_on_reload_error=keep_tokens_on_reload_error),
            policy_source=FileSource(policy_file),
            ledger_url=ledger_url,
            address=listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
            client_ca=client_ca,
            max_receive_bytes=max_message_bytes,
            insecure_plaintext=insecure_plaintext,
            registry=registry,
        )
        server = ApiServer(view, config).start()
    except BaseException:
        # A refused start (a taken address, a bad inventory) leaves no file it made.
        if created:
            policy_file.unlink(missing_ok=True)
        raise

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop(grace=2.0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if port_file is not None:
        write_whole(port_file, f"{server.port}\n")
    Console(stderr=True).print(
        f"fairpool API on port {server.port} ({'TLS' if tls_cert else 'plaintext'}), "
        f"policy version {server.store.current()[0].version} from {policy_file}"
    )
    sys.stderr.flush()
    server.wait()
