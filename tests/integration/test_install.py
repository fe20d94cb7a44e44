"""The chart installed on the local control plane (a real kube-apiserver, kwok nodes).

The rendered chart is applied server-side, CRDs first; the Policy's schema refuses a bad
object and the daemon refuses what the schema cannot say (Ready=False and an Event).
Then `fairpool run` runs with the scheduler's arguments from the chart and a token of the
chart's own ServiceAccount (TokenRequest API), and binds a pod: the chart's RBAC is
enough. SelfSubjectAccessReviews with the same tokens show it is no more than that, and
that the meter's ServiceAccount can do nothing at all. `fairpool meter` runs with the
meter's arguments and the chart's policy file against a real Prometheus.

The local kube-controller-manager runs no Deployment controller, so the Deployments make
no pods; the processes stand in for them, as the kubelet would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from reports.ledger import Ledger
from tests.chart import container, one, render
from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.controlplane.crds import wait_established
from tests.integration.prometheus_fixtures import (
    at,
    metering_scenario,
    metering_tsdb,
    prometheus,
)
from tests.integration.test_daemon import H100, Pool, wait_until
from tests.promtest import PrometheusServer

pytestmark = pytest.mark.integration
__all__ = ["metering_scenario", "metering_tsdb", "prometheus"]  # fixtures used here

DEMO_POLICY = Path(__file__).resolve().parents[2] / "policies" / "defaults" / "policy.yaml"
MEMBER = "installer"


@dataclass
class Install:
    plane: ControlPlane
    pool: Pool
    release: str
    namespace: str
    objects: list[dict[str, Any]]
    folder: Path

    @property
    def scheduler_account(self) -> str:
        return f"{self.release}-fairpool-scheduler"

    @property
    def meter_account(self) -> str:
        return f"{self.release}-fairpool-meter"

    @property
    def policy_name(self) -> str:
        return self.release


def kubectl(
    plane: ControlPlane, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    command = [
        str(binary_path("kubectl", Path(plane.state.cache))),
        f"--kubeconfig={plane.kubeconfig('admin')}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if check:
        assert done.returncode == 0, f"kubectl {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def _apply(plane: ControlPlane, objects: list[dict[str, Any]], path: Path) -> str:
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return kubectl(plane, "apply", "--server-side", "--field-manager=helm", "-f", str(path)).stdout


def _policy_spec(pool: Pool) -> dict[str, Any]:
    """The demo consortium plus one member owning this test's nodes."""
    spec: dict[str, Any] = yaml.safe_load(DEMO_POLICY.read_text())["spec"]
    spec["members"].append({"name": MEMBER, "namespaces": [pool.ns("a")], "weight": 1})
    return spec


