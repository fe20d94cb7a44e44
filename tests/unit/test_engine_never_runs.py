"""Jobs that can never run as the cluster and policy stand (docs/glossary.md, "can never
run") are not in their member's demand: they do not raise its fair share, lower the
others', or make its nodes look wanted. Each case also checks that the reference engine
decides the same (`tests/reference_engine`)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import compute_shares, schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.mentions import plain
from scheduler.engine.snapshot import Node, PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
from tests.examples import examples
from tests.reference_engine import compute_shares as reference_shares
from tests.reference_engine.cycle import _Cycle as ReferenceCycle
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import without_consolidation

H = es.H100
A = es.A100


def _pol(members: dict[str, dict[str, Any]], **sharing: Any) -> Policy:
    return without_consolidation(
        es.policy(members, models=(H, A), min_runtime_seconds=0, **sharing)
    )


def _both(snap: Snapshot, pol: Policy) -> Decisions:
    """The engine's decisions, after checking the reference engine's are the same."""
    got = es.decided_alike(snap, pol)
    assert got.shares == reference_shares(snap, pol)
    return got


def _positions(snap: Snapshot, pol: Policy) -> dict[tuple[str, str], tuple[float, int, int]]:
    """(member, model) -> (fair share, pending, demand)."""
    return {
        (s.member, s.gpu_model): (s.fair_share, s.pending, s.demand)
        for s in compute_shares(snap, pol)
    }


def _three_nodes() -> list[Node]:
    """m-a's node, m-b's node (m-b lends nothing in `_lending`) and a node of no member."""
    return [
        es.node("n-a", "m-a", model=H),
        es.node("n-b", "m-b", model=H),
        es.node("u1", None, model=H),
    ]


_B_FULL = [es.running(f"b{k}", "m-b", "n-b") for k in range(8)]
_LENDING = {"m-a": {}, "m-b": {"lending_limit": 0}}


def _without(snap: Snapshot, job_id: str) -> Snapshot:
    return _without_all(snap, {job_id})


def test_a_gang_its_member_may_never_hold_is_not_in_its_demand() -> None:
    # m-a may hold 8 on its own node and 8 on u1, never m-b's: 16 of the gang's 24.
    pol = _pol(_LENDING)
    gang = es.job("gang", "m-a", pods=3, gpus=8, submitted_at=1.0)
    small = es.job("b-small", "m-b", submitted_at=2.0)
    snap = es.snapshot(_three_nodes(), [gang, small], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
    assert _positions(snap, pol) == _positions(_without(snap, "gang"), pol)
    # Its sentence still says why it waits, and its member's position is not inflated.
    assert plain(got.explanations["gang"]).startswith(
        f"member m-a is at its fair share of 0 {H} (holds 0); it can never run as the "
        "cluster and policy stand: it needs 24 GPUs of one model at once, and m-a can hold "
        f"at most 16 {H} in pods of 8"
    )
    # m-a's nodes do not look wanted: m-b's job, which restarts from zero, is placed as if
    # the gang were not there (counted, the gang had kept it off n-a, on u1).
    without = _both(_without(snap, "gang"), pol)
    assert got.binds == without.binds
    assert [(b.pod_uid, b.node) for b in got.binds] == [("b-small-0", "n-a")]


def test_a_gang_it_may_hold_counts_while_it_waits() -> None:
    # With m-b lending, m-a may hold the whole gang, once the nodes free: it counts.
    pol = _pol({"m-a": {}, "m-b": {}})
    gang = es.job("gang", "m-a", pods=3, gpus=8, submitted_at=1.0)
    snap = es.snapshot(_three_nodes(), [gang], _B_FULL)
    _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (16.0, 24, 24)


@pytest.mark.parametrize(
    ("members", "sharing", "gpus", "model"),
    [
        pytest.param({"m-a": {"max_gpus": 8}, "m-b": {}}, {}, 16, H, id="beyond maxGpus"),
        pytest.param({"m-a": {}, "m-b": {}}, {"borrowing": False}, 16, H, id="beyond entitlement"),
        pytest.param(
            {"m-a": {}, "m-b": {}},
            {"borrowing": False},
            16,
            None,
            id="beyond entitlement, any model",
        ),
        pytest.param({"m-a": {}, "m-b": {}}, {}, 32, H, id="pods bigger than any node"),
    ],
)
def test_jobs_the_policy_or_the_nodes_never_let_run_are_not_in_demand(
    members: dict[str, dict[str, Any]], sharing: dict[str, Any], gpus: int, model: str | None
) -> None:
    pol = _pol(members, **sharing)
    spec: dict[str, Any] = {} if model is None else {"gpu_model": model}
    never = es.job("never", "m-a", pods=2, gpus=gpus // 2, submitted_at=1.0, **spec)
    runs = es.job("runs", "m-a", gpus=2, submitted_at=2.0)
    snap = es.snapshot(_three_nodes(), [never, runs], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol) == _positions(_without(snap, "never"), pol)
    assert _positions(snap, pol)[("m-a", H)][1:] == (2, 2)
    assert "never" not in {b.job_id for b in got.binds}
    assert [b.job_id for b in got.binds] == ["runs"]


def test_a_pod_no_node_takes_is_not_in_demand() -> None:
    pol = _pol({"m-a": {}, "m-b": {}})
    never = es.job("never", "m-a", gpus=1, node_selector={"zone": "nowhere"})
    snap = es.snapshot(_three_nodes(), [never], _B_FULL)
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
    assert "no node can ever run its pods" in plain(got.explanations["never"])


def _unequal(job_id: str, member: str, sizes: list[int], model: str | None = H) -> PendingJob:
    """A gang whose pods ask for `sizes` GPUs (of `model`)."""
    return PendingJob(
        job_id=job_id,
        member=member,
        min_member=len(sizes),
        pods=tuple(
            PendingPod(
                uid=f"{job_id}-{k}",
                name=f"{job_id}-{k}",
                namespace=member,
                spec=PodSpec(gpus=gpus, gpu_model=model),
            )
            for k, gpus in enumerate(sizes)
        ),
    )


def test_a_gang_of_unequal_pods_no_set_of_nodes_holds_is_not_in_demand() -> None:
    # One 8-GPU H100 node: a gang of 8 and 4 can never run, as one of 8 and 8 cannot (it
    # counted 12 pending, its sentence read "8 idle NVIDIA-H100 exist but the gang needs 12").
    pol = _pol({"m-a": {}, "m-b": {}})
    nodes = [es.node("h1", "m-a", model=H), es.node("a1", "m-b", model=A, gpus=4)]
    for sizes in ([8, 8], [8, 4]):
        snap = es.snapshot(nodes, [_unequal("g", "m-a", sizes)])
        got = _both(snap, pol)
        assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
        assert _positions(snap, pol) == _positions(_without(snap, "g"), pol)
        assert got.binds == ()
    assert plain(got.explanations["g"]).endswith(  # 8 and 4, the last
        "; it can never run as the cluster and policy stand: it needs 12 NVIDIA-H100 GPUs "
        "at once, and m-a can hold at most 8 in pods of 8 and 4: 8 on its own nodes"
    )


def test_a_gang_of_unequal_pods_counts_each_node_by_the_pods_it_takes() -> None:
    # 10 H100 GPUs, but the 2-GPU node takes neither pod and the 8-GPU node only the 6:
    # a gang of 6 and 3 never runs. With a 4-GPU node instead, it may (6 and 3 apart).
    pol = _pol({"m-a": {}, "m-b": {}})
    small = [es.node("h1", "m-a", model=H), es.node("h2", "m-b", model=H, gpus=2)]
    snap = es.snapshot(small, [_unequal("g", "m-a", [6, 3])])
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)] == (0.0, 0, 0)
    assert plain(got.explanations["g"]).endswith(
        "it needs 9 NVIDIA-H100 GPUs at once, and m-a can hold at most 6 in pods of 6 and 3: "
        "6 on its own nodes"
    )
    room = [es.node("h1", "m-a", model=H), es.node("h2", "m-b", model=H, gpus=4)]
    snap = es.snapshot(room, [_unequal("g", "m-a", [6, 3])], [es.running("x", "m-b", "h2", gpus=2)])
    got = _both(snap, pol)
    assert _positions(snap, pol)[("m-a", H)][1:] == (9, 9)
    assert "it can never run" not in plain(got.explanations["g"])


def test_a_gang_of_unequal_pods_beyond_what_owners_may_lend_is_not_in_demand() -> None:
    # m-b lends at most 4: neither the 8 nor the 6 of m-a's gang may go on its node.
    nodes = [es.node("h1", "m-a", model=H), es.node("h2", "m-b", model=H)]
    snap = es.snapshot(nodes, [_unequal("g", "m-a", [8, 6])])
    limited = _pol({"m-a": {}, "m-b": {"lending_limit": 4}})
    got = _both(snap, limited)
    assert _positions(snap, limited)[("m-a", H)] == (0.0, 0, 0)
    assert plain(got.explanations["g"]).endswith(
        "it needs 14 NVIDIA-H100 GPUs at once, and m-a can hold at most 8 in pods of 8 and 6: "
        "8 on its own nodes and 0 that m-b may lend (lendingLimit 4)"
    )
    lending = _pol({"m-a": {}, "m-b": {"lending_limit": 6}})
    got = _both(snap, lending)
    assert _positions(snap, lending)[("m-a", H)][1:] == (14, 14)
    assert [b.pod_uid for b in got.binds] == ["g-0", "g-1"]


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["m-a", "m-b", None]), st.sampled_from([1, 2, 4, 8])),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.sampled_from([1, 2, 3, 4, 6, 8]), min_size=2, max_size=4),
    st.one_of(st.none(), st.integers(0, 8)),
)
def test_a_gang_of_unequal_pods_said_never_to_run_fits_no_set_of_nodes(
    nodes: list[tuple[str | None, int]], sizes: list[int], limit: int | None
) -> None:
    """The engine and the reference engine agree, and neither leaves out of demand a gang
    some placement of whole pods (each node at most its GPUs, m-b's at most its
    lendingLimit) would hold."""
    pol = _pol({"m-a": {}, "m-b": {} if limit is None else {"lending_limit": limit}})
    cluster = [es.node(f"n{k}", owner, gpus=gpus) for k, (owner, gpus) in enumerate(nodes)]
    snap = es.snapshot(cluster, [_unequal("g", "m-a", sizes)])
    got = _both(snap, pol)
    if "it can never run" not in plain(got.explanations.get("g", "")):
        return
    for where in itertools.product(range(len(nodes)), repeat=len(sizes)):
        used = [0] * len(nodes)
        for k, size in zip(where, sizes, strict=True):
            used[k] += size
        lent = sum(u for u, (owner, _) in zip(used, nodes, strict=True) if owner == "m-b")
        fits = all(u <= gpus for u, (_, gpus) in zip(used, nodes, strict=True))
        assert not (fits and (limit is None or lent <= limit)), (
            where,
            plain(got.explanations["g"]),
        )


def test_a_job_of_no_model_that_never_runs_leaves_the_free_model_to_the_next() -> None:
    # A job of any model counts against the model with the most GPUs still free; one that
    # can never run takes none of them from the jobs after it.
    pol = _pol({"m-a": {"max_gpus": 4}, "m-b": {}})
    nodes: list[Node] = [*_three_nodes(), es.node("a1", "m-b", model=A)]
    never = es.job("never", "m-a", gpus=8, submitted_at=1.0)
    after = es.job("after", "m-a", gpus=4, submitted_at=2.0)
    run: list[RunningPod] = [*_B_FULL, es.running("b-a1", "m-b", "a1", gpus=8)]
    snap = es.snapshot(nodes, [never, after], run)
    _both(snap, pol)
    assert _positions(snap, pol) == _positions(_without(snap, "never"), pol)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(es.scenarios())
def test_jobs_that_can_never_run_change_no_other_decision(
    scenario: tuple[Policy, Snapshot],
) -> None:
    """Whatever the cluster, policy and queue: the jobs the reference engine finds can
    never run change no bind, preemption, nomination, share or other job's sentence."""
    pol, snap = scenario
    reference = ReferenceCycle(snap, pol)
    never = {j.job_id for j in snap.pending if reference._never_runs(j)}
    if len({j.job_id for j in snap.pending}) != len(snap.pending):
        return  # a repeated id: which of its jobs is left out would be ambiguous
    got = schedule(snap, pol)
    alone = schedule(_without_all(snap, never), pol)
    assert (got.binds, got.preemptions, got.nominations, got.shares) == (
        alone.binds,
        alone.preemptions,
        alone.nominations,
        alone.shares,
    )
    assert {k: v for k, v in got.explanations.items() if k not in never} == dict(alone.explanations)


def _without_all(snap: Snapshot, job_ids: set[str]) -> Snapshot:
    return es.snapshot(
        list(snap.nodes),
        [j for j in snap.pending if j.job_id not in job_ids],
        list(snap.running),
        now=snap.now,
        usage=dict(snap.usage_history),
    )
