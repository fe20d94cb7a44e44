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
    without_consolidation,
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


MODELS = ((SelectorRequirement("nvidia.com/gpu.product", "In", (A100, H100)),),)
FRAGMENTED = [running("x1", "lab-b", "h1", gpus=4), running("x2", "lab-b", "h2", gpus=4)]


def test_a_job_allowed_on_two_models_reclaims_where_its_member_is_entitled() -> None:
    # Counted on H100 (8 GPUs free, in pieces of 4), where lab-a is entitled to nothing
    # and lab-b holds its own nodes: it waited for ever while lab-b borrowed a1.
    run = [running("b", "lab-b", "a1", gpus=8), *FRAGMENTED]
    d = decided_alike(snapshot(NODES, [job("m", "lab-a", gpus=8, affinity=MODELS)], run), POL)
    assert [p.pod_uid for p in d.preemptions] == ["b"]
    assert d.preemptions[0].cause == "entitlement"
    assert [n.nodes for n in d.nominations] == [{"m-0": "a1"}]


def test_what_is_held_for_it_counts_on_the_model_it_reclaimed() -> None:
    # m1 takes a1 back: its 8 GPUs are held on A100, so m2 would take lab-a beyond its
    # A100 entitlement and takes nothing from lab-b's pod on the unowned A100 node.
    nodes = [*NODES, node("u1", None, model=A100)]
    run = [running("b", "lab-b", "a1", gpus=8), running("c", "lab-b", "u1", gpus=8), *FRAGMENTED]
    pending = [
        job("m1", "lab-a", gpus=8, affinity=MODELS),
        job("m2", "lab-a", gpus=8, affinity=MODELS, submitted_at=1),
    ]
    # The reference engine has no moves: m2's sentence would name consolidation.
    d = decided_alike(snapshot(nodes, pending, run), without_consolidation(POL))
    assert [p.pod_uid for p in d.preemptions] == ["b"]
    assert [n.job_id for n in d.nominations] == ["m1"]
