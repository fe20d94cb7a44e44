"""A local control plane: etcd, kube-apiserver, kube-controller-manager and kwok on
loopback ports.

`start(directory)` builds what is missing, starts the four processes, waits until the
API server is ready and kwok is serving, applies rbac.yaml and returns a `ControlPlane`.
kube-controller-manager runs the controllers the workloads fairpool schedules rely on:
Jobs make pods, namespaces are emptied and removed, owned objects are garbage-collected,
and nodes whose kwok stops posting status turn NotReady.
Everything it writes lives in `directory` (certificates, token file, one kubeconfig per
identity, logs, `state.json`) except etcd's data, which goes to a temporary folder.
`stop(directory)` ends every recorded process group and removes etcd's data.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import utils as k8s_utils
from pydantic import BaseModel, Field
from rich.console import Console

from tests.controlplane import identities, pki, processes
from tests.controlplane.build import CONTROL_PLANE_NAMES, binary_path, ensure_built
from tests.controlplane.layout import RBAC_MANIFEST, STAGE_FILES, cache_dir
from tests.controlplane.processes import ProcessRecord, StartError

STATE_FILE = "state.json"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
_START_ATTEMPTS = 3
_ETCD_TIMEOUT = 60.0
_APISERVER_TIMEOUT = 180.0
_KWOK_TIMEOUT = 60.0
# Order of shutdown: clients of the API server first, etcd last.
_STOP_ORDER = ("kube-scheduler", "kube-controller-manager", "kwok", "kube-apiserver", "etcd")
CONTROLLERS = (
    "job-controller",
    "replicaset-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "node-lifecycle-controller",
)
# kwok posts a node's status every 60-75 s (node-stages.yaml) and keeps no node Lease:
# the grace period spans two missed heartbeats, so only a kwok that stopped leaves its
# nodes NotReady.
_NODE_MONITOR_GRACE = "150s"


class ClusterError(RuntimeError):
    """The control plane cannot be started, found or stopped as asked."""


class ClusterState(BaseModel):
    """What `up` leaves in state.json for `status`, `down` and other processes."""

    directory: str
    cache: str
    server: str
    ports: dict[str, int]
    tokens: dict[str, str]
    etcd_data_dir: str
    started_at: dt.datetime
    die_with_parent: bool = False
    processes: list[ProcessRecord] = Field(default_factory=list)

    def record(self, name: str) -> ProcessRecord | None:
        return next((p for p in self.processes if p.name == name), None)


def _state_path(directory: Path) -> Path:
    return directory / STATE_FILE


def save_state(state: ClusterState) -> None:
    path = _state_path(Path(state.directory))
    partial = path.with_name(path.name + ".partial")
    partial.write_text(state.model_dump_json(indent=2))
    partial.chmod(0o600)  # it holds every identity's token
    partial.replace(path)


def load_state(directory: Path) -> ClusterState | None:
    path = _state_path(directory)
    if not path.is_file():
        return None
    try:
        return ClusterState.model_validate_json(path.read_text())
    except ValueError as exc:
        raise ClusterError(f"{path}: unreadable control-plane state ({exc})") from exc


class ControlPlane:
    """A running control plane: its server URL, kubeconfigs and API clients per identity.

    `admin` and `scheduler` are `kubernetes.client.ApiClient`s (wrap them as
    `kubernetes.client.CoreV1Api(cp.admin)` and so on); `scheduler` is the `fairpool` user
    with only the rights in rbac.yaml.
    """

    def __init__(self, state: ClusterState) -> None:
        self.state = state

    @property
    def directory(self) -> Path:
        return Path(self.state.directory)

    @property
    def server(self) -> str:
        return self.state.server

    def kubeconfig(self, identity: str) -> Path:
        if identity not in identities.IDENTITIES:
            known = ", ".join(identities.IDENTITIES)
            raise ClusterError(f"unknown identity {identity!r}; known: {known}")
        return self.directory / "kubeconfig" / f"{identity}.yaml"

    def token(self, identity: str) -> str:
        return self.state.tokens[identity]

    def api_client(self, identity: str) -> k8s.ApiClient:
        return k8s_config.new_client_from_config(config_file=str(self.kubeconfig(identity)))

    @cached_property
    def admin(self) -> k8s.ApiClient:
        return self.api_client("admin")

    @cached_property
    def scheduler(self) -> k8s.ApiClient:
        return self.api_client("scheduler")

    def log(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def ready(self) -> bool:
        return processes.http_ok(
            f"{self.server}/readyz",
            token=self.token("admin"),
            ca_file=self.directory / "pki" / "ca.crt",
        )

    def start_kube_scheduler(self, *extra_args: str) -> ProcessRecord:
        """Start the stock kube-scheduler (its own identity, no leader election).

        It is recorded in state.json, so `stop` ends it with the rest.
        """
        command = [
            str(binary_path("kube-scheduler", Path(self.state.cache))),
            f"--kubeconfig={self.kubeconfig('kube-scheduler')}",
            "--leader-elect=false",
            "--secure-port=0",
            *extra_args,
        ]
        record = processes.spawn(
            "kube-scheduler",
            command,
            self.log("kube-scheduler"),
            die_with_parent=self.state.die_with_parent,
        )
        self.state.processes.append(record)
        save_state(self.state)
        # It serves nothing on port 0; give it a moment so an instant crash is reported.
        time.sleep(0.5)
        if not record.alive():
            raise StartError("kube-scheduler", "exited during start", Path(record.log))
        return record

    def stop_process(self, name: str) -> bool:
        record = self.state.record(name)
        if record is None:
            return False
        stopped = processes.stop(record)
        self.state.processes = [p for p in self.state.processes if p.name != name]
        save_state(self.state)
        return stopped

    def stop(self) -> list[str]:
        return stop(self.directory)

    def kill_process(self, name: str) -> ProcessRecord:
        """SIGKILL one process (a crash: no clean shutdown); `start_again` restarts it."""
        record = self.state.record(name)
        if record is None or not record.alive():
            raise ClusterError(f"{name} is not running")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(record.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(record.pid, os.WNOHANG)  # our child: do not leave a zombie
        self.state.processes = [p for p in self.state.processes if p.name != name]
        save_state(self.state)
        return record

    def start_again(self, record: ProcessRecord, timeout: float = _APISERVER_TIMEOUT) -> None:
        """Start a killed process again with the same command: same ports, and for etcd
        the same data folder. Returns once it serves again."""
        new = processes.spawn(
            record.name,
            record.command,
            Path(record.log),
            die_with_parent=self.state.die_with_parent,
        )
        self.state.processes.append(new)
        save_state(self.state)
        probes = {
            "etcd": lambda: processes.http_ok(
                f"http://127.0.0.1:{self.state.ports['etcd']}/health", expect='"true"'
            ),
            "kube-apiserver": self.ready,
            "kwok": lambda: processes.http_ok(
                f"http://127.0.0.1:{self.state.ports['kwok']}/healthz"
            ),
        }
        processes.wait_ready(new, probes.get(record.name, new.alive), timeout)


def _etcd_command(binary: Path, data_dir: Path, client: int, peer: int) -> list[str]:
    peer_url = f"http://127.0.0.1:{peer}"
    client_url = f"http://127.0.0.1:{client}"
    return [
        str(binary),
        "--name=fairpool",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=fairpool={peer_url}",
        "--initial-cluster-state=new",
        # A test cluster is thrown away; fsync would only slow benchmarks down.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def _apiserver_command(
    binary: Path, directory: Path, keys: pki.Pki, etcd_port: int, port: int
) -> list[str]:
    return [
        str(binary),
        f"--etcd-servers=http://127.0.0.1:{etcd_port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={directory / 'pki'}",
        f"--tls-cert-file={keys.serving_cert}",
        f"--tls-private-key-file={keys.serving_key}",
        f"--token-auth-file={directory / 'tokens.csv'}",
        "--authorization-mode=Node,RBAC",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={keys.service_account_public_key}",
        f"--service-account-signing-key-file={keys.service_account_key}",
        "--service-cluster-ip-range=10.0.0.0/24",
        # As Kubernetes' scheduler integration tests: no token controller runs to make
        # service accounts usable, and no node lifecycle controller clears not-ready taints.
        "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--max-requests-inflight=800",
        "--max-mutating-requests-inflight=400",
        "--profiling=false",
    ]


def _kwok_command(binary: Path, kubeconfig: Path, port: int) -> list[str]:
    command = [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
        f"--server-address=127.0.0.1:{port}",
        "--cidr=10.244.0.0/16",
        "--node-ip=10.255.0.1",
    ]
    for stage_file in STAGE_FILES:
        command += ["-c", str(stage_file)]
    return command


def _controller_manager_command(binary: Path, kubeconfig: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={kubeconfig}",
        f"--controllers={','.join(CONTROLLERS)}",
        "--leader-elect=false",
        "--secure-port=0",
        # No token controller runs (no service-account signing key is given to it), so
        # every controller acts as the kube-controller-manager identity itself.
        "--use-service-account-credentials=false",
        f"--node-monitor-grace-period={_NODE_MONITOR_GRACE}",
        # Jobs of hundreds of pods in benchmarks: the client defaults (20 qps) would
        # make the Job controller, not the scheduler, the bottleneck.
        "--kube-api-qps=200",
        "--kube-api-burst=400",
        "--profiling=false",
    ]


def running(directory: Path) -> ControlPlane | None:
    """The control plane recorded in `directory` if its API server still runs."""
    state = load_state(directory)
    if state is None:
        return None
    record = state.record("kube-apiserver")
    if record is None or not record.alive():
        return None
    return ControlPlane(state)


def start(
    directory: Path,
    *,
    cache: Path | None = None,
    console: Console | None = None,
    die_with_parent: bool = False,
    apiserver_args: Sequence[str] = (),
) -> ControlPlane:
    """Build what is missing and start a fresh control plane recorded in `directory`.

    With `die_with_parent` the processes get SIGTERM when the calling process dies
    (for test sessions); `up` leaves them running for a later `down`. `apiserver_args`
    are added to kube-apiserver's flags (an audit log, for instance).
    """
    out = console or Console(stderr=True)
    directory = directory.resolve()
    existing = load_state(directory)
    if existing is not None:
        alive = [p.name for p in existing.processes if p.alive()]
        if alive:
            raise ClusterError(
                f"a control plane already runs from {directory} ({', '.join(alive)}); "
                "stop it first (`python -m tests.controlplane down`)"
            )
        stop(directory)
    root = cache or cache_dir()
    # The workload controllers are built by `make controlplane` and started by the tests
    # that use them (controllers.py), not with every control plane.
    binaries = ensure_built(root, names=CONTROL_PLANE_NAMES, console=out)

    for sub in ("logs", "kubeconfig"):
        shutil.rmtree(directory / sub, ignore_errors=True)
        (directory / sub).mkdir(parents=True)
    keys = pki.generate(directory / "pki")
    tokens = identities.new_tokens()
    token_file = directory / "tokens.csv"
    token_file.write_text(identities.token_file_text(tokens))
    token_file.chmod(0o600)

    last_error: StartError | None = None
    for _attempt in range(_START_ATTEMPTS):
        ports = {name: processes.free_port() for name in ("etcd", "etcd-peer", "apiserver", "kwok")}
        state = ClusterState(
            directory=str(directory),
            cache=str(root),
            server=f"https://127.0.0.1:{ports['apiserver']}",
            ports=ports,
            tokens=tokens,
            etcd_data_dir=tempfile.mkdtemp(prefix="fairpool-etcd-"),
            started_at=dt.datetime.now(dt.UTC),
            die_with_parent=die_with_parent,
        )
        _write_kubeconfigs(directory, state.server, keys.ca_cert, tokens)
        save_state(state)
        try:
            _start_processes(state, binaries, keys, out, die_with_parent, apiserver_args)
        except StartError as exc:
            stop(directory)
            if not exc.port_in_use:
                raise
            last_error = exc
            out.print(f"[yellow]{exc.name}: port taken, retrying with other ports[/]")
            continue
        except BaseException:
            stop(directory)
            raise
        return ControlPlane(state)
    assert last_error is not None
    raise last_error


def _write_kubeconfigs(directory: Path, server: str, ca: Path, tokens: dict[str, str]) -> None:
    for name in identities.IDENTITIES:
        path = directory / "kubeconfig" / f"{name}.yaml"
        partial = path.with_name(path.name + ".partial")
        partial.write_text(identities.kubeconfig_text(server, ca, name, tokens[name]))
        partial.chmod(0o600)
        partial.replace(path)


def _start_processes(
    state: ClusterState,
    binaries: dict[str, Path],
    keys: pki.Pki,
    out: Console,
    die_with_parent: bool,
    apiserver_args: Sequence[str] = (),
) -> None:
    directory = Path(state.directory)
    logs = directory / "logs"
    ports = state.ports

    def launch(name: str, command: list[str]) -> ProcessRecord:
        record = processes.spawn(
            name, command, logs / f"{name}.log", die_with_parent=die_with_parent
        )
        state.processes.append(record)
        save_state(state)
        return record

    started = time.monotonic()
    data_dir = Path(state.etcd_data_dir)
    etcd = launch(
        "etcd", _etcd_command(binaries["etcd"], data_dir, ports["etcd"], ports["etcd-peer"])
    )
    processes.wait_ready(
        etcd,
        lambda: processes.http_ok(f"http://127.0.0.1:{ports['etcd']}/health", expect='"true"'),
        _ETCD_TIMEOUT,
    )
    apiserver_command = [
        *_apiserver_command(
            binaries["kube-apiserver"], directory, keys, ports["etcd"], ports["apiserver"]
        ),
        *apiserver_args,
    ]
    apiserver = launch("kube-apiserver", apiserver_command)
    processes.wait_ready(
        apiserver,
        lambda: processes.http_ok(
            f"{state.server}/readyz", token=state.tokens["admin"], ca_file=keys.ca_cert
        ),
        _APISERVER_TIMEOUT,
    )
    out.print(f"kube-apiserver ready at {state.server} ({time.monotonic() - started:.1f}s)")
    apply_manifest(directory / "kubeconfig" / "admin.yaml", RBAC_MANIFEST)
    kwok = launch(
        "kwok",
        _kwok_command(binaries["kwok"], directory / "kubeconfig" / "kwok.yaml", ports["kwok"]),
    )
    processes.wait_ready(
        kwok,
        lambda: processes.http_ok(f"http://127.0.0.1:{ports['kwok']}/healthz"),
        _KWOK_TIMEOUT,
    )
    out.print(f"kwok ready ({time.monotonic() - started:.1f}s after start)")
    manager = launch(
        "kube-controller-manager",
        _controller_manager_command(
            binaries["kube-controller-manager"],
            directory / "kubeconfig" / "kube-controller-manager.yaml",
        ),
    )
    # It serves nothing (port 0): give it a moment so that a crash on start is reported.
    time.sleep(0.5)
    if not manager.alive():
        raise StartError("kube-controller-manager", "exited during start", Path(manager.log))


def apply_manifest(kubeconfig: Path, manifest: Path) -> None:
    """Create every object in `manifest` (a fresh cluster holds none of them yet)."""
    api = k8s_config.new_client_from_config(config_file=str(kubeconfig))
    try:
        k8s_utils.create_from_yaml(api, str(manifest))
    finally:
        api.close()


def stop(directory: Path) -> list[str]:
    """Stop every process recorded in `directory`; return the names that were running."""
    directory = directory.resolve()
    state = load_state(directory)
    if state is None:
        return []
    order = {name: i for i, name in enumerate(_STOP_ORDER)}
    stopped: list[str] = []
    for record in sorted(state.processes, key=lambda p: order.get(p.name, -1)):
        if processes.stop(record):
            stopped.append(record.name)
    with contextlib.suppress(OSError):
        shutil.rmtree(state.etcd_data_dir)
    _state_path(directory).unlink(missing_ok=True)
    return stopped


def status(directory: Path) -> dict[str, object]:
    """What runs from `directory`: the server, each process (alive or not) and readiness."""
    state = load_state(directory.resolve())
    if state is None:
        return {"directory": str(directory), "running": False}
    plane = ControlPlane(state)
    return {
        "directory": state.directory,
        "running": any(p.alive() for p in state.processes),
        "server": state.server,
        "ready": plane.ready(),
        "started_at": state.started_at.isoformat(),
        "processes": {p.name: {"pid": p.pid, "alive": p.alive()} for p in state.processes},
        "kubeconfigs": {name: str(plane.kubeconfig(name)) for name in identities.IDENTITIES},
    }
