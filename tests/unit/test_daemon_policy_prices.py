"""The daemon refuses a policy file that does not price a GPU model its nodes have (every
month with an hour under it would fail to bill), and keeps the one in force; before its
first cycle it knows no nodes and checks nothing. The ConfigMap and the Policy object
paths are checked against a real API server in tests/integration."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from kubernetes import client as k8s

from policies.loader import DEFAULT_POLICY, load_policy, parse_policy
from scheduler.engine.decisions import Decisions
from scheduler.k8s.daemon import Daemon, DaemonConfig
from tests.unit.engine_strategies import node, snapshot

H100 = "NVIDIA-H100-80GB-HBM3"
A100 = "NVIDIA-A100-SXM4-80GB"


def test_a_policy_file_that_does_not_price_the_nodes_model_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "policy.yaml"
    text = DEFAULT_POLICY.read_text()
    path.write_text(text)
    daemon = Daemon(k8s.ApiClient(), policy_file=path, config=DaemonConfig(leader_elect=False))
    policy = daemon.policy()
    unpriced = text.replace(f"name: {A100}", "name: NVIDIA-B200").replace(
        f"{A100}: 4", "NVIDIA-B200: 4"
    )
    assert unpriced.count("NVIDIA-B200") == 2 and A100 not in unpriced
    nodes = [node("h", "uni-north", model=H100), node("a", "physics", model=A100)]
    daemon._published = daemon._published.next(snapshot(nodes), policy, Decisions())

    path.write_text(unpriced)
    os.utime(path, (1, 1))  # a new modification time, whatever the clock's resolution
    with caplog.at_level(logging.ERROR):
        daemon._reload_policy_file()
    assert daemon.policy() is policy, "the policy in force stays"
    counted = daemon.metrics.registry.get_sample_value(
        "fairpool_policy_reloads_total", {"result": "rejected"}
    )
    assert counted == 1
    assert f"spec.gpuModels: the cluster has nodes of '{A100}' (1 node(s))" in caplog.text

    path.write_text(text.replace("weight: 2", "weight: 3"))
    os.utime(path, (2, 2))
    daemon._reload_policy_file()
    assert daemon.policy() is not policy and daemon.policy().member("ai-startup").weight == 3


def test_before_the_first_cycle_nothing_is_checked() -> None:
    # A policy read at start comes before any node is known.
    daemon = Daemon(k8s.ApiClient(), load_policy(), DaemonConfig(leader_elect=False))
    lacking = DEFAULT_POLICY.read_text().replace(A100, "NVIDIA-B200")
    assert daemon.price_gaps(parse_policy(lacking)) == ""
    nodes = [node("a", "physics", model=A100)]
    daemon._published = daemon._published.next(snapshot(nodes), daemon.policy(), Decisions())
    assert daemon.price_gaps(parse_policy(lacking)).startswith("spec.gpuModels: ")


def test_nodes_of_a_model_the_policy_in_force_does_not_price_are_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # New hardware joining before the policy lists its model: nothing refused it, and
    # the month's report failed ("has no price") with nobody told beforehand.
    daemon = Daemon(k8s.ApiClient(), load_policy(), DaemonConfig(leader_elect=False))
    policy = daemon.policy()
    priced = (node("h", "uni-north", model=H100),)
    new = (
        *priced,
        node("b1", "physics", model="NVIDIA-B200"),
        node("b2", None, model="NVIDIA-B200"),
    )

    def unpriced() -> float | None:
        return daemon.metrics.registry.get_sample_value("fairpool_unpriced_gpu_nodes")

    daemon._watch_prices(priced, policy, now=1000.0)
    assert unpriced() == 0
    with caplog.at_level(logging.WARNING):
        daemon._watch_prices(new, policy, now=1030.0)  # within the minute: not looked at
        assert unpriced() == 0
        daemon._watch_prices(new, policy, now=1061.0)
        assert unpriced() == 2
        daemon._watch_prices(new, policy, now=1200.0)  # the same gap is said once
    warnings = [r.getMessage() for r in caplog.records if "gpuModels" in r.getMessage()]
    assert warnings == [
        "spec.gpuModels: the cluster has nodes of 'NVIDIA-B200' (2 node(s)), which the policy "
        "must price (their hours could not be billed): list the model in the policy's gpuModels"
    ]
    listed = parse_policy(
        DEFAULT_POLICY.read_text().replace(
            "  members:", '    - {name: NVIDIA-B200, hourlyCost: "3.00"}\n  members:', 1
        )
    )
    daemon._watch_prices(new, listed, now=1201.0)  # a new policy: looked at at once
    assert unpriced() == 0


def test_nodes_whose_owner_label_names_no_member_are_told(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A typo in the owner label ("physic") made the node unowned: its GPUs were nobody's
    # entitlement, and neither the log nor /metrics said so.
    daemon = Daemon(k8s.ApiClient(), load_policy(), DaemonConfig(leader_elect=False))
    policy = daemon.policy()
    owned = (node("h", "uni-north", model=H100), node("u", None, model=H100))
    typo = (*owned, node("a1", "physic", model=A100), node("a2", "physic", model=A100))

    def stray() -> float | None:
        return daemon.metrics.registry.get_sample_value("fairpool_stray_owner_gpu_nodes")

    daemon._watch_prices(owned, policy, now=1000.0)
    assert stray() == 0
    with caplog.at_level(logging.WARNING):
        daemon._watch_prices(typo, policy, now=1061.0)
        assert stray() == 2
        daemon._watch_prices(typo, policy, now=1200.0)  # the same is said once
    said = [r.getMessage() for r in caplog.records if "owner label" in r.getMessage()]
    assert said == [
        "owner label 'physic' on 2 GPU node(s) (a1, a2) names no member of the policy: those "
        "nodes are unowned, their GPUs nobody's contribution or entitlement; correct the "
        "fairpool.io/owner label (or add the member to the policy)"
    ]
    with_physic = parse_policy(DEFAULT_POLICY.read_text().replace("name: physics", "name: physic"))
    daemon._watch_prices(typo, with_physic, now=1201.0)  # a new policy: looked at at once
    assert stray() == 0
