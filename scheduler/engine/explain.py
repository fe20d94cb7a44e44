"""One human sentence per waiting job, saying why it waits.

Sentences start with the member's position for the job's GPU model ("member lab-b is
below its fair share of 16 NVIDIA-H100 (holds 8)") and go on with what blocks the job,
measured on the capacity left at the end of the cycle.

Every member a sentence names, and every job of another member, is marked
(`scheduler.engine.mentions`): the readers' views of a sentence differ by them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Final

from scheduler.engine.jobinfo import required_pods
from scheduler.engine.mentions import job_of, mention
from scheduler.engine.placement import ClusterState, spec_res
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, RunningPod

if TYPE_CHECKING:  # consolidation imports reclaim, which imports this module
    from scheduler.engine.consolidation import Refusal

_EPS = 1e-9


def fmt(x: float) -> str:
    """16 -> '16', 7.5 -> '7.5', 2.3333 -> '2.3'."""
    if x == int(x):
        return str(int(x))  # what `round`, a call into Python, would give
    r = round(x, 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def job_name(job_id: str, pods: Sequence[PendingPod | RunningPod]) -> str:
    """How a sentence names a job: a pod alone whose job id is its uid (the daemon's pods
    not in a gang, `scheduler.k8s.objects.job_id_of`) by namespace/name, which its user
    knows (a uid maps to nothing they see); any other job by its id (a gang's
    namespace/name, a trace's job). Only the text: decisions keep the id."""
    if len(pods) == 1:
        pod = pods[0]
        if pod.uid == job_id:
            return f"{pod.namespace}/{pod.name}"
    return job_id


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def whole_minutes(seconds: float) -> str:
    """'5 min', '11 h 48 min': a wait rounded up to the minute. A sentence that counted
    down in seconds would change every cycle and send its pod's FailedScheduling event
    every cycle; once a minute is the events' own pace."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if rest == 0 else f"{hours} h {rest} min"


NEVER_RUNS = "it can never run as the cluster and policy stand: "
"""How the sentence of a job that can never run (docs/glossary.md) goes on after its
member's position."""


def max_gpus_detail(member: str, gpus: int, held: int, max_gpus: int) -> str:
    """Why the member's `maxGpus` stops a job of `gpus` while it holds `held`. A job
    bigger than the limit itself can never run: said in the words `fairpool simulate`
    and `fairpool trace check` name it with (`scheduler.sim.never`)."""
    if gpus > max_gpus:
        return NEVER_RUNS + over_max_gpus(member, gpus, max_gpus)
    return (
        f"it needs {plural(gpus, 'more GPU')} but its limit is {max_gpus} (maxGpus) and it "
        f"holds {held}"
    )


def no_borrowing_detail(
    member: str, gpus: int, entitled: int, model: str | None, most: int, asked: str | None
) -> str:
    """Why `borrowing: false` stops a job: `entitled` is the member's entitlement of the
    job's GPU `model`, `most` the largest of the models it may use (`asked`, the model it
    asks for, or any). A job bigger than `most` can never run, said as for `maxGpus`."""
    if gpus > most:
        return NEVER_RUNS + over_entitlement(member, gpus, most, asked)
    what = f"{entitled} {model}" if model else "its entitlement"
    return (
        f"borrowing is off and {plural(gpus, 'more GPU')} would take it above its "
        f"entitlement of {what}"
    )


def over_max_gpus(member: str, gpus: int, max_gpus: int) -> str:
    return f"it needs {gpus} GPUs at once, more than {mention(member)}'s maxGpus {max_gpus}"


def over_entitlement(member: str, gpus: int, entitled: int, model: str | None) -> str:
    of = f" {model}" if model else ""
    return (
        f"it needs {gpus}{of} GPUs at once, more than {mention(member)}'s entitlement of "
        f"{entitled}{of} GPUs, and borrowing is off"
    )


def drain_detail(min_runtime_s: int, idle: int, pods: str | None = None) -> str:
    """Why a job waits for `pods` (None: the borrowed pods it needs back) younger than the
    minimum runtime (a drain), and what is kept for it meanwhile: the GPUs of its nodes
    idle now, when there are any (most drains wait for busy GPUs only, and "the idle
    GPUs" would name none)."""
    what = "the borrowed pods it needs back" if pods is None else pods
    why = f"{what} have run less than the minimum runtime of {min_runtime_s} s"
    if idle <= 0:
        return f"{why}; none of the GPUs it will use is idle yet"
    verb = "is" if idle == 1 else "are"
    return f"{why}; the {plural(idle, 'idle GPU')} it will use {verb} held for it meanwhile"


def at_limit_detail(held: Mapping[str, tuple[str, int]], model: str, limit: int) -> str:
    """The end of a refusal to reclaim, when borrowed GPUs the job could use belong to jobs
    at the reclaim limit (`held`: job id -> (member, GPUs there)): such jobs are never
    victims, and without this an owner would read that nobody borrows what it sees
    borrowed on its own nodes."""
    gpus = sum(g for _, g in held.values())
    names = sorted(held)
    jobs = ", ".join(job_of(j, held[j][0]) for j in names[:3])
    if len(names) > 3:
        jobs += f" and {len(names) - 3} more"
    whose = "a job" if len(names) == 1 else "jobs"
    return (
        f"; not counted: {plural(gpus, f'{model} GPU')} it could use, borrowed by {whose} "
        f"reclaimed {plural(limit, 'time')} already (maxReclaimsPerJob), never reclaimed "
        f"again: {jobs}"
    )


def overtook_clause(held: int, model: str) -> str:
    """The end of a waiting job's sentence when its member's own later, smaller jobs that
    resume hold `held` GPUs of its model (`cycle.overtook_hint` decides when)."""
    return (
        f"; its member's own later, smaller jobs that resume hold {held} {model} GPUs "
        "(sharing.reclaimOvertakenAfterSeconds lets a job that waited that long take such "
        "GPUs back)"
    )


def listed(names: tuple[str, ...], most: int = 3) -> str:
    """('a',) -> 'a'; ('a', 'b', 'c') -> 'a, b and c'; five names -> 'a, b, c and 2 more'."""
    if len(names) > most:
        return f"{', '.join(names[:most])} and {len(names) - most} more"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _hold(names: tuple[str, ...], what: str) -> str:
    # Not nested in `no_move_detail`: a compiled closure is a reference cycle per call.
    return f"{listed(names)} {'holds' if len(names) == 1 else 'hold'} {what}"


def _owned(owners: tuple[tuple[str, int], ...], nodes: int) -> str:
    """Nodes held by their owners' own work, by owner: '5 nodes of lab-o hold its own
    work …', '39 nodes (30 of vc-01, 5 of vc-03, 3 of vc-07 and 1 of 1 other member)
    hold their owners' own work …'."""
    if len(owners) == 1:
        owner = mention(owners[0][0])
        return (
            f"{nodes} nodes of {owner} hold its own work within its entitlement, which "
            f"moves only for {owner}"
        )
    counts = [f"{count} of {mention(owner)}" for owner, count in owners[:3]]
    if len(owners) > 3:
        rest = owners[3:]
        counts.append(f"{sum(c for _, c in rest)} of {plural(len(rest), 'other member')}")
    named = listed(tuple(counts), most=len(counts))
    return (
        f"{nodes} nodes ({named}) hold their owners' own work within their entitlement, "
        "which moves only for them"
    )


def no_move_detail(
    refusal: Refusal, gpus: int, min_runtime_s: int, loss_s: int, max_reclaims: int | None = None
) -> str:
    """Why consolidation opened no node for a job blocked by fragmentation (`Refusal`):
    without it the owner of the work that holds the nodes, or the policy bound that
    stops the move, is invisible, and a user reads only that the GPUs are scattered."""
    parts = []
    if len(refusal.guaranteed) > 3 and refusal.guaranteed_owners:
        parts.append(_owned(refusal.guaranteed_owners, len(refusal.guaranteed)))
    elif refusal.guaranteed:
        whose = (
            "its owner's own work within its entitlement, which moves only for that owner"
            if len(refusal.guaranteed) == 1
            else "their owners' own work within their entitlement, which moves only for them"
        )
        parts.append(_hold(refusal.guaranteed, whose))
    if refusal.young:
        young = f"work younger than the minimum runtime of {min_runtime_s} s"
        if refusal.young_soonest is not None:
            node, seconds = refusal.young_soonest
            wait = whole_minutes(seconds)
            young += (
                f" (old enough in {wait})"
                if len(refusal.young) == 1
                else f" ({node}'s is old enough first, in {wait})"
            )
        parts.append(_hold(refusal.young, young))
    if refusal.leaving:
        parts.append(_hold(refusal.leaving, "work already preempted in this cycle"))
    # What holds the nodes no move may open, in `FIXED_CAUSES` order, then the rest.
    unmovable = (
        (
            refusal.at_limit,
            f"work reclaimed {plural(max_reclaims or 0, 'time')} already "
            "(maxReclaimsPerJob), never moved again",
        ),
        (refusal.held, "GPUs held for other waiting jobs"),
        (refusal.started, "work started in this cycle"),
        (refusal.terminating, "pods still terminating"),
        (refusal.unscheduled, "pods fairpool does not schedule"),
        (refusal.fixed, "no work consolidation could move for this job's GPU model"),
    )
    parts.extend(_hold(nodes, what) for nodes, what in unmovable if nodes)
    if refusal.costly:
        lost = fmt(refusal.cheapest_loss_gpu_s / 3600)
        budget = fmt(gpus * loss_s / 3600)
        parts.append(
            f"opening {listed(refusal.costly)} would throw away at least {lost} GPU-h of "
            f"work, more than the {budget} GPU-h a move may (maxConsolidationLossSeconds "
            f"{loss_s} s for {'its 1 GPU' if gpus == 1 else f'each of its {gpus} GPUs'})"
        )
    if refusal.openable:
        one = len(refusal.openable) == 1
        them = "it" if one else "them"
        if refusal.too_few:
            why = f"{'it is' if one else 'they are'} not enough for the whole job"
        elif refusal.over_budget:
            why = (
                f"not within the budget for the whole job, or not with the work leaving "
                f"{them} placed elsewhere"
            )
        else:
            why = f"the work leaving {them} would fit on no other node"
        parts.append(f"{listed(refusal.openable)} could be opened, but {why}")
    if not parts:
        return ""
    return "consolidation found no move: " + "; ".join(parts)


def spent_detail(per_cycle: int) -> str:
    """Why consolidation was not tried for a job blocked by fragmentation ("" when the
    policy turns it off: that is the policy's word, not the cycle's)."""
    if per_cycle <= 0:
        return ""
    return (
        f"consolidation made its {plural(per_cycle, 'move')} of this cycle already "
        "(maxConsolidationsPerCycle)"
    )


def position(
    member: str, model: str | None, allocated: int, fair: float, nominated: int = 0
) -> str:
    """`nominated`: GPUs in nominations for the member's other waiting jobs, which count
    as held when it may reclaim: without them, a member below its fair share whose
    reclaims are under way reads as if nobody acted for it."""
    what = f"{fmt(fair)} {model}" if model else f"{fmt(fair)} GPUs"
    if allocated < fair - 0.5:
        state = "below"
    elif allocated > fair + 0.5:
        state = "above"
    else:
        state = "at"
    holds = f"holds {allocated}"
    if nominated > 0:
        holds += f"; {nominated} more in nominations for its other waiting jobs"
    return f"member {mention(member)} is {state} its fair share of {what} ({holds})"


class Waiting:
    """Why a job waits, as decided during the cycle. A plain class with its own equality
    and hash: compiled, it is made without a call into Python at every wait decided
    (a named tuple's constructor is Python code), and hashed at native speed when the
    sentences are written (a dataclass's hash is Python code too)."""

    __slots__ = ("detail", "kind")

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind: Final = kind
        """incomplete | limit | unplaceable | capacity | held | reclaiming | consolidating;
        the cycle's own "kept" becomes "limit" when the sentences are written."""
        self.detail: Final = detail

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Waiting) and self.kind == other.kind and self.detail == other.detail
        )

    def __hash__(self) -> int:
        return hash((self.kind, self.detail))

    def __repr__(self) -> str:
        return f"Waiting({self.kind!r}, {self.detail!r})"


