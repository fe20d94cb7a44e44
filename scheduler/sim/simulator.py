"""Discrete-event replay of a trace on a simulated cluster, driven by the real engine.

Events are job arrivals, job completions, the ends of preemption grace periods, and the
instants reclaimable pods pass the policy's min runtime (they may then be preempted; the
daemon's idle cycle would see that within a second). All
events at one instant are applied first, then the engine runs ONE cycle on the
resulting snapshot and its decisions are carried out: binds start jobs (a gang starts
when all its pods are bound, which the engine does in one cycle), preemptions mark the
victim's pods terminating for the grace period, nominations are handed back to the
engine through `PendingJob.nominated_nodes`.

With `batch_s` > 0 the cycle waits that long after the first change for more changes,
as the daemon does after a watch event (`fairpool run --batch-seconds`): every event up
to `first + batch_s` is applied at its own time (a job's usage, its lost work and the
timeline keep its exact times), then ONE cycle runs at `first + batch_s`. Fewer cycles
on a busy trace; each decision comes up to `batch_s` later. 0 (the default): a cycle at
every instant something changed.

A preempted job goes back to pending with fresh pods. It restarts from zero unless it
is checkpointable (the trace's `checkpointable`, else its member's), in which case it
resumes with the work it had left when the preemption was decided (its grace period is
spent checkpointing). Lost to reclaim (docs/glossary.md): the GPU-seconds its pods ran
since they last started, grace period included, for a job that restarts from zero;
nothing for a checkpointable one. A job that finishes during its grace period completes.

Livelock guard: the engine is pure, so a decision it makes once it makes again on the
same state. Two caps keep a defective or flip-flopping policy from running forever:
at most `max_cycles_per_instant` cycles at one instant (only grace periods of 0 s can
chain cycles at one instant), and at most `max_preemptions_per_job` preemptions of one
job; preemptions beyond a cap are not carried out and are counted in
`SimulationResult.guard_trips` (reported in summary.json), never silently. The per-job
cap never applies to a reclaim for a member within its entitlement (its held GPUs of
that model plus the reclaiming job's fit its entitlement): an entitlement is what a
member can always get back, so no guard may deny it; `owed_overrides` counts the
preemptions carried out past the cap for that reason.
"""

from __future__ import annotations

import gc
import heapq
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from time import perf_counter

from policies.model import Policy
from scheduler.engine.decisions import Decisions, MemberShare, PreemptionCause
from scheduler.engine.snapshot import Node, RunningPod, Snapshot
from scheduler.engine.usage import advance_usage_history, lost_gpu_seconds
from scheduler.sim.cluster import SimCluster, SimulationInvariantError
from scheduler.sim.waiting import (
    KeptBook,
    Limits,
    State,
    WaitMeter,
    owed_allowance_s,
    owed_blocker,
)
from scheduler.traces.model import Trace, TraceJob

Engine = Callable[[Snapshot, Policy], Decisions]
Progress = Callable[[float, int], None]
"""Called with (simulated time, jobs finished) every few hundred cycles."""

HOUR_S = 3600.0
DAEMON_CYCLE_S = 1.0
"""The daemon's longest pause between cycles while pods wait (`DaemonConfig.cycle_seconds`'s
default): where a cycle left work for the next with nothing else changed, the simulator
runs that next cycle as late as the daemon would."""
MAX_BATCH_S = 3600.0
"""The longest batch the commands and the API accept: longer ones would say more about
the batching than about the policy."""

TimelineValues = tuple[int, int, float, int, int, int, int, int]
"""The `metrics.TIMELINE_FIELDS` of one (member, model) at one instant."""
TimelineRow = tuple[float, str, str, int, int, float, int, int, int, int, int]
"""(time, member, model, *TimelineValues)."""


class JobState(Enum):
    WAITING = "waiting"  # not yet submitted
    PENDING = "pending"
    RUNNING = "running"
    TERMINATING = "terminating"
    DONE = "done"


class EventKind(IntEnum):
    # Value = order among events at the same instant: capacity is freed before new
    # work arrives, so one cycle sees both. An int, so that the event queue holds and
    # compares the members themselves: compiled, `EventKind(value)` and `.value` would
    # each be a call into Python at every event.
    COMPLETION = 0
    GRACE_END = 1
    ARRIVAL = 2
    WAKE = 3
    """Time alone changes what the engine may do: a running job passes the min runtime
    and may be preempted or moved, a waiting job has waited `reclaimOvertakenAfterSeconds`,
    or a waiting job at `maxReclaimsPerJob` reaches the end of its
    `reclaimLimitWindowSeconds` and may borrow anywhere. The daemon would notice within
    its 1 s idle cycle, so the simulator runs a cycle then too."""


