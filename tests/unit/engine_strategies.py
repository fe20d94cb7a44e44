"""Builders and hypothesis strategies for engine tests (the simulator's tests reuse them).

Builders keep hand-written cases short: `policy(...)`, `node(...)`, `running(...)`,
`job(...)`, `snapshot(...)`; `decided_alike(...)` checks a case against the reference
engine. Strategies draw small random clusters, policies and
snapshots: `policies()`, `snapshots(policy)` and `scenarios()` (policy, snapshot).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import (
    Node,
    PendingJob,
    PendingPod,
    PodSpec,
    RunningPod,
    SelectorRequirement,
    Snapshot,
    Taint,
    Toleration,
)
from tests.reference_engine import schedule as reference_schedule

H100 = "NVIDIA-H100"
A100 = "NVIDIA-A100"
GIB = 2**30


def policy(
    members: dict[str, dict[str, Any]] | list[str] | None = None,
    models: tuple[str, ...] = (H100, A100),
    **sharing: Any,
) -> Policy:
    """A policy with `members` (name -> Member fields in snake_case) and sharing rules."""
    if members is None:
        members = ["lab-a", "lab-b"]
    if isinstance(members, list):
        members = {m: {} for m in members}
    return Policy.model_validate(
        {
            "api_version": "fairpool.io/v1",
            "kind": "Policy",
            "spec": {
                "gpu_models": [{"name": m, "hourly_cost": "1.00"} for m in models],
                "members": [{"name": n, **fields} for n, fields in members.items()],
                "sharing": sharing,
            },
        }
    )


def without_consolidation(pol: Policy) -> Policy:
    """The policy with `maxConsolidationsPerCycle: 0`."""
    sharing = pol.spec.sharing.model_copy(update={"max_consolidations_per_cycle": 0})
    return pol.model_copy(update={"spec": pol.spec.model_copy(update={"sharing": sharing})})


def node(
    name: str,
    owner: str | None = "lab-a",
    gpus: int = 8,
    model: str | None = H100,
    cpu: int = 64,
    mem_gib: int = 512,
    domain: str | None = "rack-1",
    **kwargs: Any,
) -> Node:
    return Node(
        name=name,
        owner=owner,
        gpu_model=model,
        gpus=gpus,
        cpu_milli=cpu * 1000,
        memory_bytes=mem_gib * GIB,
        topology_domain=domain,
        **kwargs,
    )


def running(
    uid: str,
    member: str | None,
    node_name: str,
    gpus: int = 1,
    job_id: str | None = None,
    started_at: float = 0.0,
    priority: int = 0,
    terminating: bool = False,
    cpu_milli: int = 0,
    memory_bytes: int = 0,
    reclaims: int = 0,
    checkpointable: bool | None = None,
    scheduled_by_fairpool: bool = True,
    submitted_at: float = 0.0,
) -> RunningPod:
    return RunningPod(
        uid=uid,
        name=uid,
        namespace=member or "default",
        member=member,
        job_id=job_id or uid,
        node=node_name,
        spec=PodSpec(gpus=gpus, cpu_milli=cpu_milli, memory_bytes=memory_bytes),
        priority=priority,
        started_at=started_at,
        terminating=terminating,
        reclaims=reclaims,
        checkpointable=checkpointable,
        scheduled_by_fairpool=scheduled_by_fairpool,
        submitted_at=submitted_at,
    )


def job(
    job_id: str,
    member: str,
    pods: int = 1,
    gpus: int = 1,
    min_member: int | None = None,
    priority: int = 0,
    submitted_at: float = 0.0,
    nominated: dict[str, str] | None = None,
    reclaims: int = 0,
    **spec: Any,
) -> PendingJob:
    """A job of `pods` identical pods (uids `<job_id>-<n>`); a gang when pods > 1."""
    pod_spec = PodSpec(gpus=gpus, **spec)
    return PendingJob(
        job_id=job_id,
        member=member,
        pods=tuple(
            PendingPod(uid=f"{job_id}-{k}", name=f"{job_id}-{k}", namespace=member, spec=pod_spec)
            for k in range(pods)
        ),
        min_member=pods if min_member is None else min_member,
        priority=priority,
        submitted_at=submitted_at,
        nominated_nodes=nominated or {},
        reclaims=reclaims,
    )


def snapshot(
    nodes: list[Node],
    pending: list[PendingJob] | None = None,
    run: list[RunningPod] | None = None,
    now: float = 10_000.0,
    usage: dict[str, float] | None = None,
) -> Snapshot:
    return Snapshot(
        now=now,
        nodes=tuple(nodes),
        running=tuple(run or ()),
        pending=tuple(pending or ()),
        usage_history=usage or {},
    )


def decided_alike(snap: Snapshot, pol: Policy) -> Decisions:
    """The engine's decisions, after checking that the reference engine
    (`tests/reference_engine`) decides the same binds, preemptions and nominations, and
    writes the same sentences."""
    got = schedule(snap, pol)
    expected = reference_schedule(snap, pol)
    assert (got.binds, got.preemptions, got.nominations) == (
        expected.binds,
        expected.preemptions,
        expected.nominations,
    )
    assert got.explanations == expected.explanations
    return got


# -- hypothesis strategies -------------------------------------------------------------

MEMBERS = ("m-a", "m-b", "m-c")
MODELS = (H100, A100)


@st.composite
def policies(draw: st.DrawFn) -> Policy:
    members: dict[str, dict[str, Any]] = {}
    for name in MEMBERS[: draw(st.integers(2, 3))]:
        fields: dict[str, Any] = {"weight": draw(st.sampled_from([0.5, 1.0, 2.0]))}
        if draw(st.booleans()):
            fields["purchased"] = {draw(st.sampled_from(MODELS)): draw(st.integers(0, 4))}
        if draw(st.integers(0, 4)) == 0:
            fields["max_gpus"] = draw(st.integers(0, 24))
        if draw(st.integers(0, 4)) == 0:
            fields["lending_limit"] = draw(st.integers(0, 16))
        members[name] = fields
    return policy(
        members,
        models=MODELS,
        borrowing=draw(st.integers(0, 4)) != 0,
        min_runtime_seconds=draw(st.sampled_from([0, 600])),
        preempt_below_min_runtime=draw(st.booleans()),
        reclaim_grace_period_seconds=30,
        usage_half_life_hours=draw(st.sampled_from([None, 24.0])),
        head_start=draw(st.booleans()),
        # 95 s: in test_engine_reference, some pending jobs have waited that long and some not.
        reclaim_overtaken_after_seconds=draw(st.sampled_from([None, 0, 95, 9_995])),
    )


@st.composite
def nodes_strategy(draw: st.DrawFn, members: list[str]) -> list[Node]:
    count = draw(st.integers(1, 8))
    out: list[Node] = []
    for k in range(count):
        taints: tuple[Taint, ...] = ()
        if draw(st.integers(0, 5)) == 0:
            taints = (
                Taint("dedicated", "x", draw(st.sampled_from(["NoSchedule", "PreferNoSchedule"]))),
            )
        out.append(
            node(
                f"n{k:02d}",
                owner=draw(st.sampled_from([*members, None])),
                gpus=draw(st.sampled_from([0, 2, 4, 8])),
                model=draw(st.sampled_from(MODELS)),
                cpu=draw(st.sampled_from([8, 32, 64])),
                mem_gib=draw(st.sampled_from([64, 512])),
                domain=draw(st.sampled_from(["r1", "r2", None])),
                labels={"zone": draw(st.sampled_from(["z1", "z2"]))},
                taints=taints,
                ready=draw(st.integers(0, 9)) != 0,
                unschedulable=draw(st.integers(0, 9)) == 0,
                max_pods=draw(st.sampled_from([3, 110])),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn, pol: Policy, simple: bool = False) -> Snapshot:
    """A snapshot consistent with its nodes: running pods never over-commit a node.
    `simple`: single-pod jobs without selectors or terminating pods (for work
    conservation)."""
    members = pol.member_names()
    nodes = draw(nodes_strategy(members))
    now = 10_000.0
    run: list[RunningPod] = []
    free = {n.name: [n.gpus, n.cpu_milli, n.memory_bytes, n.max_pods] for n in nodes}
    for k in range(draw(st.integers(0, 16))):
        n = draw(st.sampled_from(nodes))
        f = free[n.name]
        gpus = draw(st.integers(0, 4))
        cpu = draw(st.sampled_from([0, 1000, 4000]))
        if f[0] < gpus or f[1] < cpu or f[3] < 1:
            continue
        f[0] -= gpus
        f[1] -= cpu
        f[3] -= 1
        gang = draw(st.integers(0, 3)) == 0
        run.append(
            RunningPod(
                uid=f"r{k:02d}",
                name=f"r{k:02d}",
                namespace="ns",
                member=draw(st.sampled_from([*members, None])),
                job_id=f"rg{k % 2}" if gang else f"r{k:02d}",
                node=n.name,
                spec=PodSpec(gpus=gpus, cpu_milli=cpu),
                priority=draw(st.integers(0, 2)),
                started_at=draw(st.sampled_from([0.0, 9_000.0, 9_900.0])),
                terminating=not simple and draw(st.integers(0, 6)) == 0,
                # Against the pending jobs' submissions (0 to 11): before, among, after.
                submitted_at=draw(st.sampled_from([0.0, 4.5, 20.0])),
                checkpointable=draw(st.sampled_from([None, True])),
            )
        )
    # A gang job id is one member's: make every pod of a shared job id the first's member.
    first: dict[str, str | None] = {}
    run = [
        RunningPod(
            uid=p.uid,
            name=p.name,
            namespace=p.namespace,
            member=first.setdefault(p.job_id, p.member),
            job_id=p.job_id,
            node=p.node,
            spec=p.spec,
            priority=p.priority,
            started_at=p.started_at,
            terminating=p.terminating,
            submitted_at=p.submitted_at,
            checkpointable=p.checkpointable,
        )
        for p in run
    ]
    pending: list[PendingJob] = []
    for k in range(draw(st.integers(0, 12))):
        pods = 1 if simple else draw(st.sampled_from([1, 1, 1, 2, 3]))
        extra: dict[str, Any] = {}
        if not simple:
            if draw(st.integers(0, 3)) == 0:
                extra["gpu_model"] = draw(st.sampled_from(MODELS))
            if draw(st.integers(0, 5)) == 0:
                extra["node_selector"] = {"zone": "z1"}
            if draw(st.integers(0, 5)) == 0:
                extra["affinity"] = (
                    (SelectorRequirement("zone", draw(st.sampled_from(["In", "NotIn"])), ("z2",)),),
                )
            if draw(st.integers(0, 4)) == 0:
                extra["tolerations"] = (Toleration("dedicated", "Exists"),)
        pending.append(
            job(
                f"j{k:02d}",
                draw(st.sampled_from(members)),
                pods=pods,
                gpus=draw(st.sampled_from([0, 1, 1, 2, 4, 8])),
                # Mostly whole gangs; some waiting for a pod (incomplete), some PodGroups
                # that may start with fewer pods than they have (minMember).
                min_member=draw(
                    st.sampled_from([pods] * 4 + [pods + 1] + ([2] if pods > 2 else []))
                ),
                priority=draw(st.integers(0, 2)),
                submitted_at=float(k),
                cpu_milli=draw(st.sampled_from([0, 1000, 16000])),
                **extra,
            )
        )
    usage = {m: draw(st.sampled_from([0.0, 3600.0, 36000.0])) for m in members}
    return snapshot(nodes, pending, run, now=now, usage=usage)


@st.composite
def scenarios(draw: st.DrawFn, simple: bool = False) -> tuple[Policy, Snapshot]:
    pol = draw(policies())
    return pol, draw(snapshots(pol, simple=simple))
