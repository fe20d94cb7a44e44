"""Jobs that name no GPU model but reach only some models (a node's hostname, an affinity
on models): their demand and their reclaim are on a model they can run on."""

from __future__ import annotations

from scheduler.engine.snapshot import SelectorRequirement
from tests.unit.engine_strategies import (
    A100,
    H100,
    decided_alike,
    job,
    node,
    policy,
    running,
    snapshot,
)

POL = policy(["lab-a", "lab-b"])
NODES = [
    node("a1", "lab-a", model=A100),
    node("h1", "lab-b", model=H100),
    node("h2", "lab-b", model=H100),
]


def test_an_owner_reclaims_its_node_for_a_job_pinned_to_it_by_hostname() -> None:
    # lab-b borrows lab-a's only node; the H100 nodes are idle, so a job naming no model
    # was counted on H100, where a pod pinned to a1 has no node: it waited for ever.
    run = [running("b", "lab-b", "a1", gpus=8)]
    pinned = job("p", "lab-a", gpus=8, node_selector={"kubernetes.io/hostname": "a1"})
    d = decided_alike(snapshot(NODES, [pinned], run), POL)
    assert [p.pod_uid for p in d.preemptions] == ["b"]
    assert [n.nodes for n in d.nominations] == [{"p-0": "a1"}]
    assert "no node it may use exists" not in d.explanations["p"]


def test_a_job_pinned_by_hostname_affinity_reclaims_its_node() -> None:
    run = [running("b", "lab-b", "a1", gpus=8)]
    host = ((SelectorRequirement("kubernetes.io/hostname", "In", ("a1",)),),)
    d = decided_alike(snapshot(NODES, [job("p", "lab-a", gpus=8, affinity=host)], run), POL)
    assert [p.pod_uid for p in d.preemptions] == ["b"]
