"""Workload controllers run beside the local control plane, out of cluster.

The JobSet controller, the Kubeflow training operator (PyTorchJob) and Kueue are built
from their Go modules like the control plane (build.py's `CONTROLLERS`). Their
CustomResourceDefinitions and admission webhook configurations are read from the same
downloaded modules, so what a test installs is what that release ships.

Each runs as a process of this machine with the admin kubeconfig. Their webhooks are
served with the API server's own loopback certificate (signed by the cluster's CA, valid
for 127.0.0.1), and the webhook configurations point at `https://127.0.0.1:<port>`
instead of an in-cluster Service, so the API server calls them as it would in a cluster.
Pod and Job webhooks get an object selector that keeps them to the objects the
controller manages, and every configuration is removed again when the controller stops,
so a stopped controller never blocks other tests' pods.

The training operator is the exception: its certificate rotator always keeps its own CA
and certificate in a Secret, checks it for the in-cluster name
`training-operator.<namespace>.svc`, and waits for the kubelet to mount it in
/tmp/k8s-webhook-server/serving-certs and for its CA to be in the validating
configuration it looks up by name. So the Secret is filled beforehand with a pair valid
for that name and for 127.0.0.1, the files are put where the kubelet would put them, and
the configuration (its PyTorchJob webhook, at 127.0.0.1) is registered before it starts.

Kueue, with its own certificate management off, also insists on a metrics certificate at
/etc/kueue/metrics/certs (where its Deployment mounts one), even with metrics off; the
first start writes a throw-away pair there.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane import pki, processes
from tests.controlplane.build import CONTROLLERS, GoBinary, binary_path, go_environment
from tests.controlplane.cluster import ControlPlane, save_state
from tests.controlplane.processes import ProcessRecord

CONTROLLER_NAMESPACE = "fairpool-controllers"
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
TRAINING_OPERATOR_SECRET = "training-operator-webhook-cert"
TRAINING_OPERATOR_CERTS = Path("/tmp/k8s-webhook-server/serving-certs")
_READY_TIMEOUT = 180.0
_CRD_TIMEOUT = 60.0

# Which Kubernetes objects a controller's webhooks may see: (API group, resource) ->
# label selector. A webhook on a resource not listed here is not registered at all.
Scope = Mapping[tuple[str, str], dict[str, Any] | None]


@dataclass(frozen=True)
class WorkloadController:
    """One controller: its binary, the Go module holding its release files, and how it runs."""

    name: str
    module: str
    crds: tuple[str, ...]
    webhook_manifest: str | None
    webhook_scope: Scope = field(default_factory=dict)
    validating_name: str | None = None
    """The name its validating configuration must have (one it looks up itself)."""

    @property
    def go_binary(self) -> GoBinary:
        return next(b for b in CONTROLLERS if b.name == self.name)


JOBSET = WorkloadController(
    name="jobset",
    module="sigs.k8s.io/jobset",
    crds=("config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml",),
    webhook_manifest="config/components/webhook/manifests.yaml",
    webhook_scope={
        ("jobset.x-k8s.io", "jobsets"): None,
        # As the release's own kustomization: only pods a JobSet made.
        ("", "pods"): {
            "matchExpressions": [{"key": "jobset.sigs.k8s.io/jobset-name", "operator": "Exists"}]
        },
    },
)
TRAINING_OPERATOR = WorkloadController(
    name="training-operator",
    module="github.com/kubeflow/training-operator",
    crds=("manifests/base/crds/kubeflow.org_pytorchjobs.yaml",),
    webhook_manifest="manifests/base/webhook/manifests.yaml",
    webhook_scope={("kubeflow.org", "pytorchjobs"): None},
    validating_name="validator.training-operator.kubeflow.org",
)
# All of them: Kueue watches its MultiKueue and provisioning kinds even when unused.
KUEUE_CRDS = (
    "admissionchecks",
    "clusterqueues",
    "cohorts",
    "localqueues",
    "multikueueclusters",
    "multikueueconfigs",
    "provisioningrequestconfigs",
    "resourceflavors",
    "topologies",
    "workloadpriorityclasses",
    "workloads",
)
KUEUE = WorkloadController(
    name="kueue",
    module="sigs.k8s.io/kueue",
    crds=tuple(f"config/components/crd/bases/kueue.x-k8s.io_{c}.yaml" for c in KUEUE_CRDS),
    webhook_manifest="config/components/webhook/manifests.yaml",
    webhook_scope={
        **{("kueue.x-k8s.io", c): None for c in KUEUE_CRDS},
        # Kueue leaves a Job without a queue name alone; so does its webhook here.
        ("batch", "jobs"): {
            "matchExpressions": [{"key": "kueue.x-k8s.io/queue-name", "operator": "Exists"}]
        },
    },
)
WORKLOAD_CONTROLLERS = {c.name: c for c in (JOBSET, TRAINING_OPERATOR, KUEUE)}


class ControllerError(RuntimeError):
    """A workload controller's release files cannot be found or installed."""


