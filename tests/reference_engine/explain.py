"""One human sentence per waiting job, saying why it waits.

Sentences start with the member's position for the job's GPU model ("member lab-b is
below its fair share of 16 NVIDIA-H100 (holds 8)") and go on with what blocks the job,
measured on the capacity left at the end of the cycle.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.engine.mentions import job_of, mention
from scheduler.engine.snapshot import PendingJob, PodSpec
from tests.reference_engine.placement import ClusterState, spec_res

_EPS = 1e-9


def fmt(x: float) -> str:
    """16 -> '16', 7.5 -> '7.5', 2.3333 -> '2.3'."""
    r = round(x, 1)
    return str(int(r)) if r == int(r) else f"{r:.1f}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def whole_minutes(seconds: float) -> str:
    """'5 min', '11 h 48 min': a wait rounded up to the minute."""
    minutes = max(1, math.ceil(seconds / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if rest == 0 else f"{hours} h {rest} min"


def listed(names: tuple[str, ...], most: int = 3) -> str:
    """('a',) -> 'a'; ('a', 'b', 'c') -> 'a, b and c'; five names -> 'a, b, c and 2 more'."""
    if len(names) > most:
        return f"{', '.join(names[:most])} and {len(names) - most} more"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"


def at_limit_detail(held: Mapping[str, tuple[str, int]], model: str, limit: int) -> str:
    """The end of a refusal to reclaim, when borrowed GPUs the job could use belong to jobs
    at the reclaim limit (`held`: job id -> (member, GPUs there))."""
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


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a job waits, as decided during the cycle."""

    kind: str
    """incomplete | limit | unplaceable | capacity | held | reclaiming"""
    detail: str = ""


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
    """Owner -> idle GPUs of `nodes` beyond the whole pods of `g` GPUs it may still lend
    the member (its own and unowned nodes, and pods without GPUs, are never limited)."""
    out: dict[str, int] = {}
    if not lendable or g <= 0:
        return out
    for owner in sorted({state.nodes[i].owner or "" for i in nodes}):
        if not owner or owner == member or owner not in lendable:
            continue
        idle = sum(max(0, state.free_gpu[i]) for i in nodes if state.nodes[i].owner == owner)
        may = max(0, lendable[owner]) // g * g
        if idle > may:
            out[owner] = idle - may
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
    """What the free capacity looks like to this job at the end of the cycle
    (`lendable`: owner -> GPUs it may still lend)."""
    spec = job.pods[0].spec
    nodes = state.candidate_nodes(spec)
    if model is not None and spec.gpus > 0:
        nodes = [i for i in nodes if state.nodes[i].gpu_model == model]
    idle = sum(max(0, state.free_gpu[i]) for i in nodes)
    label = model or "GPUs"
    g = spec.gpus
    if job.gpus == 0:
        # It waits for CPU, memory or a pod slot: idle GPUs are not what it needs.
        what = f"the gang's {len(job.pods)} pods of {_shape(spec)}" if job.is_gang else _shape(spec)
        return f"no node it may use has room for {what}"
    beyond = _beyond_lending(state, nodes, job.member, lendable, g)
    if job.is_gang:
        # A PodGroup with more pods than its minMember needs room for that many to start
        # (it read as room for all its pods: 24 GPUs where 16 start it).
        required = job.pods[: job.min_member] if 0 < job.min_member < len(job.pods) else job.pods
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
        if beyond and lendable is not None:
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
    closed = {o for o in beyond if lendable is not None and lendable.get(o, 0) < g}
    clause = ""
    if closed and lendable is not None:
        clause = _lending_clause(closed, lendable)
        nodes = [i for i in nodes if state.nodes[i].owner not in closed]
        usable = sum(max(0, state.free_gpu[i]) for i in nodes)
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
    if waiting.kind in ("limit", "unplaceable", "held", "reclaiming"):
        return f"{pos}; {waiting.detail}"
    text = f"{pos}; {capacity}"
    if waiting.detail:
        text += f"; {waiting.detail}"
    return text
