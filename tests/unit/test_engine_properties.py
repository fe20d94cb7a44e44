"""Properties of `schedule` over random clusters, policies and snapshots."""

from __future__ import annotations

import random
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import compute_shares, schedule
from scheduler.engine import shares as shares_mod
from scheduler.engine.decisions import Decisions
from scheduler.engine.entitlement import node_model
from scheduler.engine.placement import blocking_taints
from scheduler.engine.snapshot import RunningPod, Snapshot
from tests.examples import examples
from tests.unit.engine_strategies import scenarios

SETTINGS = settings(
    max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _free_after(snap: Snapshot, d: Decisions) -> dict[str, list[int]]:
    free = {n.name: [n.gpus, n.cpu_milli, n.memory_bytes, n.max_pods] for n in snap.nodes}
    for pod in snap.running:
        f = free[pod.node]
        f[0] -= pod.spec.gpus
        f[1] -= pod.spec.cpu_milli
        f[2] -= pod.spec.memory_bytes
        f[3] -= 1
    specs = {p.uid: p.spec for j in snap.pending for p in j.pods}
    for b in d.binds:
        f = free[b.node]
        s = specs[b.pod_uid]
        f[0] -= s.gpus
        f[1] -= s.cpu_milli
        f[2] -= s.memory_bytes
        f[3] -= 1
    return free


@SETTINGS
@given(scenarios())
def test_no_node_over_committed(scenario: tuple[Policy, Snapshot]) -> None:
    pol, snap = scenario
    d = schedule(snap, pol)
    for name, f in _free_after(snap, d).items():
        assert min(f) >= 0, (name, f)
    nodes = {n.name: n for n in snap.nodes}
    pods = {p.uid: p for j in snap.pending for p in j.pods}
    for b in d.binds:
        n = nodes[b.node]
        spec = pods[b.pod_uid].spec
        assert n.ready and not n.unschedulable
        assert spec.gpu_model is None or spec.gpu_model == n.gpu_model
        assert not blocking_taints(n.taints, spec.tolerations)


@SETTINGS
@given(scenarios())
def test_gangs_all_or_nothing(scenario: tuple[Policy, Snapshot]) -> None:
    """A gang starts whole or not at all; a PodGroup with more pods than its minMember
    starts with at least that many of its first pods."""
    pol, snap = scenario
    d = schedule(snap, pol)
    bound: dict[str, int] = {}
    for b in d.binds:
        bound[b.job_id] = bound.get(b.job_id, 0) + 1
    uids = {b.pod_uid for b in d.binds}
    for job in snap.pending:
        count = bound.get(job.job_id, 0)
        if 0 < job.min_member < len(job.pods):
            assert count == 0 or job.min_member <= count <= len(job.pods)
            assert [p.uid in uids for p in job.pods] == [True] * count + [False] * (
                len(job.pods) - count
            )
        else:
            assert count in (0, len(job.pods))
        if len(job.pods) < job.min_member:
            assert job.job_id not in bound
        assert (job.job_id in bound) != (job.job_id in d.explanations)
    assert len({b.pod_uid for b in d.binds}) == len(d.binds)


@SETTINGS
@given(scenarios())
def test_members_within_entitlement_never_preempted(scenario: tuple[Policy, Snapshot]) -> None:
    pol, snap = scenario
    d = schedule(snap, pol)
    shares = {(s.member, s.gpu_model): s for s in compute_shares(snap, pol)}
    # Reclaim only: consolidation moves work that fits elsewhere (its own property below),
    # and a member taking back what its own later jobs overtook changes no position.
    assert all(p.victim_member == p.reclaimer for p in d.preemptions if p.cause == "queue")
    preempted = {p.pod_uid for p in d.preemptions if p.cause not in ("consolidation", "queue")}
    nodes = {n.name: n for n in snap.nodes}
    victims = {p.member for p in snap.running if p.uid in preempted}
    # GPUs per (member, model) once the cycle's binds and preemptions are carried out.
    after: dict[tuple[str, str], int] = {}
    specs = {q.uid: q.spec for j in snap.pending for q in j.pods}
    for b in d.binds:
        key = (b.member, node_model(nodes[b.node]))
        after[key] = after.get(key, 0) + specs[b.pod_uid].gpus
    for p in snap.running:
        if p.uid in preempted and p.member is not None:
            key = (p.member, node_model(nodes[p.node]))
            after[key] = after.get(key, 0) - p.spec.gpus
    # A victim is above its entitlement on some model, counting its own binds of this
    # cycle: a bind earlier in the cycle can take it there (a job whose demand counts
    # against one model, placed on another), and then its owner may take back its nodes.
    bound: dict[tuple[str, str], int] = {}
    for b in d.binds:
        key = (b.member, node_model(nodes[b.node]))
        bound[key] = bound.get(key, 0) + specs[b.pod_uid].gpus
    for member in victims:
        rows = [s for (m, _), s in shares.items() if m == member]
        assert any(
            s.allocated + bound.get((member, s.gpu_model), 0) > s.entitlement for s in rows
        ), member
    # The floors hold per GPU model, on the models where the member lost GPUs: an H100 is
    # never counted against an A100 entitlement (docs/glossary.md), so a member below its
    # H100 entitlement because it asks for no H100 may still give back the A100 it borrows.
    # On each such model: above its fair share there (the fair-share rules), or else never
    # left below its entitlement there, unless every pod taken on that model runs on the
    # reclaiming member's own nodes (the owner gets its hardware back from a member above
    # its entitlement), belongs to a job with a pod there (such a job is taken whole, even
    # below its member's entitlement on another model: a gang straddling models must not
    # keep the owner off its own nodes), or runs on the nodes of a member whose work a
    # move for the same job sent home (consolidation.py: the pods taken make room for it
    # there).
    taken: dict[tuple[str, str], list[tuple[RunningPod, str, set[str]]]] = {}
    reclaimer_of = {p.pod_uid: p.reclaimer for p in d.preemptions}
    for_job = {p.pod_uid: p.for_job for p in d.preemptions}
    member_of = {p.uid: p.member for p in snap.running}
    went_home: dict[str, set[str]] = {}
    for moved in d.preemptions:
        if moved.cause == "consolidation" and member_of.get(moved.pod_uid) is not None:
            went_home.setdefault(moved.for_job, set()).add(str(member_of[moved.pod_uid]))
    job_owners: dict[str, set[str | None]] = {}
    for pod in snap.running:
        if not pod.terminating and pod.node in nodes:
            job_owners.setdefault(pod.job_id, set()).add(nodes[pod.node].owner)
    for pod in snap.running:
        if pod.uid in preempted and pod.member is not None and pod.spec.gpus > 0:
            key = (pod.member, node_model(nodes[pod.node]))
            reclaimer = reclaimer_of[pod.uid]
            homes = {reclaimer, *went_home.get(for_job[pod.uid], ())}
            if reclaimer in job_owners.get(pod.job_id, set()):
                homes.add(str(nodes[pod.node].owner))  # taken whole with its pods there
            taken.setdefault(key, []).append((pod, reclaimer, homes))
    for key, pods in taken.items():
        s = shares.get(key)
        if s is None:
            # A model with no Ready node has no share row: nobody is entitled to it or has
            # a fair share of it, so there is no floor to keep (a gang preempted whole may
            # have a pod on such a node).
            assert not any(n.ready and n.gpus > 0 and node_model(n) == key[1] for n in snap.nodes)
            continue
        home = all(nodes[pod.node].owner in homes for pod, _, homes in pods)
        assert (
            home or s.allocated > s.fair_share or s.allocated + after.get(key, 0) >= s.entitlement
        ), (key, s, after.get(key, 0))
    preempted = {p.pod_uid for p in d.preemptions}
    for p in snap.running:
        if p.uid in preempted:
            assert not p.terminating and p.member is not None
            assert nodes[p.node] is not None
    # Whole gangs only.
    for job_id in {p.job_id for p in d.preemptions}:
        all_pods = {p.uid for p in snap.running if p.job_id == job_id and not p.terminating}
        assert all_pods <= preempted
    for p in d.preemptions:
        assert p.grace_period_seconds == pol.sharing.reclaim_grace_period_seconds


@SETTINGS
@given(scenarios())
def test_consolidation_never_moves_others_work_within_entitlement_on_their_own_nodes(
    scenario: tuple[Policy, Snapshot],
) -> None:
    """A pod moved by consolidation is the waiting job's member's own, or borrowed (a
    reclaimable pod), or runs on a node its member does not own; it ran the minimum
    runtime and its job was reclaimed fewer times than the policy allows."""
    pol, snap = scenario
    d = schedule(snap, pol)
    moved = {p.pod_uid: p for p in d.preemptions if p.cause == "consolidation"}
    if not moved:
        return
    owner = {n.name: n.owner for n in snap.nodes}
    reclaimable = shares_mod.build(snap, pol).allocation.reclaimable_pods
    limit = pol.sharing.max_reclaims_per_job
    for pod in snap.running:
        p = moved.get(pod.uid)
        if p is None:
            continue
        assert (
            pod.member == p.reclaimer or pod.uid in reclaimable or owner[pod.node] != pod.member
        ), (pod, p)
        assert limit is None or pod.reclaims < limit
        if not pol.sharing.preempt_below_min_runtime:
            assert snap.now - pod.started_at >= pol.sharing.min_runtime_seconds
    assert len({p.for_job for p in moved.values()}) <= pol.sharing.max_consolidations_per_cycle


def _shuffled(snap: Snapshot, seed: int) -> Snapshot:
    rng = random.Random(seed)
    nodes, run, pending = list(snap.nodes), list(snap.running), list(snap.pending)
    rng.shuffle(nodes)
    rng.shuffle(run)
    rng.shuffle(pending)
    usage = dict(reversed(list(snap.usage_history.items())))
    return replace(
        snap, nodes=tuple(nodes), running=tuple(run), pending=tuple(pending), usage_history=usage
    )


@SETTINGS
@given(scenarios(), st.integers(0, 2**16))
def test_deterministic(scenario: tuple[Policy, Snapshot], seed: int) -> None:
    pol, snap = scenario
    first = repr(schedule(snap, pol))
    assert repr(schedule(snap, pol)) == first
    assert repr(schedule(_shuffled(snap, seed), pol)) == first


@SETTINGS
@given(scenarios())
def test_shares_reported_are_compute_shares(scenario: tuple[Policy, Snapshot]) -> None:
    pol, snap = scenario
    assert schedule(snap, pol).shares == compute_shares(snap, pol)


@SETTINGS
@given(scenarios(simple=True))
def test_work_conservation_for_single_pods(scenario: tuple[Policy, Snapshot]) -> None:
    """No single-pod job that fits some node's free capacity is left waiting, unless a
    member limit forbids it (borrowing off, max_gpus, lending limits) or the capacity is
    held for a job that reclaims (nominated, or drained while victims age)."""
    pol, snap = scenario
    d = schedule(snap, pol)
    free = _free_after(snap, d)
    limited = not pol.sharing.borrowing or any(
        m.max_gpus is not None or m.lending_limit is not None for m in pol.members
    )
    if limited or d.nominations or any("held for" in e for e in d.explanations.values()):
        return
    for job in snap.pending:
        if job.job_id not in d.explanations or len(job.pods) < job.min_member:
            continue
        spec = job.pods[0].spec
        for n in snap.nodes:
            f = free[n.name]
            fits = (
                n.ready
                and not n.unschedulable
                and not blocking_taints(n.taints, spec.tolerations)
                and f[0] >= spec.gpus
                and f[1] >= spec.cpu_milli
                and f[2] >= spec.memory_bytes
                and f[3] >= 1
            )
            assert not fits, (job.job_id, n.name, d.explanations[job.job_id])


@SETTINGS
@given(scenarios())
def test_nominations_fit_once_victims_are_gone(scenario: tuple[Policy, Snapshot]) -> None:
    """Binds plus every nominated pod fit on their nodes once the terminating and the
    preempted pods are gone: freed capacity is never promised twice."""
    pol, snap = scenario
    d = schedule(snap, pol)
    gone = {p.pod_uid for p in d.preemptions}
    free = {n.name: [n.gpus, n.cpu_milli, n.memory_bytes, n.max_pods] for n in snap.nodes}
    specs = {p.uid: p.spec for j in snap.pending for p in j.pods}

    def take(node: str, gpus: int, cpu: int, mem: int) -> None:
        f = free[node]
        f[0] -= gpus
        f[1] -= cpu
        f[2] -= mem
        f[3] -= 1

    for pod in snap.running:
        if not pod.terminating and pod.uid not in gone:
            take(pod.node, pod.spec.gpus, pod.spec.cpu_milli, pod.spec.memory_bytes)
    for b in d.binds:
        s = specs[b.pod_uid]
        take(b.node, s.gpus, s.cpu_milli, s.memory_bytes)
    nominated = set()
    for nom in d.nominations:
        assert nom.job_id not in {b.job_id for b in d.binds}
        assert nom.job_id in d.explanations
        for uid, node in nom.nodes.items():
            s = specs[uid]
            take(node, s.gpus, s.cpu_milli, s.memory_bytes)
            nominated.add(uid)
        job = next(j for j in snap.pending if j.job_id == nom.job_id)
        # All its pods, or the first minMember of a PodGroup that has more: reclaim and
        # consolidation make room for those (the rest start when room allows).
        required = job.pods[: job.min_member] if 0 < job.min_member < len(job.pods) else job.pods
        assert {p.uid for p in required} == set(nom.nodes)
    for name, f in free.items():
        assert min(f) >= 0, (name, f)
    for p in d.preemptions:
        assert p.for_job in {n.job_id for n in d.nominations}


@SETTINGS
@given(scenarios())
def test_member_limits_hold_for_new_binds(scenario: tuple[Policy, Snapshot]) -> None:
    """Binds never take a member past max_gpus, an owner past its lending limit, or (with
    borrowing off) a member above its entitlement; `Bind.reclaimable` matches the member's
    position once the bind is counted.

    A pod preempted in the same cycle (a consolidation moves a member's own work) may
    leave its member's allocation before or after one of its binds: the decisions do not
    say which, so a bind's position is checked between the two."""
    pol, snap = scenario
    d = schedule(snap, pol)
    running = {p.uid: p for p in snap.running}
    model_of = {n.name: n.gpu_model or "unknown" for n in snap.nodes}
    leaving: dict[tuple[str | None, str], int] = {}
    leaving_total: dict[str | None, int] = {}
    for pre in d.preemptions:
        pod = running[pre.pod_uid]
        if pod.terminating:
            continue
        where = (pod.member, model_of[pod.node])
        leaving[where] = leaving.get(where, 0) + pod.spec.gpus
        leaving_total[pod.member] = leaving_total.get(pod.member, 0) + pod.spec.gpus
    shares = {(s.member, s.gpu_model): s for s in compute_shares(snap, pol)}
    nodes = {n.name: n for n in snap.nodes}
    specs = {p.uid: p.spec for j in snap.pending for p in j.pods}
    total: dict[str, int] = {}
    per_model: dict[tuple[str, str], int] = {}
    lent: dict[str, int] = {}
    for (member, model), s in shares.items():
        total[member] = total.get(member, 0) + s.allocated
        per_model[(member, model)] = s.allocated
        lent[member] = lent.get(member, 0) + s.lent
    for b in d.binds:
        gpus = specs[b.pod_uid].gpus
        if gpus == 0:
            assert not b.reclaimable
            continue
        node = nodes[b.node]
        model = node.gpu_model or "unknown"
        key = (b.member, model)
        total[b.member] = total.get(b.member, 0) + gpus
        per_model[key] = per_model.get(key, 0) + gpus
        entitlement = shares[key].entitlement if key in shares else 0
        if b.reclaimable:
            assert per_model[key] > entitlement
        else:
            assert per_model[key] - leaving.get(key, 0) <= entitlement
        assert b.owner == node.owner
        spec = pol.member(b.member)
        if spec.max_gpus is not None:
            assert total[b.member] - leaving_total.get(b.member, 0) <= spec.max_gpus
        if not pol.sharing.borrowing:
            assert per_model[key] - leaving.get(key, 0) <= entitlement
        if node.owner is not None and node.owner != b.member:
            lent[node.owner] = lent.get(node.owner, 0) + gpus
            owner = pol.member(node.owner)
            if owner.lending_limit is not None:
                assert lent[node.owner] <= owner.lending_limit
