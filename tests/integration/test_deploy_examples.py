"""deploy/examples (member namespaces, a training Job, an Indexed Job) render with kustomize,
opt in to fairpool and are accepted by a real kube-apiserver (server-side dry run).
The chart itself is checked in test_chart.py and installed in test_install.py."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane import ControlPlane
from tests.controlplane.build import binary_path
from tests.integration.conftest import TEST_NAMESPACE_LABEL

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def _kubectl(plane: ControlPlane, *args: str) -> str:
    command = [
        str(binary_path("kubectl", Path(plane.state.cache))),
        f"--kubeconfig={plane.kubeconfig('admin')}",
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _rendered(plane: ControlPlane) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_kubectl(plane, "kustomize", str(EXAMPLES))) if d]


def test_examples_opt_in_to_fairpool(control_plane: ControlPlane) -> None:
    examples = _rendered(control_plane)
    jobs = [d for d in examples if d["kind"] == "Job"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["spec"]["template"]["spec"]["schedulerName"] == "fairpool"
    gang = next(d for d in examples if d["metadata"]["name"] == "ddp-train")
    # fairpool finds this gang from the Job itself: nothing to label or annotate.
    assert gang["spec"]["completionMode"] == "Indexed"
    assert gang["spec"]["completions"] == gang["spec"]["parallelism"] == 4
    assert "metadata" not in gang["spec"]["template"]


def _job_specs(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The Job specs of an example: a Job's own, a JobSet's replicated jobs' templates."""
    if document["kind"] == "Job":
        return [document["spec"]]
    if document["kind"] == "JobSet":
        return [r["template"]["spec"] for r in document["spec"]["replicatedJobs"]]
    return []


def test_every_example_job_survives_a_reclaim(control_plane: ControlPlane) -> None:
    # Without the rule a reclaim's eviction counts against backoffLimit: the gang of
    # indexed-job.yaml (backoffLimit 0) would fail for good at its first reclaim
    # (test_workload_controllers.py shows both on the control plane).
    jobset = yaml.safe_load((EXAMPLES / "jobset.yaml").read_text())
    specs = [s for d in [*_rendered(control_plane), jobset] for s in _job_specs(d)]
    assert len(specs) == 4
    for spec in specs:
        rules = spec["podFailurePolicy"]["rules"]
        assert {
            "action": "Ignore",
            "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
        } in rules
        assert spec["template"]["spec"]["restartPolicy"] == "Never"


def test_examples_are_accepted_by_the_api_server_in_a_dry_run(
    control_plane: ControlPlane, namespace: str
) -> None:
    # A dry run creates nothing, so the Jobs' namespaces must exist beforehand; they are
    # labelled as test namespaces and removed with `namespace`'s.
    core = k8s.CoreV1Api(control_plane.admin)
    for name in ("uni-north", "physics"):
        try:
            core.create_namespace(
                {"metadata": {"name": name, "labels": {TEST_NAMESPACE_LABEL: "true"}}}  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
    out = _kubectl(control_plane, "apply", "--server-side", "--dry-run=server", "-k", str(EXAMPLES))
    assert "job.batch/ddp-train" in out and "job.batch/finetune" in out
