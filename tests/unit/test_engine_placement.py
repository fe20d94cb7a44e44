"""Hand-computed placements of single pods: filters and scores."""

from __future__ import annotations

import math
from dataclasses import replace

from scheduler.engine import schedule
from scheduler.engine.mentions import plain
from scheduler.engine.snapshot import SelectorRequirement, Taint, Toleration
from tests.unit.engine_strategies import A100, GIB, H100, job, node, policy, running, snapshot

POL = policy(["lab-a", "lab-b", "lab-c"])


def bound(decisions: object) -> dict[str, str]:
    return {b.pod_uid: b.node for b in decisions.binds}  # type: ignore[attr-defined]


def test_gpu_model_filter() -> None:
    nodes = [node("h", "lab-a", model=H100), node("a", "lab-a", model=A100)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpu_model=A100)]), POL)
    assert bound(d) == {"j-0": "a"}


def test_cpu_memory_and_pod_slots_filter() -> None:
    nodes = [
        node("n1", "lab-a", cpu=2),
        node("n2", "lab-a", mem_gib=1),
        node("n3", "lab-a", max_pods=0),
        node("n4", "lab-a"),
    ]
    d = schedule(snapshot(nodes, [job("j", "lab-a", cpu_milli=4000, memory_bytes=2 * GIB)]), POL)
    assert bound(d) == {"j-0": "n4"}
    d = schedule(
        snapshot(nodes[:3], [job("j", "lab-a", cpu_milli=4000, memory_bytes=2 * GIB)]), POL
    )
    assert d.binds == ()
    assert "no node can ever run its pods" in plain(d.explanations["j"])


def test_gpu_count_filter_counts_running_pods() -> None:
    nodes = [node("n1", "lab-a", gpus=8), node("n2", "lab-a", gpus=8)]
    run = [running("r", "lab-a", "n1", gpus=6)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=4)], run), POL)
    assert bound(d) == {"j-0": "n2"}


def test_taints_block_unless_tolerated_and_prefer_no_schedule_only_scores() -> None:
    nodes = [
        node("n1", "lab-a", taints=(Taint("gpu", "x", "NoSchedule"),)),
        node("n2", "lab-a", taints=(Taint("gpu", "x", "NoExecute"),)),
        node("n3", "lab-a", taints=(Taint("soft", "", "PreferNoSchedule"),)),
    ]
    d = schedule(snapshot(nodes, [job("j", "lab-a")]), POL)
    assert bound(d) == {"j-0": "n3"}
    tol = (Toleration("gpu", "Equal", "x", "NoSchedule"),)
    d = schedule(snapshot(nodes, [job("j", "lab-a", tolerations=tol)]), POL)
    assert bound(d) == {"j-0": "n1"}  # tolerated, no PreferNoSchedule penalty
    wildcard = (Toleration("", "Exists"),)
    d = schedule(snapshot(nodes[1:2], [job("j", "lab-a", tolerations=wildcard)]), POL)
    assert bound(d) == {"j-0": "n2"}


def test_node_selector_and_affinity_operators() -> None:
    nodes = [
        node("n1", "lab-a", labels={"zone": "z1", "ib": "yes"}),
        node("n2", "lab-a", labels={"zone": "z2"}),
        node("n3", "lab-a", labels={"zone": "z3"}),
    ]

    def where(**spec: object) -> set[str]:
        d = schedule(snapshot(nodes, [job("j", "lab-a", **spec)]), POL)
        return set(bound(d).values())

    assert where(node_selector={"zone": "z2"}) == {"n2"}
    req = SelectorRequirement
    assert where(affinity=((req("zone", "In", ("z3",)),),)) == {"n3"}
    assert where(affinity=((req("zone", "NotIn", ("z1", "z2")),),)) == {"n3"}
    assert where(affinity=((req("ib", "Exists"),),)) == {"n1"}
    assert where(affinity=((req("ib", "DoesNotExist"), req("zone", "In", ("z3",))),)) == {"n3"}
    # OR over terms: the first term matches nothing, the second matches n2.
    assert where(affinity=((req("zone", "In", ("nope",)),), (req("zone", "In", ("z2",)),))) == {
        "n2"
    }
    assert where(node_selector={"kubernetes.io/hostname": "n2"}) == {"n2"}


def test_unschedulable_and_not_ready_nodes_get_nothing() -> None:
    nodes = [node("n1", "lab-a", unschedulable=True), node("n2", "lab-a", ready=False)]
    d = schedule(snapshot(nodes, [job("j", "lab-a")]), POL)
    assert d.binds == ()
    assert plain(d.explanations["j"]).endswith(
        "no node can ever run its pods: of 2 nodes, 1 cordoned, 1 not Ready"
    )


def test_own_nodes_first_within_entitlement() -> None:
    nodes = [node("a-1", "lab-b"), node("b-1", "lab-a"), node("c-1", None)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=2)]), POL)
    assert bound(d) == {"j-0": "b-1"}
    assert d.binds[0].reclaimable is False and d.binds[0].owner == "lab-a"


