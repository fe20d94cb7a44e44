"""Repairing gangs found partly bound: finish them as planned, or undo them whole.

A gang is bound all or none, but the binds of one gang are separate requests: a
scheduler killed between them (or an API server that died under them) leaves some pods
bound and the rest pending, and no process remembers it. The leader looks for such gangs
in every cycle (so also on start and on taking the lease over) and repairs each one the
same way whatever state it was left in:

- the gang's pending pods are handed to the engine as a job of their own (`remainders`):
  the pods already bound take their GPUs in the snapshot like any running pod, so the
  remainder only has to fit in what is left;
- when the engine binds every pending pod of the gang in this cycle (of a PodGroup with
  more pods than its minMember, enough of them to reach it), the gang is finished
  (`GangBindFinished` on each pod it binds);
- otherwise (it does not fit now, or pods of the gang are missing) the gang's bound pods
  are deleted (`GangBindUndone`), exactly like a gang whose bind failed half way: its
  controller recreates them and the gang is scheduled whole again. Whatever the engine
  decided for the remainder (preemptions, nominations) is dropped with it.

A gang with at least its size bound (a PodGroup's minMember: it started with that many,
as in Volcano and coscheduling) is no half-done bind either: its pending pods are a job
whose pods are placed one by one as room allows, and its running pods are never deleted
for them (`PartialGang.started`); nor when it lost one of those since, or its size was
raised since (`PartialGang.ran_whole`: its pods being deleted or finished count as bound
once, and a batch of its binds bound whole, `fairpool.io/gang-bind`, says it started).

Gangs with a bind or an undo in flight in this process are left alone until the binder
has the answers. Everything here is pure (no I/O); `scheduler.k8s.daemon` carries it out.

A gang that ran whole and lost pods is no half-done bind: a worker that failed, or was
evicted, is recreated by its controller after the gang's binds (its pending pods were all
created after the last `PodScheduled` time of its bound pods). Its pending pods are
replacements: a job of their own, placed when they fit, and its running pods are never
deleted for them (`PartialGang.replacing`). Before, a replacement that did not fit at
once had the whole running gang deleted, days of training with it, and a victim gang
whose eviction a PodDisruptionBudget refused for some pods had them deleted around the
budget once the evicted ones were recreated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from scheduler.engine.decisions import Decisions
from scheduler.engine.snapshot import PendingJob, Snapshot
from scheduler.k8s import labels as L
from scheduler.k8s.objects import PodInfo, job_id_of


@dataclass(frozen=True, slots=True)
class PartialGang:
    """A gang with some pods bound and some pending."""

    job_id: str
    size: int
    """Pods the gang needs (its `min_member`)."""
    bound: tuple[PodInfo, ...]
    """Pods bound to a node, not finished, not being deleted; by name."""
    pending: tuple[str, ...]
    """uids of the pods waiting for this scheduler, in the engine's job order."""
    replacing: bool = False
    """The gang ran whole: every pending pod was created after the last bind of its
    bound pods (replacements), so it is placed when it fits and never undone."""
    gone: int = 0
    """Its pods this scheduler bound that have finished or are being deleted."""
    batch_whole: bool | None = None
    """Whether one batch of its binds (`fairpool.io/gang-bind`) has all its pods bound,
    or since finished or being deleted; None when none of its pods carries one (bound
    by an older fairpool)."""

    @property
    def complete(self) -> bool:
        """Every pod of the gang exists (bound or pending), so it can be finished."""
        return len(self.bound) + len(self.pending) >= self.size

    @property
    def started(self) -> bool:
        """At least `size` pods are bound: the gang started (a PodGroup with more pods
        than its minMember starts with that many), and its pending pods are placed when
        room allows, never undone as a half-done bind."""
        return len(self.bound) >= self.size

    @property
    def ran_whole(self) -> bool:
        """It ran whole once: at least `size` of its pods were bound (those bound now
        and those since finished or being deleted), or one batch of its binds was bound
        whole (its size since raised). A PodGroup that started with its minMember and
        lost a pod, or whose minMember was raised since, still has its other pods,
        created with it, waiting: no half-done bind, so they are placed when room allows
        and never undo the running ones (they did, while the lost pod's termination
        grace period held its GPUs, and all of them when the minMember was raised).
        A half-done bind while an earlier undo's pods still terminate is counted whole
        until they are gone, and undone then: waiting a grace period is better than
        deleting running work whose pods a count cannot see (gone from the API)."""
        return bool(self.batch_whole) or len(self.bound) + self.gone >= self.size

    @property
    def short(self) -> int:
        """Pods still to bind for the gang to have its `size`."""
        return max(1, self.size - len(self.bound))

    def describe(self) -> str:
        return (
            f"gang {self.job_id} was found partly bound ({len(self.bound)} of {self.size} "
            f"pods bound, {len(self.pending)} pending)"
        )


@dataclass(frozen=True, slots=True)
class Repair:
    """What to do with the partial gangs of one cycle."""

    finish: tuple[PartialGang, ...] = ()
    """Gangs whose every pending pod the engine binds in this cycle."""
    undo: tuple[PartialGang, ...] = ()
    """Gangs whose bound pods are deleted so the gang is retried whole."""
    replacing: frozenset[str] = frozenset()
    """Job ids of the replacing gangs, and of the started ones (`PartialGang.started`):
    their pods are bound one by one, never undone as a gang (their running pods would be
    deleted for a replacement, or a pod beyond the minMember, that failed)."""

    def __bool__(self) -> bool:
        return bool(self.finish or self.undo)


