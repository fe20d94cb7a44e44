"""Gangs: all or nothing, fewest nodes, one topology domain, waiting for missing pods."""

from __future__ import annotations

from scheduler.engine import schedule
from scheduler.engine.gangs import _groups
from scheduler.engine.mentions import plain
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


def test_all_or_nothing() -> None:
    nodes = [node("n1", "lab-a", gpus=8), node("n2", "lab-a", gpus=8)]
    run = [running("r", "lab-a", "n2", gpus=4)]
    # 3 pods x 4 GPUs = 12 but only 12 free in pieces of 8 and 4: fits (2 on n1, 1 on n2).
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=3, gpus=4)], run), POL)
    assert sorted(b.node for b in d.binds) == ["n1", "n1", "n2"]
    # 4 pods x 4 GPUs = 16 > 12 free: nothing at all.
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=4, gpus=4)], run), POL)
    assert d.binds == ()
    assert plain(d.explanations["g"]) == (
        f"member lab-a is below its fair share of 16 {H100} (holds 4); "
        f"12 idle {H100} exist but the gang needs 16 (4 pods); nothing can be reclaimed: "
        f"no member above its fair share holds borrowed {H100} GPUs it could use"
    )


def test_fewest_nodes() -> None:
    # Four 2-GPU pods: one empty node holds them all, rather than spreading over the
    # partly used nodes (which bin-packing alone would prefer).
    nodes = [node("n1", "lab-a"), node("n2", "lab-a"), node("n3", "lab-a")]
    run = [running("r1", "lab-a", "n1", gpus=4), running("r2", "lab-a", "n2", gpus=4)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=4, gpus=2)], run), POL)
    assert {b.node for b in d.binds} == {"n3"}


def test_single_topology_domain_preferred_and_spanning_as_last_resort() -> None:
    nodes = [
        node("x1", "lab-a", domain="rack-1"),
        node("y1", "lab-a", domain="rack-2"),
        node("y2", "lab-a", domain="rack-2"),
    ]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=8)]), POL)
    assert sorted(b.node for b in d.binds) == ["y1", "y2"]
    run = [running("r", "lab-a", "y2", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=8)], run), POL)
    assert sorted(b.node for b in d.binds) == ["x1", "y1"]


def test_gang_never_mixes_gpu_models() -> None:
    nodes = [node("h1", "lab-a", gpus=4, model=H100), node("a1", "lab-a", gpus=4, model=A100)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=4)]), POL)
    assert d.binds == ()


def test_waits_for_missing_members() -> None:
    nodes = [node("n1", "lab-a")]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, min_member=4)]), POL)
    assert d.binds == ()
    assert plain(d.explanations["g"]) == (
        "gang g has 2 of its 4 pods (2 not created yet); it waits for the rest before any can start"
    )


def test_gang_pods_bound_together_in_one_cycle() -> None:
    nodes = [node("n1", "lab-a"), node("n2", "lab-b")]
    pending = [job("s", "lab-b", gpus=1), job("g", "lab-a", pods=3, gpus=4)]
    d = schedule(snapshot(nodes, pending), POL)
    ids = [b.job_id for b in d.binds]
    assert ids.count("g") == 3
    first = ids.index("g")
    assert ids[first : first + 3] == ["g", "g", "g"]
    # The gang's third pod lands above lab-a's 8-GPU entitlement: borrowed.
    assert [b.reclaimable for b in d.binds if b.job_id == "g"] == [False, False, True]


def test_a_jobs_pod_groups_are_kept_for_its_pods_tuple_only() -> None:
    # A waiting gang is planned every cycle: its pods tuple never changes, so its groups
    # are worked out once. A list of pods may change, so it is grouped every time.
    pods = job("g", "lab-a", pods=3, gpus=2).pods
    first = _groups(pods)
    assert _groups(pods) is first
    assert [(spec.gpus, uids) for spec, uids in first] == [(2, ["g-0", "g-1", "g-2"])]
    assert _groups(list(pods)) is not _groups(list(pods))
    assert _groups(list(pods)) == first


def test_a_gang_with_more_pods_than_its_min_member_starts_with_as_many_as_fit() -> None:
    # A PodGroup of six 4-GPU pods with minMember 4 on 16 GPUs: it starts with four, the
    # most that fit (it waited, and was even said never to run: 24 GPUs at once).
    nodes = [node("n1", "lab-a"), node("n2", "lab-a")]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=6, gpus=4, min_member=4)]), POL)
    assert [b.pod_uid for b in d.binds] == ["g-0", "g-1", "g-2", "g-3"]
    assert "never run" not in plain(d.explanations.get("g", ""))
    # Five fit when 20 GPUs are free; all six when 24 are.
    d = schedule(
        snapshot(
            [*nodes, node("n3", "lab-a", gpus=4)], [job("g", "lab-a", pods=6, gpus=4, min_member=4)]
        ),
        POL,
    )
    assert len(d.binds) == 5
    d = schedule(
        snapshot([*nodes, node("n3", "lab-a")], [job("g", "lab-a", pods=6, gpus=4, min_member=4)]),
        POL,
    )
    assert len(d.binds) == 6
    # Fewer than minMember fit: none starts.
    run = [running("r", "lab-a", "n2", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=6, gpus=4, min_member=4)], run), POL)
    assert d.binds == ()


def test_a_pod_group_that_cannot_start_says_what_its_min_member_pods_need() -> None:
    # Six 4-GPU pods of minMember 4 with 8 GPUs idle: 16 start it (it said the gang
    # needs 24, its six pods, as if all had to start together).
    nodes = [node("n1", "lab-a"), node("n2", "lab-a")]
    group = job("g", "lab-a", pods=6, gpus=4, min_member=4)
    d = decided_alike(snapshot(nodes, [group], [running("r", "lab-a", "n2", gpus=8)]), POL)
    assert "8 idle NVIDIA-H100 exist but the gang needs 16 to start (4 of its 6 pods)" in (
        plain(d.explanations["g"])
    ), plain(d.explanations["g"])
    # A gang of exactly its size reads as before.
    whole = job("g", "lab-a", pods=4, gpus=4)
    d = decided_alike(snapshot(nodes, [whole], [running("r", "lab-a", "n2", gpus=8)]), POL)
    assert "8 idle NVIDIA-H100 exist but the gang needs 16 (4 pods)" in plain(d.explanations["g"])


def test_a_pod_group_reclaims_for_its_min_member_pods_and_says_so() -> None:
    # lab-b's group of six 4-GPU pods (minMember 4) on its three nodes, all borrowed by
    # lab-a: four of lab-a's pods go (16 GPUs), and each reason says the group needs
    # 16 (it said 24).
    nodes = [node(f"n{k}", "lab-b") for k in (1, 2, 3)] + [node("m1", "lab-a")]
    run = [running(f"a{i}", "lab-a", f"n{i // 2 + 1}", gpus=4) for i in range(6)]
    run.append(running("a6", "lab-a", "m1", gpus=8))
    group = job("g", "lab-b", pods=6, gpus=4, min_member=4)
    d = decided_alike(snapshot(nodes, [group], run), POL)
    assert len(d.preemptions) == 4
    for p in d.preemptions:
        assert "job g of lab-b needs 16)" in plain(p.reason), p.reason