def test_borrowing_packs_into_the_holes_of_owners_that_want_little() -> None:
    # lab-a's own node is full; lab-b holds 2 of its 8 (below half: it wants little),
    # lab-c runs nothing. Bin-packing puts the pod in b-1's hole (5 GPUs left free there
    # against 7 on c-1) and keeps c-1 whole for a gang or an 8-GPU pod.
    nodes = [node("a-1", "lab-a"), node("b-1", "lab-b"), node("c-1", "lab-c")]
    run = [running("own", "lab-a", "a-1", gpus=8), running("bb", "lab-b", "b-1", gpus=2)]
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run), POL)
    assert bound(d) == {"j-0": "b-1"}
    assert d.binds[0].reclaimable is True and d.binds[0].owner == "lab-b"


def test_borrowing_that_would_lose_work_keeps_off_nodes_their_owners_want_back() -> None:
    # lab-b holds 4 of its 8 (half: likely to want the rest back). A borrowing job of
    # lab-a, which restarts from zero when reclaimed, goes to idle c-1 even though b-1 is
    # more packed; the same job of a checkpointable member loses nothing to a reclaim and
    # packs into b-1.
    nodes = [node("a-1", "lab-a"), node("b-1", "lab-b"), node("c-1", "lab-c")]
    run = [running("own", "lab-a", "a-1", gpus=8), running("bb", "lab-b", "b-1", gpus=4)]
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run), POL)
    assert bound(d) == {"j-0": "c-1"}
    ckpt = policy({"lab-a": {"checkpointable": True}, "lab-b": {}, "lab-c": {}})
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run), ckpt)
    assert bound(d) == {"j-0": "b-1"}
    # The job's own setting wins over its member's, either way.
    resumes = replace(job("j", "lab-a"), checkpointable=True)
    assert bound(schedule(snapshot(nodes, [resumes], run), POL)) == {"j-0": "b-1"}
    restarts = replace(job("j", "lab-a"), checkpointable=False)
    assert bound(schedule(snapshot(nodes, [restarts], run), ckpt)) == {"j-0": "c-1"}


def test_an_owners_recent_usage_marks_its_nodes_wanted() -> None:
    # lab-b holds 2 of 8 now, but with a 10 h half-life its usage history of
    # 6 * 36000 / ln 2 GPU-seconds is a recent mean of 6 GPUs (at least half of 8): its
    # nodes are wanted, so the borrowing pod goes to lab-c's c-1. Without the history it
    # packs into b-1.
    nodes = [node("a-1", "lab-a"), node("b-1", "lab-b"), node("c-1", "lab-c")]
    run = [running("own", "lab-a", "a-1", gpus=8), running("bb", "lab-b", "b-1", gpus=2)]
    pol = policy(["lab-a", "lab-b", "lab-c"], usage_half_life_hours=10)
    history = {"lab-b": 6 * 36_000 / math.log(2)}
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run, usage=history), pol)
    assert bound(d) == {"j-0": "c-1"}
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run, usage={"lab-b": 1.0}), pol)
    assert bound(d) == {"j-0": "b-1"}


def test_within_entitlement_the_owner_goes_home_even_to_an_empty_node() -> None:
    # lab-a's own node is empty and lab-b's has a 1-GPU hole: work within entitlement
    # still goes to its own node first.
    nodes = [node("a-1", "lab-a"), node("b-1", "lab-b")]
    run = [running("bb", "lab-b", "b-1", gpus=7)]
    d = schedule(snapshot(nodes, [job("j", "lab-a")], run), POL)
    assert bound(d) == {"j-0": "a-1"}


def test_single_gpu_borrowers_leave_a_whole_node_for_a_gang() -> None:
    # Four 1-GPU borrowers of lab-a (its node full) fill b-1's holes instead of
    # scattering over c-1 and d-1, so lab-c's 2 x 8 gang still finds two whole nodes.
    nodes = [
        node("a-1", "lab-a"),
        node("b-1", "lab-b"),
        node("c-1", "lab-c"),
        node("d-1", "lab-c"),
    ]
    run = [running("own", "lab-a", "a-1", gpus=8), running("bb", "lab-b", "b-1", gpus=3)]
    pending = [job(f"s{k}", "lab-a", submitted_at=k) for k in range(4)]
    d = schedule(snapshot(nodes, pending, run), POL)
    assert set(bound(d).values()) == {"b-1"}
    run += [running(f"s{k}", "lab-a", "b-1") for k in range(4)]
    d = schedule(snapshot(nodes, [job("g", "lab-c", pods=2, gpus=8)], run), POL)
    assert bound(d) == {"g-0": "c-1", "g-1": "d-1"}