def partial_gangs(
    pending: Iterable[PendingJob],
    pods: Mapping[str, PodInfo],
    scheduler_name: str,
    busy: Collection[str] = (),
) -> tuple[PartialGang, ...]:
    """The gangs among the `pending` jobs that also have pods bound by this scheduler,
    ordered by job id. `busy`: pod uids with a bind or a deletion in flight; a gang with
    one of those is skipped (the binder's own answers decide it)."""
    gangs = {
        job.job_id: job for job in pending if any(_is_gang_pod(pods.get(p.uid)) for p in job.pods)
    }
    if not gangs:
        return ()
    bound: dict[str, list[PodInfo]] = {}
    gone: dict[str, int] = {}
    batches: dict[str, dict[str, list[int]]] = {}  # job -> batch -> [its pods, seen]
    in_flight: set[str] = set()
    for pod in pods.values():
        if pod.gang is None:
            continue
        job_id = job_id_of(pod)
        if job_id not in gangs:
            continue
        if pod.uid in busy:
            in_flight.add(job_id)
        if not pod.assigned or pod.scheduler_name != scheduler_name:
            continue
        batch = _batch(pod)
        if batch is not None:
            seen = batches.setdefault(job_id, {}).setdefault(batch[0], [batch[1], 0])
            seen[1] += 1
        if pod.terminal or pod.deleting:
            gone[job_id] = gone.get(job_id, 0) + 1
        else:
            bound.setdefault(job_id, []).append(pod)
    found = []
    for job_id in sorted(bound):
        if job_id in in_flight:
            continue
        job = gangs[job_id]
        found.append(
            PartialGang(
                job_id=job_id,
                size=job.min_member,
                bound=tuple(sorted(bound[job_id], key=lambda p: p.name)),
                pending=tuple(p.uid for p in job.pods),
                replacing=_replacing(bound[job_id], [pods.get(p.uid) for p in job.pods]),
                gone=gone.get(job_id, 0),
                batch_whole=(
                    any(seen >= size for size, seen in batches[job_id].values())
                    if job_id in batches
                    else None
                ),
            )
        )
    return tuple(found)


def _batch(pod: PodInfo) -> tuple[str, int] | None:
    """The batch of gang binds the pod was bound in, and its number of pods; None
    without a readable `fairpool.io/gang-bind` (fairpool's own, so never refused)."""
    token, _, count = pod.annotations.get(L.GANG_BIND_ANNOTATION, "").partition("/")
    if not token or not count.isdigit() or int(count) < 1:
        return None
    return token, int(count)


def _replacing(bound: list[PodInfo], pending: list[PodInfo | None]) -> bool:
    """Every pending pod was created after the last bind of the bound ones (both times
    the API server's, to the second; the same second counts as before)."""
    if not bound or any(p.scheduled_at <= 0 for p in bound):
        return False  # bind times unknown: repaired as a half-done bind
    last_bind = max(p.scheduled_at for p in bound)
    return all(p is not None and p.created_at > last_bind for p in pending)


def _is_gang_pod(pod: PodInfo | None) -> bool:
    return pod is not None and pod.gang is not None


def remainders(snapshot: Snapshot, gangs: Iterable[PartialGang]) -> Snapshot:
    """The snapshot the engine decides on: each complete partial gang's pending pods,
    and each replacing gang's, as a job of their own, all of which must be placed
    together; incomplete ones are left out (they are undone whatever the engine would
    say)."""
    by_job = {g.job_id: g for g in gangs}
    if not by_job:
        return snapshot
    jobs: list[PendingJob] = []
    for job in snapshot.pending:
        gang = by_job.get(job.job_id)
        if gang is None:
            jobs.append(job)
        elif gang.started:
            jobs.append(dataclasses.replace(job, min_member=1))
        elif gang.replacing:
            jobs.append(dataclasses.replace(job, min_member=len(job.pods)))
        elif gang.ran_whole:
            jobs.append(dataclasses.replace(job, min_member=1))
        elif gang.complete:
            # Its pods beyond the gang's size (a PodGroup's minMember) may wait.
            jobs.append(dataclasses.replace(job, min_member=min(len(job.pods), gang.short)))
    return dataclasses.replace(snapshot, pending=tuple(jobs))


def plan(gangs: Iterable[PartialGang], decisions: Decisions) -> Repair:
    """Finish the gangs the engine binds whole in this cycle, undo the others, leave the
    replacing ones alone (their pods bind or wait like any job's)."""
    bound = {b.pod_uid for b in decisions.binds}
    finish: list[PartialGang] = []
    undo: list[PartialGang] = []
    replacing: set[str] = set()
    for gang in gangs:
        if gang.replacing or gang.started or gang.ran_whole:
            replacing.add(gang.job_id)
            continue  # its pending pods bind like any job's, or wait; nothing to undo
        if gang.complete and sum(uid in bound for uid in gang.pending) >= gang.short:
            finish.append(gang)
        else:
            undo.append(gang)
    return Repair(tuple(finish), tuple(undo), frozenset(replacing))


def without_undone(decisions: Decisions, repair: Repair) -> Decisions:
    """The decisions to carry out: nothing for the remainder of a gang being undone
    (its pods wait for the gang to be whole again, so they bind nothing, reclaim
    nothing and hold nothing)."""
    dropped = {g.job_id for g in repair.undo}
    if not dropped:
        return decisions
    return dataclasses.replace(
        decisions,
        binds=tuple(b for b in decisions.binds if b.job_id not in dropped),
        preemptions=tuple(p for p in decisions.preemptions if p.for_job not in dropped),
        nominations=tuple(n for n in decisions.nominations if n.job_id not in dropped),
        explanations={
            **decisions.explanations,
            **{
                g.job_id: f"{g.describe()}; its bound pods are deleted so that it is "
                "scheduled whole again"
                for g in repair.undo
            },
        },
    )