@dataclass(slots=True)
class JobRecord:
    """Everything the simulation learns about one job."""

    job: TraceJob
    remaining_s: float
    state: JobState = JobState.WAITING
    attempt: int = 0
    token: int = 0
    """Bumped on every state change; events carrying an older token are stale."""
    first_start: float | None = None
    start: float | None = None
    end: float | None = None
    preempted_at: float | None = None
    preemptions: int = 0
    consolidations: int = 0
    """Preemptions of the job that moved it for consolidation (counted in
    `preemptions` too)."""
    preemption_cause: PreemptionCause | None = None
    """While it is preempted: the engine's cause of it, which its lost work counts to."""
    lost_gpu_s: float = 0.0
    pods: tuple[str, ...] = ()
    node_owners: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    used_on_others_hardware_gpu_s: float = 0.0
    """GPU-seconds of its pods on nodes another member owns (grace periods included)."""


@dataclass(init=False, unsafe_hash=True, slots=True)
class UsageRow:
    """GPU-seconds of one pod within one hour (the metering ledger's grain). Its own
    `__init__`, not the dataclass one: compiled (`make engine`), the replay makes one per
    pod and hour, and the generated one runs interpreted (see
    `scheduler.engine.decisions.MemberShare`). Not frozen for the same reason (nothing
    changes one once made)."""

    hour: int
    """Hour index since trace time 0's hour (0 = the hour holding trace time 0)."""
    pod_uid: str
    namespace: str
    job_id: str
    member: str
    owner: str
    gpu_model: str
    node: str
    gpu_seconds: float

    def __init__(
        self,
        hour: int,
        pod_uid: str,
        namespace: str,
        job_id: str,
        member: str,
        owner: str,
        gpu_model: str,
        node: str,
        gpu_seconds: float,
    ) -> None:
        self.hour = hour
        self.pod_uid = pod_uid
        self.namespace = namespace
        self.job_id = job_id
        self.member = member
        self.owner = owner
        self.gpu_model = gpu_model
        self.node = node
        self.gpu_seconds = gpu_seconds


@dataclass(init=False, unsafe_hash=True, slots=True)
class PodRun:
    """One pod's life on a node, from bind to gone (grace period included). Its own
    `__init__`, as `UsageRow`'s: one per pod started."""

    pod_uid: str
    job_id: str
    member: str
    node: str
    gpus: int
    start: float
    end: float

    def __init__(
        self, pod_uid: str, job_id: str, member: str, node: str, gpus: int, start: float, end: float
    ) -> None:
        self.pod_uid = pod_uid
        self.job_id = job_id
        self.member = member
        self.node = node
        self.gpus = gpus
        self.start = start
        self.end = end


@dataclass(frozen=True, slots=True)
class VictimRecord:
    """A preempted job's member, as the engine saw it when it chose the victim."""

    time: float
    job_id: str
    member: str
    gpu_model: str
    allocated: int
    entitlement: int
    cause: PreemptionCause
    """The engine's cause of the preemption (`_job_causes`)."""


@dataclass(frozen=True, slots=True)
class LostRow:
    hour: int
    member: str
    gpu_model: str
    gpu_seconds: float
    cause: PreemptionCause
    """The engine's cause of the preemption that threw the work away."""


@dataclass
class SimulationResult:
    policy: Policy
    nodes: tuple[Node, ...]
    jobs: dict[str, JobRecord]
    timeline: list[TimelineRow]
    """(time, member, model, *TIMELINE_FIELDS), a row only when a value changed;
    piecewise constant until the next row of the same (member, model)."""
    usage: list[UsageRow]
    lost: list[LostRow]
    pod_runs: list[PodRun]
    victims: list[VictimRecord]
    end_time: float
    start_offset_s: float
    """Trace time 0 minus the start of its UTC hour (hour buckets are UTC hours)."""
    events: int = 0
    cycles: int = 0
    engine_s: float = 0.0
    """Wall seconds spent in the engine, of `replay_s` (the rest is the simulator's own
    bookkeeping); diagnostics for the benchmarks, in no output file."""
    replay_s: float = 0.0
    guard_trips: int = 0
    owed_overrides: int = 0
    consolidation_preemptions: int = 0
    """Jobs preempted to consolidate (a gang counts once), part of all preemptions."""
    lost_by_cause_gpu_s: Mapping[tuple[str, PreemptionCause], float] = field(default_factory=dict)
    """(member whose work it was, the engine's `PREEMPTION_CAUSES` entry) -> GPU-seconds
    of work preemption threw away."""
    max_preemptions_per_job: int = 0
    batch_s: float = 0.0
    """How long a cycle waited after the first change for more (`Simulator`)."""
    members: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    capacity: Mapping[tuple[str, str], int] = field(default_factory=dict)
    entitlement: Mapping[tuple[str, str], int] = field(default_factory=dict)
    idle_while_waiting_gpu_s: Mapping[str, float] = field(default_factory=dict)
    """Cause -> idle GPU-seconds while some job was pending (`scheduler.sim.waiting`)."""
    fragmentation_claimable_gpu_s: float = 0.0
    """Of the fragmentation's, the GPU-seconds `waiting.FRAGMENTATION_CLAIMABLE`."""
    capacity_gpu_s_while_pending: float = 0.0
    entitlement_episodes: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(member, model, start, end): stretches a member waited for owed GPUs."""
    owed_allowance_s: float = 0.0
    """Grace period + minimum runtime + 60 s: what a reclaim takes at most."""
    owed_past_allowance: list[tuple[str, str, float, float, str]] = field(default_factory=list)
    """(member, model, start, end, cause) of the episodes longer than the allowance
    (`scheduler.sim.waiting.OWED_CAUSES`)."""

    def unfinished(self) -> list[JobRecord]:
        return [r for r in self.jobs.values() if r.state is not JobState.DONE]


_CAUSE_FIRST: tuple[PreemptionCause, ...] = ("consolidation", "entitlement", "fair_share", "queue")
"""Of the causes of one job's preemptions in a cycle, the one its lost work counts to: a
move first (the job was moved), then an owner's reclaim."""