def test_bin_packing_most_allocated_then_name() -> None:
    nodes = [node("n1", "lab-a"), node("n2", "lab-a"), node("n3", "lab-a")]
    run = [running("r2", "lab-a", "n2", gpus=5), running("r3", "lab-a", "n3", gpus=2)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=2)], run), POL)
    assert bound(d) == {"j-0": "n2"}
    # Three 1-GPU pods fill n2 before touching the others; ties go by name.
    d = schedule(
        snapshot(nodes, [job(f"j{k}", "lab-a", submitted_at=k) for k in range(4)], run), POL
    )
    assert bound(d) == {"j0-0": "n2", "j1-0": "n2", "j2-0": "n2", "j3-0": "n3"}


def test_members_below_fair_share_first_and_no_head_of_line_blocking() -> None:
    nodes = [node("a-1", "lab-a", gpus=4), node("b-1", "lab-b", gpus=4)]
    pending = [
        job("a-big", "lab-a", gpus=8, submitted_at=0),  # never fits on a 4-GPU node
        job("a-small", "lab-a", gpus=2, submitted_at=1),
        job("b-1", "lab-b", gpus=2, submitted_at=2),
        job("b-2", "lab-b", gpus=2, submitted_at=3),
        job("b-3", "lab-b", gpus=2, submitted_at=4),
    ]
    d = schedule(snapshot(nodes, pending), POL)
    # a-big can never run (no node has 8 GPUs): it is not in lab-a's demand (fair shares
    # 2 and 6) and takes its turn first, binding nothing. Then entitled demand, ratio 0
    # each, by name: a-small, then b-1 and b-2 (within lab-b's 4), then b-3 (borrowing)
    # on lab-a's 2 idle GPUs. a-big blocks nobody, nor costs lab-a its place.
    assert [(b.job_id, b.node) for b in d.binds] == [
        ("a-small", "a-1"),
        ("b-1", "b-1"),
        ("b-2", "b-1"),
        ("b-3", "a-1"),
    ]
    assert {(s.member, s.fair_share) for s in d.shares} == {("lab-a", 2.0), ("lab-b", 6.0)}
    assert "no node can ever run its pods" in plain(d.explanations["a-big"])


def test_entitled_demand_goes_before_borrowing_when_positions_tie() -> None:
    # H100: lab-b owns b1 (8), x1 (4) has no owner; lab-a owns only A100. Both want 8
    # H100 and hold nothing (ratio 0 each; fair shares 4 and 8). lab-a comes first by
    # name, but its job would borrow while lab-b's stays within its entitlement: lab-b
    # gets its own node, lab-a waits (x1's 4 GPUs are too few).
    nodes = [node("b1", "lab-b"), node("x1", None, gpus=4), node("a1", "lab-a", model=A100)]
    pending = [
        job("a-1", "lab-a", gpus=8, gpu_model=H100),
        job("b-1", "lab-b", gpus=8, gpu_model=H100),
    ]
    d = schedule(snapshot(nodes, pending), POL)
    shares = {(s.member, s.gpu_model): s.fair_share for s in d.shares}
    assert (shares[("lab-a", H100)], shares[("lab-b", H100)]) == (4.0, 8.0)
    assert [(b.job_id, b.node) for b in d.binds] == [("b-1", "b1")]
    assert plain(d.explanations["a-1"]) == (
        f"member lab-a is below its fair share of 4 {H100} (holds 0); 4 idle {H100} exist "
        "on nodes it may use but it needs 8; nothing can be reclaimed: no member above its "
        f"fair share holds borrowed {H100} GPUs it could use"
    )


def test_borrowing_off_never_exceeds_entitlement() -> None:
    pol = policy(["lab-a", "lab-b"], borrowing=False)
    nodes = [node("a-1", "lab-a", gpus=4), node("b-1", "lab-b", gpus=4)]
    pending = [job(f"a{k}", "lab-a", gpus=2, submitted_at=k) for k in range(4)]
    d = schedule(snapshot(nodes, pending), pol)
    assert [b.job_id for b in d.binds] == ["a0", "a1"]
    assert "borrowing is off" in plain(d.explanations["a2"])


def test_lending_limit_and_max_gpus() -> None:
    pol = policy({"lab-a": {"max_gpus": 3}, "lab-b": {"lending_limit": 2}})
    nodes = [node("b-1", "lab-b", gpus=8)]
    pending = [job(f"a{k}", "lab-a", gpus=1, submitted_at=k) for k in range(4)]
    d = schedule(snapshot(nodes, pending), pol)
    assert [b.job_id for b in d.binds] == ["a0", "a1"]  # lab-b lends at most 2
    pol = policy({"lab-a": {"max_gpus": 3}, "lab-b": {}})
    d = schedule(snapshot(nodes, pending), pol)
    assert [b.job_id for b in d.binds] == ["a0", "a1", "a2"]
    assert "(maxGpus)" in plain(d.explanations["a3"])
