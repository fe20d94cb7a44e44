"""Standalone replay: each member's own jobs alone on its own contribution.

This is the counterfactual behind `standalone_mean_jct_s` and the pooling dividend:
the member's nodes only (purchased GPUs are money, not hardware, so they do not
count), the same engine, and the policy restricted to that member. Jobs that cannot
run on the member's own hardware at all, or not within its own limits there, never run
standalone; they are listed, not dropped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass

from policies.model import Policy
from scheduler.engine.snapshot import Node
from scheduler.sim.never import never_runs
from scheduler.sim.simulator import Engine, JobState, Simulator, TimelineRow
from scheduler.traces.model import Trace


@dataclass(frozen=True)
class StandaloneResult:
    member: str
    jct_s: dict[str, float]
    """job id -> JCT of the jobs that completed standalone."""
    wait_s: dict[str, float]
    never_runs: tuple[str, ...]
    """Jobs that cannot run on the member's own hardware, or not within its own limits
    there (its maxGpus)."""
    timeline: list[TimelineRow]
    end_time: float
    events: int
    cycles: int


def restrict_policy(policy: Policy, member: str) -> Policy:
    alone = policy.member(member).model_copy(update={"purchased": {}, "lending_limit": None})
    spec = policy.spec.model_copy(update={"members": [alone]})
    return policy.model_copy(update={"spec": spec})


def standalone_inputs(
    nodes: Sequence[Node], policy: Policy, trace: Trace, member: str
) -> tuple[tuple[Node, ...], Policy, Trace, tuple[str, ...]]:
    own = tuple(n for n in nodes if n.owner == member)
    jobs = [j for j in trace.jobs if j.org == member]
    alone = restrict_policy(policy, member)
    # The hardware, and the member's own limits on it (a job above its maxGpus waited
    # the whole replay, counted neither as completed nor as never running).
    blocked = never_runs(jobs, own, alone) if own else {j.job_id: "" for j in jobs}
    runnable = tuple(j for j in jobs if j.job_id not in blocked)
    never = tuple(j.job_id for j in jobs if j.job_id in blocked)
    return own, alone, Trace(runnable, trace.start_epoch), never


def replay_member(
    nodes: tuple[Node, ...],
    policy: Policy,
    trace: Trace,
    member: str,
    engine: Engine | None,
    batch_s: float = 0.0,
) -> StandaloneResult:
    own, alone, jobs, never = standalone_inputs(nodes, policy, trace, member)
    if not own or not jobs.jobs:
        return StandaloneResult(member, {}, {}, never, [], 0.0, 0, 0)
    result = Simulator(own, alone, jobs, engine, batch_s=batch_s).run()
    jct: dict[str, float] = {}
    wait: dict[str, float] = {}
    for record in result.jobs.values():
        if record.state is JobState.DONE and record.end is not None:
            jct[record.job.job_id] = record.end - record.job.submit_time
            assert record.first_start is not None
            wait[record.job.job_id] = record.first_start - record.job.submit_time
    return StandaloneResult(
        member=member,
        jct_s=jct,
        wait_s=wait,
        never_runs=never,
        timeline=result.timeline,
        end_time=result.end_time,
        events=result.events,
        cycles=result.cycles,
    )


def replay_all(
    nodes: tuple[Node, ...],
    policy: Policy,
    trace: Trace,
    members: Sequence[str],
    engine: Engine | None = None,
    processes: int | None = None,
    on_done: Callable[[str], None] | None = None,
    batch_s: float = 0.0,
) -> dict[str, StandaloneResult]:
    """Every member's standalone replay, in `processes` processes in all (this one
    included; only the default engine can be sent to a worker)."""
    with StandaloneReplays(
        nodes, policy, trace, members, engine, processes, batch_s=batch_s
    ) as replays:
        return replays.results(on_done)


class StandaloneReplays:
    """The standalone replays, in `processes` processes in all, the caller's included:
    `processes - 1` worker processes start them at once (when the engine is the default
    one), largest first, so that they run while the caller replays the pooled cluster on
    its own core; `results` then has the caller replay, smallest first, those no worker
    has started yet, and waits for the rest. A contended pool's pooled replay is the
    longest, and a third busy process on two cores would slow it down; a quiet pool's
    standalone replays are most of the work, and the caller joins in as soon as it is
    free. Each replay is pure: where it runs changes nothing in its result."""

    def __init__(
        self,
        nodes: tuple[Node, ...],
        policy: Policy,
        trace: Trace,
        members: Sequence[str],
        engine: Engine | None = None,
        processes: int | None = None,
        *,
        batch_s: float = 0.0,
    ) -> None:
        self._args = (nodes, policy, trace)
        self._batch_s = batch_s
        self._members = list(members)
        self._engine = engine
        workers = min((processes or 1) - 1, len(self._members))
        self._pool: ProcessPoolExecutor | None = None
        self._futures: dict[str, Future[StandaloneResult]] = {}
        if workers >= 1 and engine is None:
            self._pool = ProcessPoolExecutor(max_workers=workers)
            # Largest first: the longest replays should not start last.
            order = sorted(self._members, key=lambda m: -_work(trace, m))
            for member in order:
                # The member's jobs only, which are all its replay reads: this process
                # pickles what it sends while it replays the pooled cluster, and the
                # whole trace sent with each member was 8 times the trace (at 30,000
                # jobs, about 0.3 s to pickle and 0.5 s to unpickle each time).
                self._futures[member] = self._pool.submit(
                    replay_member, nodes, policy, member_trace(trace, member), member, None, batch_s
                )

    def results(self, on_done: Callable[[str], None] | None = None) -> dict[str, StandaloneResult]:
        found: dict[str, StandaloneResult] = {}
        nodes, policy, trace = self._args

        def replay_here(member: str) -> None:
            found[member] = replay_member(nodes, policy, trace, member, self._engine, self._batch_s)
            if on_done is not None:
                on_done(member)

        if self._futures:
            # Smallest first, so the workers keep the long ones they already run.
            for member in reversed(list(self._futures)):
                if self._futures[member].cancel():
                    replay_here(member)
            by_future = {f: m for m, f in self._futures.items() if not f.cancelled()}
            for future in as_completed(by_future):
                found[by_future[future]] = future.result()
                if on_done is not None:
                    on_done(by_future[future])
        else:
            for member in self._members:
                replay_here(member)
        return {m: found[m] for m in self._members}

    def __enter__(self) -> StandaloneReplays:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def member_trace(trace: Trace, member: str) -> Trace:
    """The trace's jobs of `member`, in the trace's order: what `standalone_inputs` keeps."""
    return Trace(tuple(j for j in trace.jobs if j.org == member), trace.start_epoch)


def _work(trace: Trace, member: str) -> float:
    """GPU-seconds the member's jobs ask for: how long its replay roughly takes."""
    return sum(j.gpus * j.duration_s for j in trace.jobs if j.org == member)
