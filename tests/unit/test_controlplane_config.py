"""The control plane's static pieces: build commands, tokens, kubeconfigs, RBAC, stages."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import yaml

from tests.controlplane import identities
from tests.controlplane.build import BINARIES, KUBERNETES_VERSION, build_command
from tests.controlplane.layout import GO_MODULES_DIR, RBAC_MANIFEST, STAGE_FILES


def test_kubernetes_binaries_carry_the_release_version() -> None:
    for binary in BINARIES:
        command = " ".join(build_command(binary, Path("out")))
        if binary.module == "kubernetes":
            assert f"version.gitVersion={KUBERNETES_VERSION}" in command
            assert "version.gitMinor=34" in command


def test_wrapper_modules_pin_the_staging_modules_to_the_matching_release() -> None:
    go_mod = (GO_MODULES_DIR / "kubernetes" / "go.mod").read_text()
    assert f"k8s.io/kubernetes {KUBERNETES_VERSION}" in go_mod
    staging = re.findall(r"^\s*(k8s\.io/[\w-]+) => (k8s\.io/[\w-]+) (v\S+)$", go_mod, re.M)
    assert len(staging) > 20
    staging_version = "v0." + KUBERNETES_VERSION.removeprefix("v1.")
    assert all(src == dst and version == staging_version for src, dst, version in staging)
    for module in {b.module for b in BINARIES}:
        assert (GO_MODULES_DIR / module / "go.sum").stat().st_size > 0


def test_token_file_lists_every_identity_with_its_groups() -> None:
    tokens = identities.new_tokens()
    rows = list(csv.reader(io.StringIO(identities.token_file_text(tokens))))
    by_user = {row[1]: row for row in rows}
    assert by_user["fairpool-admin"][3] == "system:masters"
    assert by_user["fairpool"][3] == ""
    assert {row[0] for row in rows} == set(tokens.values())


def test_kubeconfig_points_at_the_server_with_the_identitys_token() -> None:
    text = identities.kubeconfig_text("https://127.0.0.1:6443", Path("/x/ca.crt"), "admin", "t0k")
    doc = yaml.safe_load(text)
    assert doc["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert doc["users"][0]["user"]["token"] == "t0k"
    assert doc["current-context"] == "admin"


def test_scheduler_role_grants_only_what_a_secondary_scheduler_needs() -> None:
    docs = list(yaml.safe_load_all(RBAC_MANIFEST.read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    granted = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert ("", "pods/binding", "create") in granted
    assert ("", "pods/eviction", "create") in granted
    assert ("coordination.k8s.io", "leases", "update") in granted
    assert ("", "pods", "patch") in granted
    assert ("", "pods/status", "patch") in granted  # status.nominatedNodeName
    # Deleting is for the bound pods of a gang not bound whole (no unbind exists), nothing
    # else; never in bulk.
    deletes = {(group, resource) for group, resource, verb in granted if verb == "delete"}
    assert deletes == {("", "pods")}
    assert not any(verb in {"deletecollection", "*"} for _, _, verb in granted)
    assert ("", "nodes", "patch") not in granted
    assert ("", "pods", "create") not in granted
    # The owners gangs are read from: get, list and watch; the ones that recreate a
    # victim's pods also patch, for the job's reclaim record. Nothing more.
    owners = {
        ("batch", "jobs"): {"patch"},
        ("jobset.x-k8s.io", "jobsets"): {"patch"},
        ("kubeflow.org", "pytorchjobs"): {"patch"},
        ("scheduling.volcano.sh", "podgroups"): set(),
        ("scheduling.x-k8s.io", "podgroups"): set(),
    }
    for (group, resource), more in owners.items():
        verbs = {v for g, r, v in granted if (g, r) == (group, resource)}
        assert verbs == {"get", "list", "watch", *more}, (group, resource, verbs)
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert {"kind": "User", "name": "fairpool", "apiGroup": "rbac.authorization.k8s.io"} in (
        binding["subjects"]
    )


def test_stage_files_hold_node_and_pod_stages_and_no_early_jitter() -> None:
    stages = [d for f in STAGE_FILES for d in yaml.safe_load_all(f.read_text())]
    kinds = {s["spec"]["resourceRef"]["kind"] for s in stages}
    assert kinds == {"Node", "Pod"}
    for stage in stages:
        delay = stage["spec"].get("delay", {})
        if "jitterDurationMilliseconds" in delay:
            # kwok uses a jitter that is not above the duration instead of the duration
            assert delay["jitterDurationMilliseconds"] > delay.get("durationMilliseconds", 0)
    complete = next(s for s in stages if s["metadata"]["name"] == "fairpool-pod-complete")
    assert (
        "fairpool.io/duration-seconds"
        in complete["spec"]["delay"]["durationFrom"]["jq"]["expression"]
    )