def module_dir(controller: WorkloadController, cache: Path) -> Path:
    """The downloaded module's folder in the Go module cache (go resolves the version)."""
    return _module_dir(controller.module, controller.go_binary.module_dir, cache)


@functools.cache
def _module_dir(module: str, wrapper: Path, cache: Path) -> Path:
    done = subprocess.run(
        ["go", "list", "-m", "-f", "{{.Dir}}", module],
        cwd=wrapper,
        env=go_environment(cache),
        capture_output=True,
        text=True,
        check=False,
    )
    folder = Path(done.stdout.strip())
    if done.returncode != 0 or not folder.is_dir():
        raise ControllerError(
            f"{module} is not in the Go module cache {cache / 'go' / 'mod'} "
            f"(run `make controlplane`): {done.stderr.strip()}"
        )
    return folder


def crd_documents(controller: WorkloadController, cache: Path) -> list[dict[str, Any]]:
    root = module_dir(controller, cache)
    out: list[dict[str, Any]] = []
    for relative in controller.crds:
        path = root / relative
        docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        if not docs or any(d.get("kind") != "CustomResourceDefinition" for d in docs):
            raise ControllerError(f"{path}: expected CustomResourceDefinitions only")
        out += docs
    return out


def install_crds(plane: ControlPlane, controller: WorkloadController) -> list[str]:
    """Create (or replace) the controller's CRDs and wait until each is Established."""
    extensions = k8s.ApiextensionsV1Api(plane.admin)
    names: list[str] = []
    for body in crd_documents(controller, Path(plane.state.cache)):
        name = body["metadata"]["name"]
        try:
            extensions.create_custom_resource_definition(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            current = extensions.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            extensions.replace_custom_resource_definition(name, body)
        names.append(name)
    for name in names:
        _wait(lambda n=name: _established(extensions, n), _CRD_TIMEOUT, f"CRD {name} Established")
    return names


def _established(extensions: k8s.ApiextensionsV1Api, name: str) -> bool:
    crd = extensions.read_custom_resource_definition(name)
    return any(
        c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
    )


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not {what} after {timeout:.0f}s")
        time.sleep(0.2)


def webhook_configurations(
    controller: WorkloadController, cache: Path, port: int, ca_bundle: bytes
) -> list[dict[str, Any]]:
    """The release's webhook configurations as this machine serves them (see `local_webhooks`)."""
    if controller.webhook_manifest is None:
        return []
    path = module_dir(controller, cache) / controller.webhook_manifest
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    out = local_webhooks(docs, controller.name, controller.webhook_scope, port, ca_bundle)
    for body in out:
        if controller.validating_name and body["kind"] == "ValidatingWebhookConfiguration":
            body["metadata"]["name"] = controller.validating_name
    return out


def local_webhooks(
    docs: list[dict[str, Any]], owner: str, scope: Scope, port: int, ca_bundle: bytes
) -> list[dict[str, Any]]:
    """Webhook configurations called at https://127.0.0.1:`port` (same paths) and trusted
    with `ca_bundle`. A webhook is kept only if every resource it names is in `scope`, and
    gets that resource's object selector; the configurations are named after `owner`, so
    two controllers' configurations never collide."""
    bundle = base64.b64encode(ca_bundle).decode()
    out: list[dict[str, Any]] = []
    for doc in docs:
        kept = []
        for hook in doc.get("webhooks", []):
            resources = {
                (group, resource.split("/")[0])
                for rule in hook.get("rules", [])
                for group in rule.get("apiGroups", [])
                for resource in rule.get("resources", [])
            }
            if not resources or not resources <= set(scope):
                continue
            path = hook["clientConfig"]["service"]["path"]
            selectors = [scope[r] for r in sorted(resources) if scope[r] is not None]
            kept.append(
                {
                    **hook,
                    "clientConfig": {"url": f"https://127.0.0.1:{port}{path}", "caBundle": bundle},
                    **({"objectSelector": selectors[0]} if selectors else {}),
                }
            )
        if kept:
            kind = "mutating" if doc["kind"].startswith("Mutating") else "validating"
            out.append(
                {
                    "apiVersion": doc["apiVersion"],
                    "kind": doc["kind"],
                    "metadata": {"name": f"fairpool-test-{owner}-{kind}"},
                    "webhooks": kept,
                }
            )
    return out


@dataclass
class RunningController:
    controller: WorkloadController
    record: ProcessRecord
    webhooks: list[tuple[str, str]]  # (kind, name) registered for it


def _config_text(controller: WorkloadController, health: int, webhook: int, certs: Path) -> str:
    common: dict[str, Any] = {
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {"port": webhook, "host": "127.0.0.1", "certDir": str(certs)},
        "metrics": {"bindAddress": "0"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health}"},
    }
    if controller is JOBSET:
        body = {"apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration"}
    elif controller is KUEUE:
        body = {
            "apiVersion": "config.kueue.x-k8s.io/v1beta2",
            "kind": "Configuration",
            "namespace": CONTROLLER_NAMESPACE,
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": ["batch/job"]},
            # The on-demand visibility API server would take a fixed port; no test reads it.
            "featureGates": {"VisibilityOnDemand": False},
        }
    else:
        raise ControllerError(f"{controller.name} takes no configuration file")
    return yaml.safe_dump({**body, **common}, sort_keys=False)


def _command(
    controller: WorkloadController, binary: Path, folder: Path, health: int, webhook: int
) -> list[str]:
    if controller is TRAINING_OPERATOR:
        return [
            str(binary),
            "--metrics-bind-address=0",
            f"--health-probe-bind-address=127.0.0.1:{health}",
            f"--webhook-server-port={webhook}",
            "--enable-scheme=pytorchjob",
            "--leader-elect=false",
        ]
    certs = folder / "certs"
    config = folder / "config.yaml"
    config.write_text(_config_text(controller, health, webhook, certs))
    return [str(binary), f"--config={config}"]


def _kueue_metrics_certificate(certs: Path) -> None:
    """Kueue without its internal certificate management loads a metrics certificate from
    a fixed path (where its Deployment mounts a Secret) and exits if there is none, even
    with metrics off. Any valid pair will do, since metrics are off: the first start puts
    one there, later starts keep what is there."""
    KUEUE_METRICS_CERTS.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        target = KUEUE_METRICS_CERTS / name
        if not target.is_file():
            partial = target.with_name(f".{name}.partial")
            partial.write_bytes((certs / name).read_bytes())
            partial.chmod(0o600)
            partial.replace(target)


def _training_operator_certificates(core: k8s.CoreV1Api) -> bytes:
    """The training operator's certificate rotator keeps its CA and serving certificate in
    a Secret and waits until the kubelet has mounted them in a fixed folder. Here the
    Secret is filled beforehand with a pair valid for the in-cluster name it checks and
    for 127.0.0.1 (and for longer than its 90-day renewal horizon, so it keeps it), and
    the files are put where the kubelet would put them."""
    pem = pki.webhook_certificate(
        f"training-operator.{CONTROLLER_NAMESPACE}.svc",
        ca_name="training-operator-ca",
        validity=dt.timedelta(days=730),
    )
    body = {
        "metadata": {"name": TRAINING_OPERATOR_SECRET},
        "data": {k: base64.b64encode(v).decode() for k, v in pem.items()},
    }
    with contextlib.suppress(ApiException):
        core.delete_namespaced_secret(TRAINING_OPERATOR_SECRET, CONTROLLER_NAMESPACE)
    core.create_namespaced_secret(CONTROLLER_NAMESPACE, body)  # type: ignore[arg-type]
    TRAINING_OPERATOR_CERTS.mkdir(parents=True, exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        partial = TRAINING_OPERATOR_CERTS / f".{name}.partial"
        partial.write_bytes(pem[name])
        partial.chmod(0o600)
        partial.replace(TRAINING_OPERATOR_CERTS / name)
    return pem["ca.crt"]


def _ensure_namespace(core: k8s.CoreV1Api, name: str) -> None:
    try:
        core.create_namespace({"metadata": {"name": name}})  # type: ignore[arg-type]
    except ApiException as exc:
        if exc.status != 409:
            raise


def start_controller(plane: ControlPlane, controller: WorkloadController) -> RunningController:
    """Install the controller's CRDs, start it, wait until it is ready and register its
    webhooks. The process is recorded in the cluster's state, so `stop` ends it too."""
    cache = Path(plane.state.cache)
    binary = binary_path(controller.name, cache)
    if not binary.is_file():
        raise ControllerError(f"{binary} is not built; run `make controlplane`")
    install_crds(plane, controller)
    core = k8s.CoreV1Api(plane.admin)
    _ensure_namespace(core, CONTROLLER_NAMESPACE)
    folder = plane.directory / "controllers" / controller.name
    (folder / "certs").mkdir(parents=True, exist_ok=True)
    pki_dir = plane.directory / "pki"
    for name, source in (("tls.crt", "apiserver.crt"), ("tls.key", "apiserver.key")):
        (folder / "certs" / name).write_bytes((pki_dir / source).read_bytes())
        (folder / "certs" / name).chmod(0o600)
    if controller is KUEUE:
        _kueue_metrics_certificate(folder / "certs")
    env_extra: dict[str, str] = {"KUBECONFIG": str(plane.kubeconfig("admin"))}
    ca = (pki_dir / "ca.crt").read_bytes()
    if controller is TRAINING_OPERATOR:
        env_extra["MY_POD_NAMESPACE"] = CONTROLLER_NAMESPACE
        ca = _training_operator_certificates(core)
    health, webhook = processes.free_port(), processes.free_port()
    command = _command(controller, binary, folder, health, webhook)
    record = processes.spawn(
        controller.name,
        command,
        plane.log(controller.name),
        die_with_parent=plane.state.die_with_parent,
        env=env_extra,
    )
    plane.state.processes.append(record)
    save_state(plane.state)
    registered: list[tuple[str, str]] = []
    admission = k8s.AdmissionregistrationV1Api(plane.admin)
    webhooks = webhook_configurations(controller, cache, webhook, ca)
    # A controller that looks its configuration up waits for it before it is ready; the
    # others get theirs once they serve, so that no request waits on a server not up yet.
    early = controller.validating_name is not None
    running = RunningController(controller, record, registered)
    try:
        if early:
            running.webhooks = _register(admission, webhooks)
        processes.wait_ready(
            record,
            lambda: processes.http_ok(f"http://127.0.0.1:{health}/readyz"),
            _READY_TIMEOUT,
        )
        if not early:
            running.webhooks = _register(admission, webhooks)
    except BaseException:
        stop_controller(plane, running)
        raise
    return running


def _register(
    admission: k8s.AdmissionregistrationV1Api, webhooks: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    registered: list[tuple[str, str]] = []
    for body in webhooks:
        name = body["metadata"]["name"]
        if body["kind"] == "MutatingWebhookConfiguration":
            with contextlib.suppress(ApiException):
                admission.delete_mutating_webhook_configuration(name)
            admission.create_mutating_webhook_configuration(body)
        else:
            with contextlib.suppress(ApiException):
                admission.delete_validating_webhook_configuration(name)
            admission.create_validating_webhook_configuration(body)
        registered.append((body["kind"], name))
    return registered


def stop_controller(plane: ControlPlane, running: RunningController) -> None:
    """Remove its webhook configurations first (no request may wait on a stopped
    process), then end the process."""
    admission = k8s.AdmissionregistrationV1Api(plane.admin)
    for kind, name in running.webhooks:
        with contextlib.suppress(ApiException):
            if kind == "MutatingWebhookConfiguration":
                admission.delete_mutating_webhook_configuration(name)
            else:
                admission.delete_validating_webhook_configuration(name)
    plane.stop_process(running.controller.name)
