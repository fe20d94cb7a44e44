"""The chart over a cluster's life, as an operator runs it: `helm install`, an upgrade
that changes the CRD, `helm uninstall`, with the commands docs/install.md gives, against
the local control plane (a real kube-apiserver)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.chart import CHART, helm
from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.controlplane.crds import wait_established
from tests.controlplane.layout import REPO_ROOT
from tests.integration.conftest import TEST_NAMESPACE_LABEL
from tests.integration.test_daemon import wait_until

pytestmark = pytest.mark.integration

INSTALL_DOC = REPO_ROOT / "docs" / "install.md"
CRDS = "deploy/helm/fairpool/crds/"


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _helm(plane: ControlPlane, *args: str) -> str:
    done = _run([str(helm()), f"--kubeconfig={plane.kubeconfig('admin')}", *args])
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _documented(pattern: str) -> str:
    """The one command of docs/install.md in a code block matching `pattern`."""
    blocks = re.findall(r"^```\w*\n(.*?)^```", INSTALL_DOC.read_text(), flags=re.DOTALL | re.M)
    found = [line for block in blocks for line in block.splitlines() if re.search(pattern, line)]
    assert len(found) == 1, f"{pattern!r} in docs/install.md: {found}"
    return found[0]


@pytest.fixture
def crd_chart(control_plane: ControlPlane, namespace: str, tmp_path: Path) -> Iterator[Path]:
    """A chart holding only the Policy CRD, in a group of its own (the shared control
    plane's fairpool.io CRD stays as it is), installed by `helm install`: Helm creates
    the CRD, as it does for fairpool's chart."""
    group = f"t{uuid.uuid4().hex[:8]}.fairpool.test"
    chart = tmp_path / "chart"
    (chart / "crds").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        "apiVersion: v2\nname: crd-only\nversion: 0.1.0\ntype: application\n"
    )
    source = (CHART / "crds" / "policies.fairpool.io.yaml").read_text()
    (chart / "crds" / "policies.yaml").write_text(source.replace("fairpool.io", group))
    _helm(control_plane, "install", "crd-only", str(chart), "--namespace", namespace)
    name = f"policies.{group}"
    wait_established(control_plane.admin, name)
    try:
        yield chart
    finally:
        extensions = k8s.ApiextensionsV1Api(control_plane.admin)
        try:
            extensions.delete_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def test_the_documented_crd_upgrade_applies_a_changed_crd_over_helms(
    control_plane: ControlPlane, crd_chart: Path
) -> None:
    # The next release's CRD: one more field.
    file = crd_chart / "crds" / "policies.yaml"
    crd = yaml.safe_load(file.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["addedInAnUpgrade"] = {"type": "string"}
    file.write_text(yaml.safe_dump(crd, sort_keys=False))

    command = _documented(r"kubectl apply .*" + re.escape(CRDS))
    args = command.split()[1:]
    args[args.index(CRDS)] = str(crd_chart / "crds")
    kubectl = str(binary_path("kubectl", Path(control_plane.state.cache)))
    done = _run([kubectl, f"--kubeconfig={control_plane.kubeconfig('admin')}", *args])
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"

    served = k8s.ApiextensionsV1Api(control_plane.admin).read_custom_resource_definition(
        crd["metadata"]["name"]
    )
    properties = served.spec.versions[0].schema.open_apiv3_schema.properties["spec"].properties
    assert "addedInAnUpgrade" in properties


def _chart_args(manifest: str, kind: str, name: str) -> list[str]:
    for doc in yaml.safe_load_all(manifest):
        if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
            args: list[str] = doc["spec"]["template"]["spec"]["containers"][0]["args"]
            return args
    raise AssertionError(f"{kind} {name} not in the release's manifest")


def _left_in(plane: ControlPlane, namespace: str) -> set[str]:
    core = k8s.CoreV1Api(plane.admin)
    coordination = k8s.CoordinationV1Api(plane.admin)
    left = {
        f"configmap/{c.metadata.name}"
        for c in core.list_namespaced_config_map(namespace).items
        if c.metadata.name != "kube-root-ca.crt"  # the API server's, in every namespace
    }
    left |= {
        f"pvc/{c.metadata.name}"
        for c in core.list_namespaced_persistent_volume_claim(namespace).items
    }
    left |= {
        f"lease/{c.metadata.name}" for c in coordination.list_namespaced_lease(namespace).items
    }
    return left


def test_uninstall_leaves_what_the_docs_say_and_their_commands_remove_it(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = f"fpu-{uuid.uuid4().hex[:6]}"
    full = f"{release}-fairpool"
    spec = yaml.safe_load((REPO_ROOT / "policies/defaults/policy.yaml").read_text())["spec"]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "policy": {"name": release, "spec": spec},
                # Cluster-wide: it would refuse the annotations of the other tests' daemons.
                "admissionPolicy": {"enabled": False},
            }
        )
    )
    _helm(control_plane, "install", release, str(CHART), "-n", namespace, "--values", str(values))
    custom = k8s.CustomObjectsApi(control_plane.admin)

    # The scheduler, with the chart's arguments, writes its Lease and usage history.
    manifest = _helm(control_plane, "get", "manifest", release, "-n", namespace)
    args = [
        a
        for a in _chart_args(manifest, "Deployment", f"{full}-scheduler")
        if a.split("=")[0] not in ("--in-cluster", "--identity", "--metrics-port")
    ]
    log = tmp_path / "scheduler.log"
    env = {**os.environ, "FAIRPOOL_LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}"}
    with log.open("ab") as out:
        daemon = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("fairpool")),
                *args,
                f"--kubeconfig={control_plane.kubeconfig('admin')}",
                "--identity=uninstall-test",
                "--metrics-port=0",
                "--metrics-address=127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        wanted = {f"configmap/{full}-usage-history", f"lease/{full}-scheduler"}
        wait_until(
            lambda: wanted <= _left_in(control_plane, namespace),
            timeout=60,
            what="the Lease and the usage history",
        )
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)

    def policy_exists() -> bool:
        try:
            custom.get_cluster_custom_object("fairpool.io", "v1", "policies", release)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # Handed over to GitOps: the chart no longer makes the Policy, which stays.
    _helm(
        control_plane,
        *("upgrade", release, str(CHART), "-n", namespace, "--values", str(values)),
        *("--set", "policy.create=false", "--set", "meter.enabled=false"),
    )
    assert policy_exists()

    left = {
        f"pvc/{full}-ledger",
        f"pvc/{full}-reports",
        f"configmap/{full}-usage-history",
        f"lease/{full}-scheduler",
    }
    _helm(control_plane, "uninstall", release, "-n", namespace)
    assert _left_in(control_plane, namespace) == left
    assert policy_exists()
    # Installed again under the same name: it takes up what was kept.
    _helm(control_plane, "install", release, str(CHART), "-n", namespace, "--values", str(values))
    _helm(control_plane, "uninstall", release, "-n", namespace)
    assert _left_in(control_plane, namespace) == left
    assert policy_exists()

    # The docs' clean-up commands, for this release and namespace, remove all that was
    # left (all but the CRD's, which the other tests share).
    kubectl = str(binary_path("kubectl", Path(control_plane.state.cache)))
    commands = [
        _documented(r"kubectl -n fairpool-system delete " + kind)
        for kind in ("pvc", "configmap", "lease")
    ]
    commands.append(_documented(r"kubectl delete policy "))
    assert _documented(r"kubectl delete crd policies\.fairpool\.io")
    for command in commands:
        args = [
            namespace
            if a == "fairpool-system"
            else release
            if a == "consortium"
            else re.sub(r"^fairpool-", f"{full}-", a)
            for a in command.split("#")[0].split()[1:]
        ]
        # No pvc-protection controller runs here to drop the claims' finalizer: the claims
        # are deleted (marked), not gone.
        done = _run(
            [kubectl, f"--kubeconfig={control_plane.kubeconfig('admin')}", *args, "--wait=false"]
        )
        assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    core = k8s.CoreV1Api(control_plane.admin)
    claims = core.list_namespaced_persistent_volume_claim(namespace).items
    assert all(c.metadata.deletion_timestamp for c in claims), claims
    assert {a for a in _left_in(control_plane, namespace) if not a.startswith("pvc/")} == set()
    assert not policy_exists()


