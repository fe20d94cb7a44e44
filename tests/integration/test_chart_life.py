"""The chart over a cluster's life, as an operator runs it: `helm install`, an upgrade
that changes the CRD, `helm uninstall`, with the commands docs/install.md gives, against
the local control plane (a real kube-apiserver)."""

from __future__ import annotations

import re
import subprocess
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
