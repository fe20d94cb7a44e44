"""`fairpool run`: the secondary scheduler daemon against a real cluster."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, cast

import click
from click.core import ParameterSource

from policies.errors import InputError
from scheduler.cli.logs import LOG_FORMATS, LOG_LEVELS, configure_logging
from scheduler.cli.options import Address, FiniteRange, KubeName, ledger_option
from scheduler.engine_build import kind

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from scheduler.api.server import ApiServer
    from scheduler.k8s.daemon import Daemon
    from scheduler.k8s.events import EventLevel


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(path_type=Path),
    help="Kubeconfig file [default: $KUBECONFIG, else the pod's service account in a pod, "
    "else ~/.kube/config].",
)
@click.option("--in-cluster", is_flag=True, help="Use the pod's service account.")
@click.option(
    "--policy-object",
    metavar="NAME",
    type=KubeName("subdomain"),
    help="Take the policy from this cluster-scoped Policy object (policies.fairpool.io), "
    "follow its changes and write its status.",
)
@click.option("--policy", "policy_file", type=click.Path(path_type=Path), help="Policy YAML.")
@click.option(
    "--policy-configmap",
    metavar="NS/NAME",
    help="Read the policy from this ConfigMap (key policy.yaml) and reload it on change.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9464,
    show_default=True,
    help="/metrics, /healthz and /readyz; 0: pick one.",
)
@click.option("--metrics-address", default="0.0.0.0", show_default=True)
@click.option("--leader-elect/--no-leader-elect", default=True, show_default=True)
@click.option(
    "--lease-namespace", type=KubeName("label"), default="fairpool-system", show_default=True
)
@click.option(
    "--lease-name", type=KubeName("subdomain"), default="fairpool-scheduler", show_default=True
)
@click.option(
    "--lease-seconds",
    # The Lease carries whole seconds in an int32; an hour is already no failover.
    type=FiniteRange(min=1.0, max=3600.0),
    default=10.0,
    show_default=True,
    help="A standby takes the Lease over once its holder has not renewed it this long "
    "(the failover time after a crash); written in the Lease, and the holder's value is "
    "the one a standby waits out.",
)
@click.option(
    "--renew-deadline",
    type=FiniteRange(min=0.5, max=3600.0),
    default=7.0,
    show_default=True,
    help="The leader steps down when it could not renew for this long (< --lease-seconds).",
)
@click.option(
    "--retry-seconds",
    type=FiniteRange(min=0.1, max=3600.0),
    default=2.0,
    show_default=True,
    help="How often the Lease is renewed or tried (< --renew-deadline).",
)
@click.option(
    "--usage-history-configmap",
    type=KubeName("subdomain", empty_ok=True),
    default="fairpool-usage-history",
    show_default=True,
    help="ConfigMap in the lease namespace keeping the usage history across restarts; "
    "'' keeps it in memory only.",
)
@click.option(
    "--usage-write-seconds",
    type=FiniteRange(min=1.0, max=86400.0),
    default=30.0,
    show_default=True,
    help="The leader writes the usage history at most this often (and on a clean stop).",
)
@click.option("--identity", default=None, help="Leader election identity (default: host-pid).")
@click.option(
    "--scheduler-name",
    # The API server takes a pod's schedulerName only as a DNS-1123 subdomain.
    type=KubeName("subdomain"),
    default="fairpool",
    show_default=True,
)
@click.option(
    "--bind-workers",
    type=click.IntRange(1, 256),
    default=16,
    show_default=True,
    help="Binds in flight at once (0 left the daemon unable to start).",
)
@click.option(
    "--batch-seconds",
    type=FiniteRange(min=0.0, max=3600.0),
    default=0.05,
    show_default=True,
    help="After a change, wait this long for more before a cycle: fewer, larger cycles "
    "under a storm of changes, each decision that much later (`fairpool simulate "
    "--batch-seconds` replays a month with the same wait).",
)
@click.option(
    "--owed-read-seconds",
    type=FiniteRange(min=0.0, max=3600.0),
    default=5.0,
    show_default=True,
    help="Read the wait meter (owed members, idle GPUs) after a cycle when the last "
    "reading is this old, between scrapes: the time to entitlement metrics time owed "
    "episodes this finely; 0: only at Prometheus' scrapes.",
)
@click.option(
    "--events",
    type=click.Choice(["all", "warnings", "none"]),
    default="all",
    show_default=True,
    help="Kubernetes Events to post: all (a Scheduled event per bind, each costing the API "
    "server about what the bind costs, posted after the binds in flight), warnings "
    "(FailedScheduling, Preempted, GangBindUndone...), or none.",
)
@click.option(
    "--tokens",
    envvar="FAIRPOOL_TOKENS",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Serve the gRPC policy API with these bearer tokens [env FAIRPOOL_TOKENS]; "
    "without it the API is not served.",
)
@click.option(
    "--api-listen",
    type=Address(listen=True),
    default="127.0.0.1:50051",
    show_default=True,
    help="host:port; any address other hosts can reach needs --tls-cert and --tls-key "
    "(or --insecure-plaintext)",
)
@ledger_option("Ledger database (the policy audit history) [env FAIRPOOL_LEDGER]", "--ledger-url")
@click.option("--tls-cert", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--tls-key", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Serve the API without TLS on an address other hosts can reach (tokens in clear).",
)
@click.option(
    "--api-front/--no-api-front",
    default=True,
    show_default=True,
    help="Serve the API's address from a front process that answers GetEntitlements "
    "itself and forwards every other call to the daemon's process (docs/api.md).",
)
@click.option(
    "--keep-tokens-on-reload-error",
    is_flag=True,
    help="When the token file changes into something unusable, keep serving the last good "
    "tokens (default: refuse every API call until it is fixed).",
)
@click.option(
    "--metrics-pod-series/--no-metrics-pod-series",
    default=True,
    show_default=True,
    help="Export fairpool_pod_gpu_allocation (one series per running pod, with its member): "
    "metering reads it from Prometheus. Without it /metrics holds only per-member totals.",
)
@click.option(
    "--log-level",
    # Any other word was a ValueError traceback out of logging.basicConfig.
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default="INFO",
    show_default=True,
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default="text",
    show_default=True,
    help="json: one JSON object per line, for a log collector.",
)
def run(
    kubeconfig: Path | None,
    in_cluster: bool,
    policy_object: str | None,
    policy_file: Path | None,
    policy_configmap: str | None,
    metrics_port: int,
    metrics_address: str,
    leader_elect: bool,
    lease_namespace: str,
    lease_name: str,
    lease_seconds: float,
    renew_deadline: float,
    retry_seconds: float,
    usage_history_configmap: str,
    usage_write_seconds: float,
    identity: str | None,
    scheduler_name: str,
    bind_workers: int,
    batch_seconds: float,
    owed_read_seconds: float,
    events: str,
    tokens: Path | None,
    api_listen: str,
    ledger_url: str,
    tls_cert: Path | None,
    tls_key: Path | None,
    insecure_plaintext: bool,
    api_front: bool,
    keep_tokens_on_reload_error: bool,
    metrics_pod_series: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Schedule pods with `schedulerName: fairpool` by fair share until stopped."""
    from scheduler.k8s import runtime
    from scheduler.k8s.client import api_client
    from scheduler.k8s.daemon import Daemon, DaemonConfig, PolicyConfigMap, default_identity

    if not retry_seconds < renew_deadline < lease_seconds:
        raise InputError(
            "--retry-seconds, --renew-deadline, --lease-seconds: need "
            f"{retry_seconds} < {renew_deadline} < {lease_seconds}"
        )
    if sum(bool(s) for s in (policy_object, policy_file, policy_configmap)) != 1:
        raise InputError(
            "give exactly one of --policy-object NAME, --policy FILE and --policy-configmap NS/NAME"
        )
    if tokens is None:
        _refuse_api_options_without_tokens()
    configure_logging(log_level, log_format)
    if tokens is not None or policy_object:
        from reports.ledger.connect import probe

        probe(ledger_url)  # before the daemon starts: a bad URL fails the command at once
    config = DaemonConfig(
        scheduler_name=scheduler_name,
        identity=identity or default_identity(),
        leader_elect=leader_elect,
        lease_namespace=lease_namespace,
        lease_name=lease_name,
        lease_seconds=lease_seconds,
        renew_deadline=renew_deadline,
        retry_seconds=retry_seconds,
        usage_history_configmap=usage_history_configmap or None,
        usage_write_seconds=usage_write_seconds,
        bind_workers=bind_workers,
        batch_seconds=batch_seconds,
        owed_read_seconds=owed_read_seconds,
        events=cast("EventLevel", events),
    )
    api = api_client(kubeconfig, in_cluster, pool_size=bind_workers + 16)
    audit = None
    if policy_object:
        from scheduler.api.policy_audit import AuditLog

        audit = AuditLog(ledger_url)
    daemon = Daemon(
        api,
        config=config,
        policy_file=policy_file,
        policy_configmap=PolicyConfigMap.parse(policy_configmap) if policy_configmap else None,
        policy_object=policy_object,
        policy_audit=audit,
    )
    _stop_on_signals(daemon)
    daemon.metrics.pod_series = metrics_pod_series
    port = daemon.metrics.serve(metrics_port, metrics_address)
    runtime.tune()
    daemon.start()
    if daemon.stop_event.is_set():
        return  # a signal while it started: it stopped already
    runtime.freeze_startup_objects()
    log = logging.getLogger(__name__)
    log.info(
        "fairpool scheduler %s running (%s engine); /metrics, /healthz, /readyz on port %d",
        config.identity,
        kind(),
        port,
    )
    _announce("metrics-port", port)
    server = None
    # The API starts on the running daemon (it serves its state); a token or TLS file it
    # cannot use still stops the daemon cleanly: its Lease given up, its usage history
    # saved.
    try:
        if tokens is not None:
            server = _serve_api(
                daemon,
                api,
                tokens,
                ledger_url,
                api_listen,
                tls_cert=tls_cert,
                tls_key=tls_key,
                insecure_plaintext=insecure_plaintext,
                keep_tokens_on_reload_error=keep_tokens_on_reload_error,
                read_front=api_front,
            )
        daemon.wait()
    finally:
        if server is not None:
            server.stop()
        daemon.stop()