def test_a_second_release_that_would_fight_the_first_is_refused_at_install(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    core = k8s.CoreV1Api(control_plane.admin)
    other_namespace = f"{namespace}-b"
    core.create_namespace(
        {"metadata": {"name": other_namespace, "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
    )
    first, second = (f"fpt-{uuid.uuid4().hex[:6]}" for _ in range(2))
    spec = yaml.safe_load((REPO_ROOT / "policies/defaults/policy.yaml").read_text())["spec"]
    values = tmp_path / "values.yaml"
    # A scheduler name of this test's own: no other test's Deployment carries it.
    values.write_text(
        yaml.safe_dump({"policy": {"spec": spec}, "scheduler": {"schedulerName": first}})
    )
    common = ["--values", str(values), "--set", "admissionPolicy.enabled=false"]
    _helm(
        control_plane,
        "install",
        first,
        str(CHART),
        "-n",
        namespace,
        *common,
        "--set",
        f"policy.name={first}",
    )
    try:
        install_second = [
            str(helm()),
            f"--kubeconfig={control_plane.kubeconfig('admin')}",
            "install",
            second,
            str(CHART),
            "-n",
            other_namespace,
            *common,
            "--set",
            f"policy.name={second}",
        ]
        same_name = _run(install_second)
        assert same_name.returncode != 0
        assert "scheduler.schedulerName" in same_name.stderr, same_name.stderr
        assert f"{namespace}/{first}" in same_name.stderr, same_name.stderr

        with_admission = _run(
            [
                *install_second,
                "--set",
                f"scheduler.schedulerName={second}",
                "--set",
                "admissionPolicy.enabled=true",
            ]
        )
        assert with_admission.returncode != 0
        assert "admissionPolicy.enabled" in with_admission.stderr, with_admission.stderr
        assert (
            not k8s.AppsV1Api(control_plane.admin).list_namespaced_deployment(other_namespace).items
        )

        # Another scheduler name and no admission policy: the two live side by side, and
        # each upgrades.
        alone = _run([*install_second, "--set", f"scheduler.schedulerName={second}"])
        assert alone.returncode == 0, alone.stderr
        _helm(
            control_plane,
            "upgrade",
            first,
            str(CHART),
            "-n",
            namespace,
            *common,
            "--set",
            f"policy.name={first}",
        )
    finally:
        # Cluster-scoped objects (ClusterRoles, PriorityClasses) outlive the namespaces.
        _run(
            [
                str(helm()),
                f"--kubeconfig={control_plane.kubeconfig('admin')}",
                "uninstall",
                second,
                "-n",
                other_namespace,
                "--ignore-not-found",
            ]
        )
        _helm(control_plane, "uninstall", first, "-n", namespace)


def test_a_claims_storage_class_change_is_refused_naming_the_value(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = f"fps-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((REPO_ROOT / "policies/defaults/policy.yaml").read_text())["spec"]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "policy": {"name": release, "spec": spec},
                "scheduler": {"schedulerName": release},
                "admissionPolicy": {"enabled": False},
                "ledger": {"sqlite": {"storageClassName": "class-a"}},
            }
        )
    )
    chart = ["--values", str(values), "-n", namespace]
    _helm(control_plane, "install", release, str(CHART), *chart)
    try:
        changed = _run(
            [
                str(helm()),
                f"--kubeconfig={control_plane.kubeconfig('admin')}",
                "upgrade",
                release,
                str(CHART),
                *chart,
                "--set",
                "ledger.sqlite.storageClassName=class-b",
            ]
        )
        assert changed.returncode != 0
        assert "ledger.sqlite.storageClassName" in changed.stderr, changed.stderr
        assert '"class-a"' in changed.stderr, changed.stderr
        # Refused before anything was applied: the release is as it was.
        history = json.loads(
            _helm(control_plane, "history", release, "-n", namespace, "--output", "json")
        )
        assert [r["status"] for r in history] == ["deployed"], history
        _helm(control_plane, "upgrade", release, str(CHART), *chart)
    finally:
        _helm(control_plane, "uninstall", release, "-n", namespace)


def test_a_rollback_to_a_revision_of_another_claim_class_or_size_leaves_the_claims_alone(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    release = f"fpr-{uuid.uuid4().hex[:6]}"
    claim = f"{release}-fairpool-ledger"
    spec = yaml.safe_load((REPO_ROOT / "policies/defaults/policy.yaml").read_text())["spec"]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "policy": {"name": release, "spec": spec},
                "scheduler": {"schedulerName": release},
                "admissionPolicy": {"enabled": False},
            }
        )
    )
    chart = ["--values", str(values), "-n", namespace]
    core = k8s.CoreV1Api(control_plane.admin)
    _helm(control_plane, "install", release, str(CHART), *chart)
    try:
        # No storage class at install (the cluster has no default one); the operator gives
        # the claim one (the API server allows it once, from none), and the values then
        # say so. Revision 1 was rendered without it: a rollback that patched the claim
        # back was refused ("spec is immutable after creation"), the release left failed
        # and half rolled back.
        core.patch_namespaced_persistent_volume_claim(
            claim, namespace, {"spec": {"storageClassName": "class-a"}}
        )
        before = core.read_namespaced_persistent_volume_claim(claim, namespace)
        _helm(
            control_plane,
            *("upgrade", release, str(CHART), *chart),
            *("--set", "ledger.sqlite.storageClassName=class-a"),
        )
        # Hooks of the install, made when missing: in no revision's manifest.
        hooks = _helm(control_plane, "get", "hooks", release, "-n", namespace, "--revision", "1")
        assert f"name: {claim}" in hooks
        for revision in ("1", "2"):
            manifest = _helm(
                control_plane, "get", "manifest", release, "-n", namespace, "--revision", revision
            )
            assert "kind: PersistentVolumeClaim" not in manifest
        _helm(control_plane, "rollback", release, "1", "-n", namespace)
        history = json.loads(
            _helm(control_plane, "history", release, "-n", namespace, "--output", "json")
        )
        assert [r["status"] for r in history] == ["superseded", "superseded", "deployed"]
        after = core.read_namespaced_persistent_volume_claim(claim, namespace)
        assert after.metadata.uid == before.metadata.uid
        assert after.spec.storage_class_name == "class-a"
        assert after.spec.resources.requests["storage"] == "1Gi"
        # A size other than the claim's is refused before anything is applied, naming
        # the value and how to grow the claim.
        grown = _run(
            [
                str(helm()),
                f"--kubeconfig={control_plane.kubeconfig('admin')}",
                *("upgrade", release, str(CHART), *chart),
                *("--set", "ledger.sqlite.size=2Gi"),
            ]
        )
        assert grown.returncode != 0
        assert "ledger.sqlite.size" in grown.stderr, grown.stderr
        assert f"kubectl -n {namespace} patch pvc {claim}" in grown.stderr, grown.stderr
        history = json.loads(
            _helm(control_plane, "history", release, "-n", namespace, "--output", "json")
        )
        assert history[-1]["status"] == "deployed", history
    finally:
        _helm(control_plane, "uninstall", release, "-n", namespace)
    # Kept on uninstall, as before.
    assert {
        c.metadata.name for c in core.list_namespaced_persistent_volume_claim(namespace).items
    } == {
        claim,
        f"{release}-fairpool-reports",
    }