@pytest.fixture
def install(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Install]:
    release = f"fpi-{uuid.uuid4().hex[:6]}"
    pool = Pool(control_plane, release, k8s.CoreV1Api(control_plane.admin))
    pool.add_member("a")
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump({"policy": {"name": release, "spec": _policy_spec(pool)}}, sort_keys=False)
    )
    objects = render([values], namespace=namespace, release=release)
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    rest = [o for o in objects if o["kind"] != "CustomResourceDefinition"]
    assert crds, "the chart ships the Policy CRD"
    _apply(control_plane, crds, tmp_path / "crds.yaml")
    for crd in crds:
        wait_established(control_plane.admin, crd["metadata"]["name"])
    _apply(control_plane, rest, tmp_path / "chart.yaml")
    done = Install(control_plane, pool, release, namespace, objects, tmp_path)
    try:
        yield done
    finally:
        rbac = k8s.RbacAuthorizationV1Api(control_plane.admin)
        admission = k8s.AdmissionregistrationV1Api(control_plane.admin)
        for o in objects:
            name = o["metadata"]["name"]
            if o["kind"] == "ClusterRole":
                rbac.delete_cluster_role(name)
            elif o["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(name)
            elif o["kind"] == "ValidatingAdmissionPolicyBinding":
                # Cluster-wide: left behind, it would refuse the other tests' daemons,
                # which run as the admin, every annotation they write.
                admission.delete_validating_admission_policy_binding(name)
            elif o["kind"] == "ValidatingAdmissionPolicy":
                admission.delete_validating_admission_policy(name)
        if any(o["kind"] == "ValidatingAdmissionPolicy" for o in objects):
            _until_the_admission_policy_is_gone(control_plane, pool.ns("a"))
        custom = k8s.CustomObjectsApi(control_plane.admin)
        for name in (release, f"{release}-bad"):
            try:
                custom.delete_cluster_custom_object("fairpool.io", "v1", "policies", name)
            except ApiException as exc:
                if exc.status != 404:
                    raise


def _until_the_admission_policy_is_gone(plane: ControlPlane, namespace: str) -> None:
    """The API server drops a deleted policy from its cache a moment later: until then it
    would refuse the next tests' daemons (the admin) the annotations they write."""
    core = k8s.CoreV1Api(plane.admin)
    probe = {
        "metadata": {"name": "admission-probe", "annotations": {"fairpool.io/reclaims": "1"}},
        "spec": {"containers": [{"name": "c", "image": "example.invalid/probe:1"}]},
    }

    def passes() -> bool:
        try:
            core.create_namespaced_pod(namespace, probe, dry_run="All")  # type: ignore[arg-type]
        except ApiException as exc:
            if exc.status == 403:
                return False
            raise
        return True

    wait_until(passes, what="the deleted admission policy to stop refusing")


def _service_account_kubeconfig(install: Install, account: str) -> Path:
    """A kubeconfig holding a token of the chart's ServiceAccount (TokenRequest API), as
    the kubelet would mount it into the pod."""
    core = k8s.CoreV1Api(install.plane.admin)
    request = core.create_namespaced_service_account_token(
        account,
        install.namespace,
        {"spec": {"expirationSeconds": 3600}},  # type: ignore[arg-type]
    )
    token = request.status.token
    ca = install.plane.directory / "pki" / "ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "local",
                "cluster": {"server": install.plane.server, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": account, "context": {"cluster": "local", "user": account}}],
        "current-context": account,
    }
    path = install.folder / f"{account}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _client(kubeconfig: Path) -> k8s.ApiClient:
    from kubernetes import config as k8s_config

    return k8s_config.new_client_from_config(config_file=str(kubeconfig))


def _impersonating(admin: k8s.ApiClient, user: str) -> k8s.ApiClient:
    """The admin's client acting as `user`, with every right (group system:masters): only
    the admission policy can refuse it."""
    api = k8s.ApiClient(admin.configuration)
    api.set_default_header("Impersonate-User", user)
    api.set_default_header("Impersonate-Group", "system:masters")
    return api


def _process_args(deployment: dict[str, Any], replace: dict[str, str | None]) -> list[str]:
    """The container's args with some flags replaced (value) or dropped (None)."""
    out: list[str] = []
    for arg in container(deployment)["args"]:
        flag = arg.split("=", 1)[0]
        if flag in replace:
            value = replace[flag]
            if value is not None:
                out.append(value)
        else:
            out.append(arg)
    return out


def _fairpool() -> str:
    return str(Path(sys.executable).with_name("fairpool"))


def _port(log: Path, name: str) -> int:
    def found() -> int | None:
        for line in log.read_text().splitlines():
            if line.startswith(f"{name} "):
                return int(line.split()[1])
        return None

    return int(wait_until(found, timeout=60, what=f"{name} in {log}"))


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _ready_condition(install: Install, name: str) -> dict[str, Any] | None:
    custom = k8s.CustomObjectsApi(install.plane.admin)
    policy = custom.get_cluster_custom_object("fairpool.io", "v1", "policies", name)
    conditions = (policy.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), None)


