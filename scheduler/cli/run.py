"""`fairpool run`: the secondary scheduler daemon against a real cluster."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from policies.errors import InputError

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from scheduler.api.server import ApiServer
    from scheduler.k8s.daemon import Daemon


@click.command()
@click.option("--kubeconfig", type=click.Path(path_type=Path), help="Kubeconfig file.")
@click.option("--in-cluster", is_flag=True, help="Use the pod's service account.")
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="Policy YAML.")
@click.option(
    "--policy-configmap",
    metavar="NS/NAME",
    help="Read the policy from this ConfigMap (key policy.yaml) and reload it on change.",
)
@click.option("--metrics-port", type=int, default=9090, show_default=True, help="0: pick one.")
@click.option("--metrics-address", default="0.0.0.0", show_default=True)
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option("--lease-namespace", default="fairpool-system", show_default=True)
@click.option("--lease-name", default="fairpool-scheduler", show_default=True)
@click.option(
    "--usage-history-configmap",
    default="fairpool-usage-history",
    show_default=True,
    help="ConfigMap in the lease namespace keeping the usage history across restarts; "
    "'' keeps it in memory only.",
)
@click.option(
    "--usage-write-seconds",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    help="The leader writes the usage history at most this often (and on a clean stop).",
)
@click.option("--identity", default=None, help="Leader election identity (default: host-pid).")
@click.option("--scheduler-name", default="fairpool", show_default=True)
@click.option("--bind-workers", type=int, default=16, show_default=True)
@click.option(
    "--scheduled-events/--no-scheduled-events",
    default=True,
    show_default=True,
    help="A Scheduled event per bind (each costs the API server as much as the bind).",
)
@click.option(
    "--tokens",
    envvar="FAIRPOOL_TOKENS",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Serve the gRPC policy API with these bearer tokens [env FAIRPOOL_TOKENS]; "
    "without it the API is not served.",
)
@click.option("--api-listen", default="0.0.0.0:50051", show_default=True, help="host:port")
@click.option(
    "--ledger-url",
    envvar="FAIRPOOL_LEDGER",
    default="sqlite:///fairpool-ledger.db",
    show_default=True,
    help="Ledger database (the API's policy audit log) [env FAIRPOOL_LEDGER]",
)
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--log-level", default="INFO", show_default=True)
def run(
    kubeconfig: Path | None,
    in_cluster: bool,
    policy_file: Path | None,
    policy_configmap: str | None,
    metrics_port: int,
    metrics_address: str,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    usage_history_configmap: str,
    usage_write_seconds: float,
    identity: str | None,
    scheduler_name: str,
    bind_workers: int,
    scheduled_events: bool,
    tokens: Path | None,
    api_listen: str,
    ledger_url: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    log_level: str,
) -> None:
    """Schedule pods with `schedulerName: fairpool` by fair share until stopped."""
    from scheduler.k8s.client import api_client
    from scheduler.k8s.daemon import Daemon, DaemonConfig, PolicyConfigMap, default_identity

    if bool(kubeconfig) == in_cluster:
        raise InputError("give exactly one of --kubeconfig FILE and --in-cluster")
    if bool(policy_file) == bool(policy_configmap):
        raise InputError("give exactly one of --policy FILE and --policy-configmap NS/NAME")
    if tokens is not None:
        from reports.ledger.connect import probe

        probe(ledger_url)  # before the daemon starts: a bad URL fails the command at once
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    config = DaemonConfig(
        scheduler_name=scheduler_name,
        identity=identity or default_identity(),
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        usage_history_configmap=usage_history_configmap or None,
        usage_write_seconds=usage_write_seconds,
        bind_workers=bind_workers,
        scheduled_events=scheduled_events,
    )
    api = api_client(kubeconfig, in_cluster, pool_size=bind_workers + 16)
    daemon = Daemon(
        api,
        config=config,
        policy_file=policy_file,
        policy_configmap=PolicyConfigMap.parse(policy_configmap) if policy_configmap else None,
    )
    _stop_on_signals(daemon)
    port = daemon.metrics.serve(metrics_port, metrics_address)
    daemon.start()
    log = logging.getLogger(__name__)
    log.info("fairpool scheduler %s running; metrics on :%d/metrics", config.identity, port)
    print(f"metrics-port {port}", flush=True)
    server = None
    if tokens is not None:
        server = _serve_api(daemon, api, tokens, ledger_url, api_listen, tls_cert, tls_key)
    try:
        daemon.wait()
    finally:
        if server is not None:
            server.stop()
        daemon.stop()


def _stop_on_signals(daemon: Daemon) -> None:
    """SIGTERM and SIGINT end the daemon's loop; it then stops cleanly."""

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping", signum)
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def _serve_api(
    daemon: Daemon,
    api: ApiClient,
    tokens: Path,
    ledger_url: str,
    api_listen: str,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> ApiServer:
    """The gRPC policy API beside the daemon; its port is printed for whoever started us."""
    from scheduler.api.hosting import serve_daemon_api

    server = serve_daemon_api(
        daemon,
        api,
        tokens=tokens,
        ledger_url=ledger_url,
        listen=api_listen,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )
    logging.getLogger(__name__).info("gRPC policy API on %s (port %s)", api_listen, server.port)
    print(f"api-port {server.port}", flush=True)
    return server