# The options that only shape the gRPC API: without --tokens no API is served, and an
# operator who forgot --tokens believed it served (with TLS, on that address).
_API_OPTIONS = (
    "tls_cert",
    "tls_key",
    "insecure_plaintext",
    "api_listen",
    "api_front",
    "keep_tokens_on_reload_error",
)


def _refuse_api_options_without_tokens() -> None:
    """InputError naming the API options given while the API is off (no --tokens)."""
    ctx = click.get_current_context()
    given = [
        "/".join([*param.opts, *param.secondary_opts])
        for param in ctx.command.params
        if param.name in _API_OPTIONS
        and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT
    ]
    if given:
        raise InputError(
            f"{', '.join(given)}: only with --tokens (without it the API is not served)"
        )


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
    **options: Any,
) -> ApiServer:
    """The gRPC policy API beside the daemon; its port is printed for whoever started us.
    `options`: TLS files and the token and plaintext switches (see serve_daemon_api)."""
    from scheduler.api.hosting import serve_daemon_api

    server = serve_daemon_api(
        daemon, api, tokens=tokens, ledger_url=ledger_url, listen=api_listen, **options
    )
    logging.getLogger(__name__).info("gRPC policy API on %s (port %s)", api_listen, server.port)
    _announce("api-port", server.port)
    return server


def _announce(name: str, port: int) -> None:
    """Tell whoever started us which port we took, as one whole line.

    `print` writes the text and its newline as two writes; under PYTHONUNBUFFERED the
    daemon's threads could log in between, and a reader saw `metrics-port 39127{"time":...`.
    click.echo joins the newline first and writes once.
    """
    click.echo(f"{name} {port}")