def test_schema_refuses_a_bad_policy(install: Install) -> None:
    bad = {
        "apiVersion": "fairpool.io/v1",
        "kind": "Policy",
        "metadata": {"name": f"{install.release}-bad"},
        "spec": {**_policy_spec(install.pool)},
    }
    bad["spec"]["members"] = [{**bad["spec"]["members"][0], "weight": 0}]
    path = install.folder / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    refused = kubectl(install.plane, "apply", "--server-side", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert "spec.members[0].weight" in refused.stderr, refused.stderr
    custom = k8s.CustomObjectsApi(install.plane.admin)
    listed = custom.list_cluster_custom_object("fairpool.io", "v1", "policies")["items"]
    assert install.release in {p["metadata"]["name"] for p in listed}
    assert f"{install.release}-bad" not in {p["metadata"]["name"] for p in listed}


def test_scheduler_binds_with_the_charts_service_account_and_refuses_a_bad_policy(
    install: Install,
) -> None:
    # A node of the member the test added to the demo policy.
    nodes = install.pool.add_nodes(MEMBER, count=1, gpus=8, model=H100)
    core = k8s.CoreV1Api(install.plane.admin)
    kubeconfig = _service_account_kubeconfig(install, install.scheduler_account)
    deployment = one(install.objects, "Deployment", install.scheduler_account)
    args = _process_args(
        deployment,
        {
            "--in-cluster": f"--kubeconfig={kubeconfig}",
            "--identity": "--identity=install-test-0",
            "--metrics-port": "--metrics-port=0",
        },
    )
    env = {**os.environ, "FAIRPOOL_LEDGER": f"sqlite:///{install.folder / 'ledger.db'}"}
    log = install.folder / "scheduler.log"
    with log.open("ab") as out:
        daemon = subprocess.Popen(
            [_fairpool(), *args, "--metrics-address=127.0.0.1"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        port = _port(log, "metrics-port")
        probes = container(deployment)
        for probe in ("livenessProbe", "readinessProbe"):
            path = probes[probe]["httpGet"]["path"]
            wait_until(
                lambda path=path: _http_status(f"http://127.0.0.1:{port}{path}") == 200,
                timeout=60,
                what=f"{path} answers 200",
            )
        install.pool.pod("a", "train")
        bound = wait_until(lambda: install.pool.bound("a"), timeout=60, what="the pod bound")
        assert bound == {"train": nodes[0]}
        ready = wait_until(
            lambda: _ready_condition(install, install.policy_name), what="Ready condition"
        )
        assert ready["status"] == "True", ready

        # A policy the schema accepts but the daemon cannot use: a member purchasing a GPU
        # model that gpuModels does not list (the schema cannot relate two fields).
        custom = k8s.CustomObjectsApi(install.plane.admin)
        policy = custom.get_cluster_custom_object(
            "fairpool.io", "v1", "policies", install.policy_name
        )
        spec = policy["spec"]
        spec["members"][0]["purchased"] = {"no-such-model": 1}
        custom.patch_cluster_custom_object(
            "fairpool.io", "v1", "policies", install.policy_name, {"spec": spec}
        )
        refused = wait_until(
            lambda: (
                (c := _ready_condition(install, install.policy_name))
                and c["status"] == "False"
                and c
            ),
            what="Ready=False",
        )
        assert refused["reason"], refused
        events = wait_until(
            lambda: [
                e
                for e in core.list_event_for_all_namespaces(
                    field_selector=f"involvedObject.name={install.policy_name}"
                ).items
                if e.involved_object.kind == "Policy" and e.type == "Warning"
            ],
            what="a Warning event on the Policy",
        )
        assert events[0].message
        # The policy in force is still the last good one: scheduling goes on.
        install.pool.pod("a", "train-2")
        wait_until(lambda: len(install.pool.bound("a")) == 2, timeout=60, what="second bind")
        text = log.read_text()
        assert "Forbidden" not in text and " 403" not in text, text[-3000:]
    finally:
        daemon.send_signal(signal.SIGTERM)
        code = daemon.wait(timeout=30)
    assert code == 0, log.read_text()[-3000:]


# (verb, group, resource, subresource, namespace or "" for cluster-wide, name)
Access = tuple[str, str, str, str, str, str]


def _allowed(api: k8s.ApiClient, access: Access, namespace: str) -> bool:
    verb, group, resource, subresource, where, name = access
    review = k8s.AuthorizationV1Api(api).create_self_subject_access_review(
        {  # type: ignore[arg-type]
            "spec": {
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": namespace if where == "NS" else where,
                    "name": name,
                }
            }
        }
    )
    return bool(review.status.allowed)


SCHEDULER_MUST_NOT: list[Access] = [
    ("list", "", "secrets", "", "", ""),
    ("get", "", "secrets", "", "NS", "fairpool-api-tokens"),
    ("create", "", "pods", "", "NS", ""),
    ("update", "", "pods", "", "NS", ""),
    ("deletecollection", "", "pods", "", "", ""),
    ("update", "", "nodes", "", "", ""),
    ("patch", "", "nodes", "", "", ""),
    ("delete", "", "nodes", "", "", ""),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", "", ""),
    ("create", "", "serviceaccounts", "token", "NS", "default"),
    ("impersonate", "", "serviceaccounts", "", "", ""),
    ("delete", "", "namespaces", "", "", ""),
    ("update", "", "configmaps", "", "NS", "some-other-configmap"),
    ("update", "", "configmaps", "", "kube-system", "fairpool-usage-history"),
    ("update", "coordination.k8s.io", "leases", "", "kube-system", "kube-scheduler"),
    ("delete", "fairpool.io", "policies", "", "", ""),
    ("update", "fairpool.io", "policies", "", "", "another-policy"),
    ("create", "apiextensions.k8s.io", "customresourcedefinitions", "", "", ""),
    ("update", "apps", "deployments", "", "NS", ""),
    # The owners gangs are read from: read only.
    ("create", "batch", "jobs", "", "NS", ""),
    ("delete", "batch", "jobs", "", "NS", ""),
    ("update", "jobset.x-k8s.io", "jobsets", "", "NS", ""),  # patch only: the reclaim record
    ("update", "kubeflow.org", "pytorchjobs", "", "NS", ""),
    ("list", "kubeflow.org", "tfjobs", "", "", ""),
    # Least privilege: events are posted, never changed; the history and the Policy's
    # status are replaced or patched the one way the code does.
    ("patch", "", "events", "", "NS", ""),
    ("create", "events.k8s.io", "events", "", "NS", ""),
    ("patch", "", "configmaps", "", "NS", "fairpool-usage-history"),
    ("get", "fairpool.io", "policies", "status", "", ""),
]
SCHEDULER_MUST: list[Access] = [
    ("create", "", "pods", "binding", "", ""),
    # Nominations, and the DisruptionTarget condition on a gang's pods before deleting
    # them (scheduler/k8s/binder.py): without it a gang Job counted the deletion as a
    # failure against its backoffLimit.
    ("patch", "", "pods", "status", "NS", ""),
    ("delete", "", "pods", "", "NS", ""),
    ("patch", "", "pods", "", "NS", ""),  # preemption annotations on victims
    ("create", "", "configmaps", "", "NS", ""),  # the usage history's first write
    ("create", "coordination.k8s.io", "leases", "", "NS", ""),
    ("create", "", "pods", "eviction", "", ""),
    ("create", "", "events", "", "NS", ""),
    ("get", "", "configmaps", "", "NS", "HISTORY"),
    ("list", "", "nodes", "", "", ""),
    ("watch", "fairpool.io", "policies", "", "", ""),
    ("patch", "fairpool.io", "policies", "status", "", "POLICY"),
    ("update", "coordination.k8s.io", "leases", "", "NS", "LEASE"),
    ("update", "", "configmaps", "", "NS", "HISTORY"),
    ("watch", "batch", "jobs", "", "", ""),
    ("list", "jobset.x-k8s.io", "jobsets", "", "", ""),
    ("watch", "kubeflow.org", "pytorchjobs", "", "", ""),
    ("patch", "kubeflow.org", "pytorchjobs", "", "NS", ""),  # a reclaimed job's record
    ("watch", "scheduling.volcano.sh", "podgroups", "", "", ""),
]
METER_MUST_NOT: list[Access] = [
    ("list", "", "pods", "", "", ""),
    ("get", "", "nodes", "", "", ""),
    ("get", "fairpool.io", "policies", "", "", ""),
    ("get", "", "configmaps", "", "NS", ""),
    ("list", "", "secrets", "", "NS", ""),
    ("create", "", "events", "", "NS", ""),
]


def test_service_accounts_have_no_more_than_they_need(install: Install) -> None:
    names = {
        "POLICY": install.policy_name,
        "LEASE": install.scheduler_account,
        "HISTORY": f"{install.release}-fairpool-usage-history",
    }
    scheduler = _client(_service_account_kubeconfig(install, install.scheduler_account))
    meter = _client(_service_account_kubeconfig(install, install.meter_account))
    for access in SCHEDULER_MUST:
        verb, group, resource, sub, where, name = access
        filled: Access = (verb, group, resource, sub, where, names.get(name, name))
        assert _allowed(scheduler, filled, install.namespace), f"scheduler needs {filled}"
    granted = [a for a in SCHEDULER_MUST_NOT if _allowed(scheduler, a, install.namespace)]
    assert not granted, f"the scheduler's ServiceAccount may {granted}"
    granted = [a for a in METER_MUST_NOT if _allowed(meter, a, install.namespace)]
    assert not granted, f"the meter's ServiceAccount may {granted}"


def test_meter_runs_with_the_charts_arguments_and_policy(
    install: Install, prometheus: PrometheusServer
) -> None:
    deployment = one(install.objects, "Deployment", install.meter_account)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    policy = one(install.objects, "ConfigMap", f"{install.release}-fairpool-meter-policy")
    policy_file = install.folder / "meter-policy.yaml"
    policy_file.write_text(policy["data"]["policy.yaml"])
    # One backfill of the scenario's hours instead of the hourly loop (--watch).
    args = _process_args(
        deployment,
        {
            "--watch": None,
            "--reports-dir": None,
            "--metrics-port": None,
            "--prometheus": f"--prometheus={prometheus.url}",
            "--policy": f"--policy={policy_file}",
        },
    )
    ledger_url = f"sqlite:///{install.folder / 'meter-ledger.db'}"
    done = subprocess.run(
        [_fairpool(), *args, "--from", at(8).isoformat(), "--to", at(14).isoformat()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FAIRPOOL_LEDGER": ledger_url},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    with Ledger(ledger_url) as ledger:
        usage = ledger.usage_frame(at(8), at(14))
    assert set(usage["member"]) >= {"lab-bio", "physics"}, usage


TRUSTED = ("fairpool.io/member", "fairpool.io/reclaims", "fairpool.io/reclaimed-at")


def test_only_the_scheduler_writes_the_annotations_it_trusts(install: Install) -> None:
    """A user who wrote `fairpool.io/reclaims: "3"` on a borrowing pod (or its Job) made
    it unreclaimable, and `fairpool.io/member` moved its GPUs to another member: the
    chart's ValidatingAdmissionPolicy lets only the scheduler's ServiceAccount set or
    change them, on create and on update, whoever else asks (here with every RBAC right)."""
    namespace = install.pool.ns("a")  # the test's member's namespace
    mallory = k8s.CoreV1Api(_impersonating(install.plane.admin, "mallory"))
    scheduler = k8s.CoreV1Api(
        _client(_service_account_kubeconfig(install, install.scheduler_account))
    )

    def body(name: str, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "schedulerName": "fairpool",
                "containers": [{"name": "c", "image": "example.invalid/train:1"}],
            },
        }

    def refused(call: Any, *args: Any) -> str:
        try:
            call(*args)
        except ApiException as exc:
            if exc.status == 403 and "written by fairpool's scheduler only" in (exc.body or ""):
                return str(exc.body)
            raise
        return ""

    # A new policy takes effect within moments: until then, what it would refuse passes.
    probe = iter(range(1000))

    def first_refusal() -> str:
        name = f"probe-{next(probe)}"
        said = refused(
            mallory.create_namespaced_pod, namespace, body(name, {"fairpool.io/reclaims": "3"})
        )
        if not said:
            mallory.delete_namespaced_pod(name, namespace)
        return said

    wait_until(first_refusal, what="the admission policy to refuse")
    for n, key in enumerate(TRUSTED):
        assert refused(mallory.create_namespaced_pod, namespace, body(f"set-{n}", {key: "x"})), key
    mallory.create_namespaced_pod(namespace, body("plain", {"example.com/note": "mine"}))
    for key in TRUSTED:
        patch = {"metadata": {"annotations": {key: "3"}}}
        assert refused(mallory.patch_namespaced_pod, "plain", namespace, patch), key
    # Other annotations stay the user's.
    mallory.patch_namespaced_pod(
        "plain", namespace, {"metadata": {"annotations": {"example.com/note": "changed"}}}
    )
    # The scheduler writes them (the evictor's reclaim record, the binder's member) ...
    record = {"fairpool.io/reclaims": "1", "fairpool.io/reclaimed-at": "2026-12-07T09:00:00Z"}

    def written() -> bool:
        # An earlier test's release (another ServiceAccount) may be refused for a moment
        # after its policy was deleted, until the API server's policy cache drops it.
        said = refused(
            scheduler.patch_namespaced_pod,
            "plain",
            namespace,
            {"metadata": {"annotations": record}},
        )
        return not said

    wait_until(written, what="the scheduler's own write to pass")
    # ... and another principal's update that keeps them as they are passes.
    mallory.patch_namespaced_pod(
        "plain", namespace, {"metadata": {"annotations": {"example.com/note": "again"}}}
    )
    assert refused(
        mallory.patch_namespaced_pod,
        "plain",
        namespace,
        {"metadata": {"annotations": {"fairpool.io/reclaims": None}}},
    ), "removing the record"
    # On the objects that recreate pods too: a Job's template or its own annotations.
    jobs = k8s.BatchV1Api(_impersonating(install.plane.admin, "mallory"))
    job = {
        "metadata": {"name": "spoof", "annotations": {"fairpool.io/reclaims": "3"}},
        "spec": {
            "template": {
                "spec": {
                    "schedulerName": "fairpool",
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "example.invalid/train:1"}],
                }
            }
        },
    }
    assert refused(jobs.create_namespaced_job, namespace, job)
