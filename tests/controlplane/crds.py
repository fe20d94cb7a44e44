"""CustomResourceDefinitions of the workload kinds fairpool reads gangs from, taken from
the Go modules that define them (the same releases the controllers are built from), and
created on a control plane.

`go mod download` puts each module in the Go module cache under `$FAIRPOOL_CACHE`
(already there when the controllers were built); nothing else is fetched.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from tests.controlplane.build import go_environment
from tests.controlplane.layout import cache_dir


@dataclass(frozen=True)
class CrdSource:
    module: str
    version: str
    path: str
    """The CRD's file inside the module."""


WORKLOAD_CRDS: dict[str, CrdSource] = {
    "jobsets.jobset.x-k8s.io": CrdSource(
        "sigs.k8s.io/jobset",
        "v0.10.1",
        "config/components/crd/bases/jobset.x-k8s.io_jobsets.yaml",
    ),
    "pytorchjobs.kubeflow.org": CrdSource(
        "github.com/kubeflow/training-operator",
        "v1.8.1",
        "manifests/base/crds/kubeflow.org_pytorchjobs.yaml",
    ),
}


def module_dir(module: str, version: str, cache: Path | None = None) -> Path:
    """Where `go mod download` put `module@version` (downloading it if missing)."""
    env = go_environment(cache or cache_dir())
    with tempfile.TemporaryDirectory() as outside_any_module:
        done = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            cwd=outside_any_module,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"go mod download {module}@{version} failed:\n{done.stderr}")
    info: dict[str, Any] = json.loads(done.stdout)
    if info.get("Error") or not info.get("Dir"):
        raise RuntimeError(f"go mod download {module}@{version}: {info.get('Error')}")
    return Path(info["Dir"])


def crd_manifest(name: str, cache: Path | None = None) -> dict[str, Any]:
    """The CRD named `name` (a key of WORKLOAD_CRDS) as a dict."""
    source = WORKLOAD_CRDS[name]
    path = module_dir(source.module, source.version, cache) / source.path
    body: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    if body.get("metadata", {}).get("name") != name:
        raise RuntimeError(f"{path}: defines {body.get('metadata')!r}, not {name}")
    return body


def ensure_crd(api: k8s.ApiClient, body: dict[str, Any], timeout: float = 60.0) -> str:
    """Create the CRD (or replace it) and wait until it is Established; its name."""
    name: str = body["metadata"]["name"]
    extensions = k8s.ApiextensionsV1Api(api)
    try:
        extensions.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
        current = extensions.read_custom_resource_definition(name)
        body = {**body, "metadata": {**body["metadata"]}}
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        extensions.replace_custom_resource_definition(name, body)
    wait_established(api, name, timeout)
    return name


def wait_established(api: k8s.ApiClient, name: str, timeout: float = 60.0) -> None:
    """Until the CRD is Established. Through the API, not `kubectl wait
    --for=condition=Established`, which fails at once ("accessor error: <nil>") when it
    reads the CRD before the API server has written any condition."""
    extensions = k8s.ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    conditions: dict[str, str] = {}
    while time.monotonic() < deadline:
        crd = extensions.read_custom_resource_definition(name)
        conditions = {c.type: c.status for c in ((crd.status and crd.status.conditions) or [])}
        if conditions.get("Established") == "True":
            return
        time.sleep(0.2)
    raise RuntimeError(f"CRD {name} not Established after {timeout}s: {conditions}")
