"""The Helm chart (deploy/helm/fairpool) as the tests use it: lint, render with value
sets, and pick rendered objects. helm is built from its Go module into the build cache
(tests/controlplane/build.py), like the control plane."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.build import KUBERNETES_VERSION, ensure_built
from tests.controlplane.layout import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "fairpool"
VALUE_SETS = REPO_ROOT / "tests" / "data" / "chart"
DEMO_POLICY = REPO_ROOT / "policies" / "defaults" / "policy.yaml"
MONITORING_API = "monitoring.coreos.com/v1"
RELEASE = "fairpool"


def helm() -> Path:
    return ensure_built(names=["helm"])["helm"]


def run_helm(*args: str) -> str:
    done = subprocess.run(
        [str(helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise HelmError(args, done.stdout + done.stderr)
    return done.stdout


class HelmError(RuntimeError):
    def __init__(self, args: Sequence[str], output: str) -> None:
        self.output = output
        super().__init__(f"helm {' '.join(args)} failed:\n{output}")


def policy_values(folder: Path, policy_file: Path = DEMO_POLICY) -> Path:
    """A values file giving the chart the spec of a policy file (as docs/install.md does)."""
    spec = yaml.safe_load(policy_file.read_text())["spec"]
    path = folder / "policy-values.yaml"
    path.write_text(yaml.safe_dump({"policy": {"spec": spec}}, sort_keys=False))
    return path


def value_args(files: Iterable[Path], api_versions: Iterable[str] = ()) -> list[str]:
    args: list[str] = []
    for file in files:
        args += ["--values", str(file)]
    for version in api_versions:
        args += ["--api-versions", version]
    return args


def render(
    files: Iterable[Path],
    *,
    namespace: str = "fairpool-system",
    api_versions: Iterable[str] = (),
    sets: Iterable[str] = (),
    set_strings: Iterable[str] = (),
    release: str = RELEASE,
    kube_version: str = KUBERNETES_VERSION,
) -> list[dict[str, Any]]:
    """`helm template` of the chart (CRDs included) as a list of objects."""
    extra = [arg for item in sets for arg in ("--set", item)]
    extra += [arg for item in set_strings for arg in ("--set-string", item)]
    out = run_helm(
        "template",
        release,
        str(CHART),
        "--namespace",
        namespace,
        "--include-crds",
        # helm's default is an old release; render for the control plane's.
        "--kube-version",
        kube_version,
        *value_args(files, api_versions),
        *extra,
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def one(objects: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} rendered"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    return containers[0]