def _job_causes(decisions: Decisions) -> dict[str, PreemptionCause]:
    """Each preempted job's cause in the cycle (`_CAUSE_FIRST` when it has several)."""
    found: dict[str, set[PreemptionCause]] = {}
    for p in decisions.preemptions:
        found.setdefault(p.job_id, set()).add(p.cause)
    return {job: next(c for c in _CAUSE_FIRST if c in cs) for job, cs in found.items()}


def default_engine() -> Engine:
    from scheduler.engine import schedule

    return schedule


REPLAY_GC_THRESHOLDS = (50_000, 20, 100)


@contextmanager
def fewer_collections() -> Iterator[None]:
    """A replay allocates and frees millions of small objects, almost none of them in
    reference cycles, while what it keeps (usage rows, pod runs, the trace) only grows.
    With the default thresholds the collector walks all of that again and again, about
    6 % of a month's replay; the objects alive at the start (trace, cluster) are frozen
    out of its walks and collections come less often. Restored on the way out (a
    process that froze objects of its own keeps them frozen)."""
    previous = gc.get_threshold()
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    gc.set_threshold(*REPLAY_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if froze:
            gc.unfreeze()


class Simulator:
    def __init__(
        self,
        nodes: tuple[Node, ...],
        policy: Policy,
        trace: Trace,
        engine: Engine | None = None,
        *,
        start_offset_s: float = 0.0,
        max_cycles_per_instant: int = 50,
        max_preemptions_per_job: int = 25,
        progress: Progress | None = None,
        batch_s: float = 0.0,
    ) -> None:
        if not batch_s >= 0.0 or math.isinf(batch_s):
            raise ValueError(f"batch_s: expected a finite number of seconds >= 0, got {batch_s}")
        self.policy = policy
        self.batch_s = batch_s
        self.engine = engine or default_engine()
        self.cluster = SimCluster(nodes, policy)
        self.trace = trace
        self.start_offset_s = start_offset_s
        self.max_cycles_per_instant = max_cycles_per_instant
        self.max_preemptions_per_job = max_preemptions_per_job
        self.progress = progress
        self.jobs = {j.job_id: JobRecord(job=j, remaining_s=j.duration_s) for j in trace.jobs}
        self._events: list[tuple[float, EventKind, int, str, int]] = []
        self._seq = 0
        self._node_owner = {n.name: n.owner or "" for n in nodes}
        self._node_model = {n.name: n.gpu_model or "" for n in nodes}
        sharing = policy.sharing
        self._min_runtime = 0 if sharing.preempt_below_min_runtime else sharing.min_runtime_seconds
        self._reclaim_window = sharing.reclaim_limit_window_seconds
        self._overtaken_after = sharing.reclaim_overtaken_after_seconds
        half_life = policy.sharing.usage_half_life_hours
        self._half_life_s = half_life * HOUR_S if half_life else None
        self._history: dict[str, float] = {}
        cap = self.cluster.capacity
        self._members = cap.members
        self._member_set = frozenset(cap.members)
        self._models = cap.models
        self._largest_model = max(
            cap.models,
            key=lambda m: sum(g for (_, mm), g in cap.by_owner_model.items() if mm == m),
            default="",
        )
        # Incremental counters, updated on bind/free, so a cycle costs O(changes).
        self._allocated: dict[tuple[str, str], int] = {}
        self._lent: dict[tuple[str, str], int] = {}
        self._elsewhere: dict[tuple[str, str], int] = {}
        """GPUs per (member, model) on nodes another member owns."""
        self._member_alloc: dict[str, int] = {}
        self._last_row: dict[tuple[str, str], TimelineValues] = {}
        self._timeline_keys = [
            ((member, model), member, model, cap.entitlement.get((member, model), 0))
            for member in cap.members
            for model in cap.models
        ]
        """The timeline's keys in row order, each with its member's entitlement."""
        self._moved: set[tuple[str, str]] = set()
        """Keys whose allocated, lent or elsewhere GPUs moved since the last row."""
        self._rows_pending: dict[tuple[str, str], int] | None = None
        """The pending GPUs the last rows were worked out from between cycles; None when
        the last rows came from a cycle's shares (or none were made yet)."""
        self.timeline: list[TimelineRow] = []
        self.usage: list[UsageRow] = []
        self.lost: list[LostRow] = []
        self.pod_runs: list[PodRun] = []
        self.victims: list[VictimRecord] = []
        self.events_done = 0
        self.cycles = 0
        self.engine_s = 0.0
        self.guard_trips = 0
        self.owed_overrides = 0
        self.consolidation_preemptions = 0
        self.lost_by_cause_gpu_s: dict[tuple[str, PreemptionCause], float] = {}
        self._finished = 0
        self._now = 0.0
        self._end = 0.0
        self._nominated: set[str] = set()
        self._bound_this_cycle: dict[tuple[str, str], int] = {}
        self._foreign: dict[tuple[str, str], set[str]] = {}
        """(owner, model) -> uids of other members' pods on the owner's nodes of that
        model: what `_owed_blocker` looks at."""
        self._reclaim_limit = sharing.max_reclaims_per_job
        # The meter's tables as dicts: compiled, it reads them natively (a `Mapping`'s
        # `get` is a call into Python).
        entitlement = dict(cap.entitlement)
        self._kept_book = KeptBook(self._node_owner, self._node_model, entitlement)
        """What a waiting member could never get back (`waiting.Kept`), moved as pods
        are bound, marked terminating and freed."""
        self.meter = WaitMeter(
            nodes,
            entitlement,
            Limits.of(policy),
            allowance_s=owed_allowance_s(policy),
            blocker=self._owed_blocker,
        )

    # -- events ---------------------------------------------------------------------
    def _push(self, time: float, kind: EventKind, job_id: str, token: int) -> None:
        self._seq += 1
        heapq.heappush(self._events, (time, kind, self._seq, job_id, token))

    def run(self) -> SimulationResult:
        began = perf_counter()
        with fewer_collections():
            result = self._run()
        result.replay_s = perf_counter() - began
        return result

    def _run(self) -> SimulationResult:
        for job in self.trace.jobs:
            self._push(job.submit_time, EventKind.ARRIVAL, job.job_id, 0)
        self._record_timeline({})
        cycles_at_instant = 0
        instants = 0
        last_instant = -math.inf
        events = self._events
        while events:
            now = events[0][0] + self.batch_s
            changed, last_change = False, now
            while events and events[0][0] <= now:
                at = events[0][0]
                self._advance_history(at)
                changed_at = False
                while events and events[0][0] == at:
                    _, kind, _, job_id, token = heapq.heappop(events)
                    self.events_done += 1
                    changed_at |= self._handle(kind, self.jobs[job_id], token, at)
                if changed_at:
                    if not changed:
                        now = at + self.batch_s  # the batch opens at its first change
                    changed, last_change = True, at
                    if at < now:
                        # Batched: what the event freed or queued shows until the cycle.
                        self._record_timeline({})
            if not changed:
                continue
            if last_change < now and not self.cluster.pending:
                self._end = last_change  # batched, and nothing waits: no cycle to run
                continue
            self._advance_history(now)
            self._end = now
            cycles_at_instant = cycles_at_instant + 1 if now == last_instant else 1
            last_instant = now
            if self.cluster.pending:
                self._cycle(now, allow_preemption=cycles_at_instant <= self.max_cycles_per_instant)
            else:
                self._record_timeline({})
            instants += 1
            if self.progress is not None and instants % 256 == 0:
                self.progress(now, self._finished)
        if self.progress is not None:
            self.progress(self._end, self._finished)
        self.meter.finish(self._end)
        return SimulationResult(
            policy=self.policy,
            nodes=self.cluster.nodes,
            jobs=self.jobs,
            timeline=self.timeline,
            usage=self.usage,
            lost=self.lost,
            pod_runs=self.pod_runs,
            victims=self.victims,
            end_time=self._end,
            start_offset_s=self.start_offset_s,
            events=self.events_done,
            cycles=self.cycles,
            engine_s=self.engine_s,
            guard_trips=self.guard_trips,
            owed_overrides=self.owed_overrides,
            consolidation_preemptions=self.consolidation_preemptions,
            lost_by_cause_gpu_s=dict(self.lost_by_cause_gpu_s),
            max_preemptions_per_job=self.max_preemptions_per_job,
            batch_s=self.batch_s,
            members=self._members,
            models=self._models,
            capacity=dict(self.cluster.capacity.by_owner_model),
            entitlement=dict(self.cluster.capacity.entitlement),
            idle_while_waiting_gpu_s=dict(self.meter.idle_gpu_s),
            fragmentation_claimable_gpu_s=self.meter.fragmentation_claimable_gpu_s,
            capacity_gpu_s_while_pending=self.meter.capacity_gpu_s_while_pending,
            entitlement_episodes=self.meter.entitlement_episodes,
            owed_allowance_s=self.meter.allowance_s,
            owed_past_allowance=self.meter.owed_past_allowance,
        )

    def _handle(self, kind: EventKind, record: JobRecord, token: int, now: float) -> bool:
        """Apply one event; False when it changed nothing (stale), so needs no cycle."""
        if token != record.token:
            return False  # stale: the job changed state since this event was scheduled
        if kind is EventKind.WAKE:
            return record.state is JobState.RUNNING or record.state is JobState.PENDING
        if kind is EventKind.ARRIVAL:
            record.state = JobState.PENDING
            self.cluster.enqueue(record.job, 0, record.job.submit_time, now)
            after = self._overtaken_after
            if after is not None and record.job.gpus > 1:
                # The engine takes back what later jobs overtook once the job has waited
                # this long: a cycle then, as the daemon's (every second while pods wait)
                # would run. Without it the job waited for the next change of any kind.
                self._push(now + after, EventKind.WAKE, record.job.job_id, record.token)
        elif kind is EventKind.COMPLETION:
            self._free_pods(record, now)
            record.state = JobState.DONE
            record.end = now
            record.remaining_s = 0.0
            record.token += 1
            self._finished += 1
        else:  # grace period over: the victim's pods are gone
            self._free_pods(record, now)
            assert record.start is not None and record.preempted_at is not None
            checkpointable = record.job.checkpointable
            if checkpointable is None:
                checkpointable = self.policy.member(record.job.org).checkpointable
            cause = record.preemption_cause
            assert cause is not None
            if checkpointable:
                record.remaining_s -= record.preempted_at - record.start
            else:
                record.remaining_s = record.job.duration_s
                self._count_lost(record, record.start, now, cause)
            lost = lost_gpu_seconds(record.job.gpus, record.start, now, checkpointable)
            record.lost_gpu_s += lost
            key = (record.job.org, cause)
            self.lost_by_cause_gpu_s[key] = self.lost_by_cause_gpu_s.get(key, 0.0) + lost
            reclaimed_at = record.preempted_at
            record.state = JobState.PENDING
            record.attempt += 1
            record.token += 1
            record.start = None
            record.preempted_at = None
            self.cluster.enqueue(
                record.job, record.attempt, record.job.submit_time, now, reclaimed_at
            )
            # At the window's end a job kept off wanted nodes (at the reclaim limit, or
            # restarting from zero) may borrow anywhere if bigger than its entitlement.
            window_end = reclaimed_at + self._reclaim_window
            limit = self._reclaim_limit
            kept = not checkpointable or (limit is not None and record.attempt >= limit)
            if kept and window_end > now:
                self._push(window_end, EventKind.WAKE, record.job.job_id, record.token)
        return True

    # -- one engine cycle -----------------------------------------------------------
    def _cycle(self, now: float, allow_preemption: bool) -> None:
        self.cycles += 1
        snapshot = self.cluster.snapshot(now, self._history)
        began = perf_counter()
        decisions = self.engine(snapshot, self.policy)
        self.engine_s += perf_counter() - began
        self._bound_this_cycle = {}
        causes = _job_causes(decisions)
        if causes:
            self._log_victims(causes)
        self._apply_binds(decisions, now)
        self._apply_preemptions(decisions, causes, now, allow_preemption)
        renewed = set()
        for nomination in decisions.nominations:
            self.cluster.nominate(nomination.job_id, nomination.nodes)
            renewed.add(nomination.job_id)
        self._drop_stale_nominations(renewed)
        self.cluster.mark_kept_off_wanted(decisions.kept_off_wanted)
        spent_for = decisions.moves_spent_for
        if spent_for is not None:
            # The daemon's next cycle, within `cycle_seconds`, makes the next moves: the
            # job waited here for the first moves' grace period, or any other change.
            record = self.jobs[spent_for]
            self._push(now + DAEMON_CYCLE_S, EventKind.WAKE, spent_for, record.token)
        self._record_timeline(self._shares_by_key(decisions.shares))

    def _apply_binds(self, decisions: Decisions, now: float) -> None:
        by_job: dict[str, dict[str, str]] = {}
        for bind in decisions.binds:
            by_job.setdefault(bind.job_id, {})[bind.pod_uid] = bind.node
        for job_id, placement in by_job.items():
            pending = self.cluster.pending.get(job_id)
            if pending is None:
                raise SimulationInvariantError(f"engine bound job {job_id}, which is not pending")
            if len(placement) != len(pending.pods) or any(
                p.uid not in placement for p in pending.pods
            ):
                raise SimulationInvariantError(
                    f"engine bound {len(placement)} of the {len(pending.pods)} pods of "
                    f"job {job_id}: gangs start whole"
                )
            self.cluster.dequeue(job_id)
            record = self.jobs[job_id]
            owners: list[str] = []
            nodes: list[str] = []
            for pod in pending.pods:
                running = self.cluster.bind(pod, pending, placement[pod.uid], now)
                self._count_bind(running, +1)
                self._kept_book.change(running, 1)
                owners.append(self._node_owner[running.node])
                nodes.append(running.node)
            record.state = JobState.RUNNING
            record.pods = tuple(p.uid for p in pending.pods)
            record.nodes = tuple(nodes)
            record.node_owners = tuple(sorted(set(owners)))
            record.start = now
            if record.first_start is None:
                record.first_start = now
            record.token += 1
            self._push(now + record.remaining_s, EventKind.COMPLETION, job_id, record.token)
            if self._min_runtime > 0:
                # The job becomes movable or reclaimable then, whether or not it was
                # reclaimable when bound (its member's share moves, and consolidation
                # moves work within entitlement): a cycle then, as the daemon's would run.
                self._push(now + self._min_runtime, EventKind.WAKE, job_id, record.token)

    def _apply_preemptions(
        self,
        decisions: Decisions,
        causes: Mapping[str, PreemptionCause],
        now: float,
        allow: bool,
    ) -> None:
        grace_of: dict[str, int] = {}
        reclaimers: dict[str, set[str]] = {}
        for preemption in decisions.preemptions:
            grace = max(grace_of.get(preemption.job_id, 0), preemption.grace_period_seconds)
            grace_of[preemption.job_id] = grace
            reclaimers.setdefault(preemption.job_id, set()).add(preemption.reclaimer)
        owed = self._entitled_reclaimers(decisions) if decisions.preemptions else set()
        for job_id, grace in grace_of.items():
            record = self.jobs.get(job_id)
            if record is None or record.state is not JobState.RUNNING:
                continue  # already terminating: the engine sees it and waits
            capped = record.preemptions >= self.max_preemptions_per_job
            if capped and reclaimers[job_id] & owed:
                self.owed_overrides += 1
            elif not allow or capped:
                self.guard_trips += 1
                continue
            # Gangs are preempted whole: a gang missing a pod cannot go on.
            for uid in record.pods:
                self._kept_book.change(self.cluster.running[uid], -1)
                self.cluster.mark_terminating(uid)
            record.state = JobState.TERMINATING
            record.preempted_at = now
            record.preemptions += 1
            cause = causes[job_id]
            if cause == "consolidation":
                record.consolidations += 1
                self.consolidation_preemptions += 1
            record.preemption_cause = cause
            # The completion event stays valid: a job that finishes within its grace
            # period completes. The token is kept so both events stay live.
            self._push(now + grace, EventKind.GRACE_END, job_id, record.token)

    def _entitled_reclaimers(self, decisions: Decisions) -> set[str]:
        """Reclaimers whose job keeps them within their entitlement of a model the
        victim holds (held = running, not terminating, GPUs at the snapshot). The guard's
        own test, not the engine's `cause`: the guard checks the engine, so it must not
        take the engine's word for when the reclaim limit may be passed."""
        held: dict[tuple[str, str], int] = {}
        for pod in self.cluster.running.values():
            if not pod.terminating:
                key = (pod.member or "", self._node_model[pod.node])
                held[key] = held.get(key, 0) + pod.spec.gpus
        out: set[str] = set()
        for p in decisions.preemptions:
            pending = self.cluster.pending.get(p.for_job)
            victim = self.jobs.get(p.job_id)
            if pending is None or victim is None or p.reclaimer in out:
                continue
            for model in {self._node_model[n] for n in victim.nodes}:
                key = (p.reclaimer, model)
                if held.get(key, 0) + pending.gpus <= self.cluster.capacity.entitlement.get(key, 0):
                    out.add(p.reclaimer)
        return out

    def _log_victims(self, causes: Mapping[str, PreemptionCause]) -> None:
        """Record each victim's standing at the snapshot (running, non-terminating GPUs
        per model vs entitlement): tests check no one within entitlement is preempted."""
        held: dict[tuple[str, str], int] = {}
        for pod in self.cluster.running.values():
            if not pod.terminating:
                key = (pod.member or "", self._node_model[pod.node])
                held[key] = held.get(key, 0) + pod.spec.gpus
        for job_id in sorted(causes):
            record = self.jobs.get(job_id)
            if record is None or record.state is not JobState.RUNNING:
                continue
            for model in sorted({self._node_model[n] for n in record.nodes}):
                key = (record.job.org, model)
                entitled = self.cluster.capacity.entitlement.get(key, 0)
                self.victims.append(
                    VictimRecord(
                        self._now, job_id, key[0], model, held.get(key, 0), entitled, causes[job_id]
                    )
                )

    def _drop_stale_nominations(self, renewed: set[str]) -> None:
        """A nomination holds GPUs while the victims terminate. Once none of its nodes
        carries a terminating pod and the job still did not start (and was not
        nominated anew), the hold is stale: drop it, as the daemon clears
        nominatedNodeName, so it does not keep reserving capacity."""
        self._nominated = {j for j in self._nominated | renewed if j in self.cluster.pending}
        stale = self._nominated - renewed
        if not stale:
            return
        terminating = {p.node for p in self.cluster.running.values() if p.terminating}
        for job_id in sorted(stale):
            job = self.cluster.pending[job_id]
            if not terminating.intersection(job.nominated_nodes.values()):
                self.cluster.nominate(job_id, {})
                self._nominated.discard(job_id)

    # -- bookkeeping ----------------------------------------------------------------
    def _count_bind(self, pod: RunningPod, sign: int) -> None:
        member = pod.member or ""
        owner = self._node_owner[pod.node]
        model = self._node_model[pod.node]
        gpus = sign * pod.spec.gpus
        key = (member, model)
        self._allocated[key] = self._allocated.get(key, 0) + gpus
        self._member_alloc[member] = self._member_alloc.get(member, 0) + gpus
        self._moved.add(key)
        if owner != member and owner in self._member_set:
            self._moved.add((owner, model))
            self._lent[(owner, model)] = self._lent.get((owner, model), 0) + gpus
            self._elsewhere[key] = self._elsewhere.get(key, 0) + gpus
            foreign = self._foreign.setdefault((owner, model), set())
            if sign > 0:
                foreign.add(pod.uid)
            else:
                foreign.discard(pod.uid)
        if sign > 0:
            self._bound_this_cycle[key] = self._bound_this_cycle.get(key, 0) + pod.spec.gpus

    def _free_pods(self, record: JobRecord, now: float) -> None:
        for uid in record.pods:
            pod = self.cluster.free(uid)
            self._count_bind(pod, -1)
            if not pod.terminating:
                self._kept_book.change(pod, -1)
            owner = self._node_owner[pod.node]
            if owner != record.job.org and owner in self._member_set:
                record.used_on_others_hardware_gpu_s += pod.spec.gpus * (now - pod.started_at)
            self._count_usage(pod, record.job.org, pod.started_at, now)
            self.pod_runs.append(
                PodRun(
                    uid, pod.job_id, record.job.org, pod.node, pod.spec.gpus, pod.started_at, now
                )
            )
        record.pods = ()

    def _hours(self, start: float, end: float) -> Iterable[tuple[int, float]]:
        """(hour index, seconds) pieces of [start, end) cut at UTC hour boundaries."""
        offset = self.start_offset_s
        t = start
        while t < end:
            hour = int((t + offset) // HOUR_S)
            boundary = (hour + 1) * HOUR_S - offset
            piece_end = min(end, boundary)
            yield hour, piece_end - t
            t = piece_end

    def _count_usage(self, pod: RunningPod, member: str, start: float, end: float) -> None:
        owner = self._node_owner[pod.node]
        model = self._node_model[pod.node]
        for hour, seconds in self._hours(start, end):
            self.usage.append(
                UsageRow(
                    hour=hour,
                    pod_uid=pod.uid,
                    namespace=pod.namespace,
                    job_id=pod.job_id,
                    member=member,
                    owner=owner,
                    gpu_model=model,
                    node=pod.node,
                    gpu_seconds=seconds * pod.spec.gpus,
                )
            )

    def _count_lost(
        self, record: JobRecord, start: float, end: float, cause: PreemptionCause
    ) -> None:
        gpus_by_model: dict[str, int] = {}
        for node in record.nodes:
            model = self._node_model[node]
            gpus_by_model[model] = gpus_by_model.get(model, 0) + record.job.gpus_per_pod
        for hour, seconds in self._hours(start, end):
            for model, gpus in sorted(gpus_by_model.items()):
                self.lost.append(LostRow(hour, record.job.org, model, gpus * seconds, cause))

    def _advance_history(self, now: float) -> None:
        """Decay past usage to `now` and add what was used since the last event."""
        dt = now - self._now
        if self._half_life_s is not None and dt > 0:
            self._history = advance_usage_history(
                self._history, self._member_alloc, dt, self._half_life_s, self._members
            )
        self._now = max(self._now, now)

    @staticmethod
    def _shares_by_key(shares: Iterable[MemberShare]) -> dict[tuple[str, str], MemberShare]:
        return {(s.member, s.gpu_model): s for s in shares}

    def _record_timeline(self, shares: dict[tuple[str, str], MemberShare]) -> None:
        now = self._now
        pending = self._pending_gpus() if not shares else None
        allocated_of, lent_of, elsewhere_of = self._allocated, self._lent, self._elsewhere
        last_row, bound = self._last_row, self._bound_this_cycle
        # Between cycles, a row is worked out from its own key's GPUs, pending work and
        # last row alone: after rows made the same way, only the keys whose GPUs moved or
        # whose pending work changed can get a new one (most instants touch one member).
        redo: set[tuple[str, str]] | None = None
        if pending is not None and self._rows_pending is not None:
            last_pending = self._rows_pending
            redo = self._moved | {
                k
                for k in pending.keys() | last_pending.keys()
                if pending.get(k, 0) != last_pending.get(k, 0)
            }
        self._rows_pending = pending
        self._moved = set()
        for key, member, model, entitlement in self._timeline_keys:
            if redo is not None and key not in redo:
                continue
            allocated = allocated_of.get(key, 0)
            share = shares.get(key)
            if share is not None:
                # The engine's view before its own binds; binds only move GPUs from
                # pending to allocated, so demand and fair share still hold.
                waiting = max(0, share.pending - bound.get(key, 0))
                demand = share.demand
                fair = float(share.fair_share)
            elif pending is not None:
                waiting = pending.get(key, 0)
                demand = allocated + waiting
                previous = last_row.get(key)
                fair = previous[2] if previous is not None and waiting else float(allocated)
            else:  # the engine gave no share for this member: nothing to share
                waiting = 0
                demand = allocated
                fair = float(allocated)
            borrowed = max(0, allocated - entitlement)
            row = (
                allocated,
                entitlement,
                fair,
                demand,
                waiting,
                borrowed,
                lent_of.get(key, 0),
                elsewhere_of.get(key, 0),
            )
            if last_row.get(key) != row:
                last_row[key] = row
                self.timeline.append((now, member, model, *row))
        self._bound_this_cycle = {}
        self._observe_waiting(now)

    def _observe_waiting(self, now: float) -> None:
        nominated: dict[str, int] = {}
        for job_id in self._nominated:
            job = self.cluster.pending.get(job_id)
            if job is None:
                continue
            per_pod = {p.uid: p.spec.gpus for p in job.pods}
            for uid, node in job.nominated_nodes.items():
                nominated[node] = nominated.get(node, 0) + per_pod.get(uid, 0)
        lent: dict[str, int] = {}
        for (owner, _), gpus in self._lent.items():
            lent[owner] = lent.get(owner, 0) + gpus
        fair = {key: row[2] for key, row in self._last_row.items()}
        kept_off_wanted = self.cluster.kept_off_wanted_shapes()
        state = State(
            free=self.cluster.free_gpus_by_node,
            shapes=self.cluster.pending_shapes,
            nominated=nominated,
            allocated=self._allocated,
            lent=lent,
            kept=self._kept_book.kept,
            fair=fair,
            shapes_version=self.cluster.shape_changes,
            kept_off_wanted=kept_off_wanted,
        )
        # Free GPUs, allocations, lending and what members could get back all follow the
        # running pods; of the pending jobs the meter reads only their shapes. An arrival
        # of a shape already pending, or a wake-up, changes none of it: about a quarter
        # of a contended replay's instants.
        same_as = (
            self.cluster.running_changes,
            self.cluster.shape_changes,
            frozenset(nominated.items()),
            tuple(fair.items()),
            kept_off_wanted,
        )
        self.meter.observe(now, state, same_as)

    def _owed_blocker(self, member: str, model: str) -> str:
        """What holds the member's own nodes of `model` now (`waiting.owed_blocker`)."""
        running = self.cluster.running
        return owed_blocker(
            (running[uid] for uid in self._foreign.get((member, model), ())),
            model,
            self._job_gpus,
            self._allocated,
            self.cluster.capacity.entitlement,
            self._reclaim_limit,
        )

    def _job_gpus(self, pod: RunningPod) -> int:
        return self.jobs[pod.job_id].job.gpus

    def _pending_gpus(self) -> dict[tuple[str, str], int]:
        """Pending GPUs per (member, model), for instants without an engine cycle. A job
        without a model counts for the model with the most GPUs. Read from the cluster's
        sums per member and named model (`SimCluster.pending_gpus`), not the jobs
        (thousands on a contended pool)."""
        fallback = self._largest_model
        out: dict[tuple[str, str], int] = {}
        for (member, model), gpus in self.cluster.pending_gpus.items():
            key = (member, model or fallback)
            out[key] = out.get(key, 0) + gpus
        return out