def _shape(spec: PodSpec) -> str:
    parts = [plural(spec.gpus, "GPU")] if spec.gpus else []
    if spec.cpu_milli:
        parts.append(f"{fmt(spec.cpu_milli / 1000)} CPU")
    if spec.memory_bytes:
        parts.append(f"{fmt(spec.memory_bytes / 2**30)} GiB")
    return ", ".join(parts) or "one more pod"


def _beyond_lending(
    state: ClusterState, nodes: list[int], member: str, lendable: Mapping[str, int] | None, g: int
) -> dict[str, int]:
    """Owner -> idle GPUs of `nodes` that the job may not use because their owner may lend
    it no more (`lendable`: its lendingLimit less what it lends now, as placement reads
    it): an owner's idle GPUs beyond the whole pods of `g` GPUs it may still lend. A
    member's own and unowned nodes, and pods without GPUs, are never limited."""
    if not lendable or g <= 0:
        return {}
    idle: dict[str, int] = {}
    free = state.free_gpu
    for i in nodes:
        f = free[i]
        owner = state.nodes[i].owner
        if f > 0 and owner and owner != member and owner in lendable:
            idle[owner] = idle.get(owner, 0) + f
    out: dict[str, int] = {}
    for owner, gpus in idle.items():
        may = max(0, lendable[owner]) // g * g
        if gpus > may:
            out[owner] = gpus - may
    return out