def test_a_release_of_the_same_name_in_another_namespace_is_refused_naming_the_first(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    # Its ClusterRole, ClusterRoleBinding and PriorityClass would be the first one's:
    # Helm refused it on "invalid ownership metadata" of one of them, naming no value.
    core = k8s.CoreV1Api(control_plane.admin)
    other_namespace = f"{namespace}-b"
    core.create_namespace(
        {"metadata": {"name": other_namespace, "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
    )
    release = f"fpn-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load((REPO_ROOT / "policies/defaults/policy.yaml").read_text())["spec"]
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "policy": {"name": release, "spec": spec},
                "scheduler": {"schedulerName": release},
                "admissionPolicy": {"enabled": False},
            }
        )
    )
    _helm(control_plane, "install", release, str(CHART), "-n", namespace, "--values", str(values))
    try:
        second = _run(
            [
                str(helm()),
                f"--kubeconfig={control_plane.kubeconfig('admin')}",
                *("install", release, str(CHART), "-n", other_namespace, "--values", str(values)),
                *(
                    "--set",
                    f"policy.name={release}-b",
                    "--set",
                    f"scheduler.schedulerName={release}-b",
                ),
            ]
        )
        assert second.returncode != 0
        assert f"fairpool release {namespace}/{release} already has" in second.stderr, second.stderr
        assert "another name" in second.stderr, second.stderr
        assert (
            not k8s.AppsV1Api(control_plane.admin).list_namespaced_deployment(other_namespace).items
        )
        assert not core.list_namespaced_persistent_volume_claim(other_namespace).items
        # The first one still upgrades.
        _helm(
            control_plane, "upgrade", release, str(CHART), "-n", namespace, "--values", str(values)
        )
    finally:
        _helm(control_plane, "uninstall", release, "-n", namespace)