def _lending_clause(limited: Iterable[str], lendable: Mapping[str, int]) -> str:
    """'lab-b may lend only 0 more GPUs under its lendingLimit'; past three owners, the
    rest are counted ('… and 2 more owners under their lendingLimit')."""
    owners = sorted(limited)
    shown = [
        f"{mention(o)} may lend only {plural(max(0, lendable[o]), 'more GPU')}" for o in owners[:3]
    ]
    if len(owners) > 3:
        text = f"{', '.join(shown)} and {plural(len(owners) - 3, 'more owner')}"
    else:
        text = listed(tuple(shown))
    whose = "its" if len(owners) == 1 else "their"
    return f"{text} under {whose} lendingLimit"


def capacity_detail(
    state: ClusterState,
    job: PendingJob,
    model: str | None,
    lendable: Mapping[str, int] | None = None,
) -> str:
    """What the free capacity looks like to this job at the end of the cycle.
    `lendable`: owner -> GPUs it may still lend (owners at their lendingLimit hide their
    idle GPUs from others' jobs: without it, a gang kept off them by the limit would read
    as blocked by scattered GPUs)."""
    spec = job.pods[0].spec
    nodes = state.candidate_nodes(spec)
    if model is not None and spec.gpus > 0:
        nodes = [i for i in nodes if state.nodes[i].gpu_model == model]
    idle = state.idle_gpus(nodes)
    label = model or "GPUs"
    g = spec.gpus
    if job.gpus == 0:
        # It waits for CPU, memory or a pod slot: idle GPUs are not what it needs.
        what = f"the gang's {len(job.pods)} pods of {_shape(spec)}" if job.is_gang else _shape(spec)
        return f"no node it may use has room for {what}"
    if job.is_gang:
        # A PodGroup with more pods than its minMember needs room for that many to start
        # (it read as room for all its pods: 24 GPUs where 16 start it).
        required = required_pods(job)
        need = sum(p.spec.gpus for p in required)
        partial = len(required) < len(job.pods)
        pods = (
            f"{len(required)} of its {len(job.pods)} pods" if partial else f"{len(job.pods)} pods"
        )
        start = " to start" if partial else ""
        gang_pods = (
            f"{len(required)} of the gang's {len(job.pods)} pods"
            if partial
            else f"the gang's {len(job.pods)} pods"
        )
        if idle == 0:
            return f"all {label} on nodes it may use are taken; the gang needs {need}{start}"
        if idle < need:
            return f"{idle} idle {label} exist but the gang needs {need}{start} ({pods})"
        beyond = _beyond_lending(state, nodes, job.member, lendable, g)
        if beyond:
            assert lendable is not None
            clause = _lending_clause(beyond, lendable)
            usable = idle - sum(beyond.values())
            if usable < need:
                return (
                    f"{idle} idle {label} exist but the gang may use only {usable} of them "
                    f"and needs {need}{start}, as {clause}"
                )
            return (
                f"{idle} idle {label} exist but {clause}, and the rest are scattered over "
                f"nodes too small for {gang_pods} of {_shape(spec)}"
            )
        return (
            f"{idle} idle {label} exist but they are scattered over nodes too small for "
            f"{gang_pods} of {_shape(spec)}"
        )
    if idle == 0 and g > 0:
        return f"all {label} on nodes it may use are taken"
    if idle < g or (g == 0 and not nodes):
        return f"{idle} idle {label} exist on nodes it may use but it needs {g}"
    # One pod takes a node of an owner that may lend it g GPUs, or none of its nodes.
    beyond = _beyond_lending(state, nodes, job.member, lendable, g)
    closed = {o for o in beyond if lendable is not None and lendable.get(o, 0) < g}
    clause = ""
    if closed and lendable is not None:
        clause = _lending_clause(closed, lendable)
        nodes = [i for i in nodes if state.nodes[i].owner not in closed]
        usable = state.idle_gpus(nodes)
        if usable < g:
            return (
                f"{idle} idle {label} exist but it may use only {usable} of them and needs "
                f"{g}, as {clause}"
            )
    res = spec_res(spec)
    best = max((max(0, state.free_gpu[i]) for i in nodes), default=0)
    if best < g:
        if clause:
            return (
                f"{idle} idle {label} exist but no node it may use has {g} free (at most "
                f"{best}), as {clause}"
            )
        return f"{idle} idle {label} exist but no node has {g} free (at most {best})"
    also = f" ({clause})" if clause else ""
    if not any(state.fits(i, res) for i in nodes):
        return (
            f"{idle} idle {label} exist but no node with {plural(g, 'free GPU')} also has room for "
            f"{_shape(spec)}{also}"
        )
    return f"{idle} idle {label} exist but they are held for jobs that reclaim GPUs{also}"


def sentence(
    job: PendingJob,
    waiting: Waiting,
    model: str | None,
    allocated: int,
    fair: float,
    capacity: str,
    nominated: int = 0,
) -> str:
    """`capacity` is `capacity_detail` for the job (used for kind "capacity");
    `nominated` as for `position`."""
    pos = position(job.member, model, allocated, fair, nominated)
    if waiting.kind == "incomplete":
        missing = job.min_member - len(job.pods)
        return (
            f"gang {job.job_id} has {len(job.pods)} of its {job.min_member} pods "
            f"({missing} not created yet); it waits for the rest before any can start"
        )
    if waiting.kind in ("limit", "unplaceable", "held", "reclaiming", "consolidating"):
        return f"{pos}; {waiting.detail}"
    text = f"{pos}; {capacity}"
    if waiting.detail:
        text += f"; {waiting.detail}"
    return text
