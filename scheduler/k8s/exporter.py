"""Prometheus metrics of the scheduler daemon (prometheus-client, `/metrics`).

Gauges that describe the cluster (member shares per GPU model, pod GPU allocations, queue
depth) are computed at scrape time from the latest snapshot and decisions, so a scrape
never sees half of a cycle. Counters and histograms count what the daemon did.

The same HTTP port serves `/healthz` (the process is alive: always 200) and `/readyz`
(200 once the informer caches have synced and a policy is in force, its body saying
"leader" or "standby", both ready; 503 with the reason before).

Only the leader reports `fairpool_pod_gpu_allocation`: metering sums it per member, and
two replicas reporting the same pods would double the bill. Standbys report
`fairpool_leader 0` and the share gauges (handy to compare).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.errors import listen_error
from policies.http import wsgi_server
from policies.model import Policy
from scheduler.engine.decisions import Decisions
from scheduler.engine.entitlement import MemberModel
from scheduler.engine.snapshot import Snapshot
from scheduler.sim.after_cycle import Reading, read_cycle
from scheduler.sim.waiting import DAEMON_OWED_CAUSES, IDLE_CAUSES, owed_allowance_s

SHARE_FIELDS = {
    "entitlement": "entitlement (contribution plus purchased GPUs, after the carve-out)",
    "fair_share": "fair share",
    "allocated": "GPUs held by running pods",
    "borrowed": "allocated above the entitlement, max(0, allocated - entitlement)",
    "reclaimable": "GPUs in reclaimable pods (whole pods, can exceed borrowed)",
    "lent": "GPUs on the member's own nodes held by other members' pods",
    "pending": "GPUs asked for by pending pods, but for those that can never run",
}
"""Share gauge `fairpool_member_<name>_gpus` -> its help text (docs/glossary.md words)."""
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
ENTITLEMENT_BUCKETS = (30, 60, 90, 120, 300, 600, 1800, 3600, 14_400, 43_200, 86_400, 259_200)
"""Seconds: around the allowance (90 s with the default policy), then up to three days."""


class OwedEpisodes:
    """Owed episodes (docs/metrics.md, time to entitlement) as a run of readings sees
    them: one opens at the first reading with its (member, GPU model) owed and ends at
    the first reading without, at the readings' cycle times."""

    def __init__(self) -> None:
        self.since: dict[MemberModel, float] = {}

    def read(self, now: float, owed: Iterable[MemberModel]) -> list[tuple[MemberModel, float]]:
        """Take the reading of the cycle at `now`; the episodes it ends, with their length."""
        owed = set(owed)
        ended = [(key, now - since) for key, since in sorted(self.since.items()) if key not in owed]
        for key, _ in ended:
            del self.since[key]
        for key in sorted(owed):
            self.since.setdefault(key, now)
        return ended

    def lasted(self, key: MemberModel, now: float) -> float:
        """How long the pair's open episode has lasted at `now`; 0 when none is open."""
        since = self.since.get(key)
        return 0.0 if since is None else max(0.0, now - since)


@dataclass(frozen=True, slots=True)
class State:
    """What the scrape-time gauges read: the latest cycle's inputs and outputs."""

    snapshot: Snapshot | None
    decisions: Decisions
    leader: bool
    running_phase: frozenset[str]
    """uids of pods in phase Running (the allocation gauge's 'while it runs')."""
    policy: Policy | None = None
    """The policy the cycle decided with (the wait meter's gauges read its limits)."""
    version: int = 0
    """The publication's number (`Published.version`): what is derived from one
    publication is worked out once, however often Prometheus scrapes."""
    refused: frozenset[str] = frozenset()
    """Pods whose eviction a PodDisruptionBudget refused last (`Evictor.refused`): the
    cycle preempts them, but they stay."""


class _ClusterCollector(Collector):
    def __init__(self, state: Callable[[], State], pod_series: Callable[[], bool]) -> None:
        self._state = state
        self._pod_series = pod_series
        self._reading: tuple[int, Reading | None] = (0, None)
        """(publication, the wait meter's reading of it)."""
        self._episodes = OwedEpisodes()
        self._lock = threading.Lock()
        """Scrapes run in threads of their own: one at a time reads a new cycle."""
        self._time_to_entitlement = Histogram(
            "fairpool_time_to_entitlement_seconds",
            "Owed episodes that ended, by their length: from the first cycle read with the "
            "member owed its entitlement of the GPU model to the first without (leader only)",
            ["member", "gpu_model"],
            buckets=ENTITLEMENT_BUCKETS,
            registry=None,
        )

    def describe(self) -> list[Metric]:
        # Nothing to check for clashes, and collect() must not run before the daemon
        # it reads from is built.
        return []

    def collect(self) -> Iterator[Metric]:
        state = self._state()
        leader = GaugeMetricFamily(
            "fairpool_leader", "1 when this replica is the leader that binds, else 0"
        )
        leader.add_metric([], 1.0 if state.leader else 0.0)
        yield leader
        share_gauges = {
            name: GaugeMetricFamily(
                f"fairpool_member_{name}_gpus",
                f"Per member and GPU model: {meaning}",
                labels=["member", "gpu_model"],
            )
            for name, meaning in SHARE_FIELDS.items()
        }
        for share in state.decisions.shares:
            labels = [share.member, share.gpu_model]
            for name in SHARE_FIELDS:
                share_gauges[name].add_metric(labels, float(getattr(share, name)))
        yield from share_gauges.values()
        queue = GaugeMetricFamily(
            "fairpool_pending_pods",
            "Pending pods waiting for fairpool, per member",
            labels=["member"],
        )
        allocation = GaugeMetricFamily(
            "fairpool_pod_gpu_allocation",
            "GPUs held by a running pod (metering joins on it)",
            labels=["namespace", "pod", "uid", "member", "owner", "gpu_model", "node"],
        )
        snapshot = state.snapshot
        if snapshot is not None:
            depth: dict[str, int] = {}
            for job in snapshot.pending:
                depth[job.member] = depth.get(job.member, 0) + len(job.pods)
            for member, pods in sorted(depth.items()):
                queue.add_metric([member], float(pods))
            if state.leader and self._pod_series():
                nodes = {n.name: n for n in snapshot.nodes}
                for pod in snapshot.running:
                    if pod.spec.gpus <= 0 or pod.uid not in state.running_phase:
                        continue
                    node = nodes.get(pod.node)
                    allocation.add_metric(
                        [
                            pod.namespace,
                            pod.name,
                            pod.uid,
                            pod.member or "",
                            (node.owner if node else None) or "",
                            (node.gpu_model if node else None) or "",
                            pod.node,
                        ],
                        float(pod.spec.gpus),
                    )
        yield queue
        yield allocation
        yield from self._reading_gauges(state)

    def read(
        self, state: State, snapshot: Snapshot, policy: Policy
    ) -> tuple[Reading, dict[MemberModel, float]]:
        """The wait meter's reading of the published cycle, worked out once per
        publication (at a scrape, or by the daemon between scrapes: `SchedulerMetrics.read`)
        with its owed episodes timed; and how long each open episode has lasted."""
        with self._lock:
            version, reading = self._reading
            if reading is None or version != state.version or not state.version:
                reading = read_cycle(snapshot, state.decisions, policy, state.refused)
                self._reading = (state.version, reading)
                for (member, model), seconds in self._episodes.read(snapshot.now, reading.owed):
                    if state.leader:  # one replica counts the pool's episodes
                        self._time_to_entitlement.labels(member, model).observe(seconds)
            episodes = self._episodes
            return reading, {key: episodes.lasted(key, snapshot.now) for key in episodes.since}

    def _reading_gauges(self, state: State) -> Iterator[Metric]:
        idle = GaugeMetricFamily(
            "fairpool_idle_gpus_while_pending",
            "GPUs no pod holds while pods wait for fairpool, per GPU model and idle reason, "
            f"why they stay idle ({', '.join(IDLE_CAUSES)}), after the latest "
            "cycle; 0 for every idle reason when nothing waits",
            labels=["gpu_model", "cause"],
        )
        owed = GaugeMetricFamily(
            "fairpool_member_owed",
            "1 while the member has pending work that could use its entitlement of the GPU "
            "model (it fits the entitlement left, and the nodes once all but the member's "
            "own work and other owners' work within their entitlement are taken back), "
            "after the latest cycle; else 0",
            labels=["member", "gpu_model"],
        )
        blocker = GaugeMetricFamily(
            "fairpool_member_owed_blocker",
            "1 for what holds the member's own nodes of the GPU model while it is owed its "
            f"entitlement there, the blocker ({', '.join(DAEMON_OWED_CAUSES)}), after the "
            "latest cycle; 0 for the other blockers, and for every blocker while it is not owed",
            labels=["member", "gpu_model", "cause"],
        )
        lasted = GaugeMetricFamily(
            "fairpool_member_owed_seconds",
            "How long the member has been owed its entitlement of the GPU model, from the "
            "first cycle read with it owed to the latest cycle; 0 while not owed",
            labels=["member", "gpu_model"],
        )
        allowance = GaugeMetricFamily(
            "fairpool_owed_allowance_seconds",
            "How long an owed episode may last by the policy in use: grace period + minimum "
            "runtime (unless preempted below it) + 60 s",
        )
        families = (idle, owed, blocker, lasted, allowance)
        snapshot, policy = state.snapshot, state.policy
        if snapshot is None or policy is None:
            yield from families
            yield from self._time_to_entitlement.collect()
            return
        allowance.add_metric([], owed_allowance_s(policy))
        reading, lasted_now = self.read(state, snapshot, policy)
        for model, causes in sorted(reading.idle.items()):
            for cause, gpus in causes.items():
                idle.add_metric([model, cause], float(gpus))
        for share in state.decisions.shares:
            if share.entitlement > 0:
                key = (share.member, share.gpu_model)
                owed.add_metric(list(key), 1.0 if key in reading.owed else 0.0)
                now = reading.blockers.get(key)
                for cause in DAEMON_OWED_CAUSES:
                    blocker.add_metric([*key, cause], 1.0 if cause == now else 0.0)
                lasted.add_metric(list(key), lasted_now.get(key, 0.0))
        yield from families
        yield from self._time_to_entitlement.collect()


Readiness = Callable[[], tuple[bool, str]]
"""(ready, why not / leader or standby)."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes every few seconds: no access log."""


def health_app(registry: CollectorRegistry, readiness: Readiness) -> Callable[..., Iterable[bytes]]:
    """A WSGI app: `/healthz`, `/readyz`, and everything else prometheus-client's own
    exposition app (`/metrics`, content negotiation, gzip)."""
    metrics = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            ready, detail = readiness()
            status = "200 OK" if ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [f"{'ready' if ready else 'not ready'}: {detail}\n".encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    return app


class SchedulerMetrics:
    """The daemon's metrics in a registry of its own (two daemons can share a process)."""

    def __init__(
        self, state: Callable[[], State] | None = None, readiness: Readiness | None = None
    ) -> None:
        self.readiness: Readiness = readiness or (lambda: (False, "not started"))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.attempts = Counter(
            "fairpool_scheduling_attempts",
            "Scheduling attempts of pending jobs, by result",
            ["result"],
            registry=r,
        )
        self.cycle_seconds = Histogram(
            "fairpool_scheduling_cycle_duration_seconds",
            "One scheduling cycle: snapshot, engine, hand-off of decisions",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_seconds = Histogram(
            "fairpool_engine_duration_seconds",
            "The pure engine's part of a cycle",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.bind_seconds = Histogram(
            "fairpool_bind_duration_seconds",
            "From a bind being queued to the API server's answer",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e_seconds = Histogram(
            "fairpool_pod_scheduling_duration_seconds",
            "From pod creation to its successful bind",
            buckets=(*LATENCY_BUCKETS, 60, 120, 300, 600, 1800, 3600),
            registry=r,
        )
        self.binds = Counter(
            "fairpool_binds", "Binds carried out, by result", ["result"], registry=r
        )
        self.preemptions = Counter(
            "fairpool_preemptions",
            "Evictions of preempted pods, by reclaiming member, result and cause "
            "(entitlement, fair_share, consolidation, queue)",
            ["reclaimer", "result", "cause"],
            registry=r,
        )
        self.gang_repairs = Counter(
            "fairpool_gang_repairs",
            "Gangs found partly bound (a crash in the middle of their binds), by what was "
            "done: finished as planned, or undone so they are scheduled whole",
            ["action"],
            registry=r,
        )
        self.reclaim_lost = Counter(
            "fairpool_reclaim_lost_gpu_seconds",
            "GPU-seconds lost to reclaim by preempted pods: GPUs x (end of grace period - start);"
            " nothing for a checkpointable pod. By the victim's member and GPU model, and the "
            "cause of its preemption (entitlement, fair_share, consolidation, queue)",
            ["member", "gpu_model", "cause"],
            registry=r,
        )
        self.policy_reloads = Counter(
            "fairpool_policy_reloads", "Policy reloads, by result", ["result"], registry=r
        )
        self.policy_version = Gauge(
            "fairpool_policy_version", "metadata.version of the policy in use", registry=r
        )
        self.unpriced_nodes = Gauge(
            "fairpool_unpriced_gpu_nodes",
            "Nodes whose GPU model the policy in use does not price (their hours cannot be billed)",
            registry=r,
        )
        self.stray_owner_nodes = Gauge(
            "fairpool_stray_owner_gpu_nodes",
            "GPU nodes whose fairpool.io/owner label names no member of the policy in use "
            "(unowned: nobody's contribution)",
            registry=r,
        )
        self.pod_series = True
        """Export fairpool_pod_gpu_allocation (one series per running pod, naming its
        member, namespace and node). Metering reads it from Prometheus; anyone else who
        can reach /metrics reads it too, so restrict /metrics to Prometheus."""
        self._state = state
        self._cluster: _ClusterCollector | None = None
        if state is not None:
            self._cluster = _ClusterCollector(state, lambda: self.pod_series)
            r.register(self._cluster)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def read(self) -> None:
        """Read the latest published cycle into the wait meter's gauges now, as a scrape
        would: the daemon calls it between scrapes, so that owed episodes are timed more
        finely than the scrape interval."""
        if self._cluster is None or self._state is None:
            return
        state = self._state()
        if state.snapshot is not None and state.policy is not None:
            self._cluster.read(state, state.snapshot, state.policy)

    def serve(self, port: int, address: str = "0.0.0.0") -> int:
        """Serve /metrics, /healthz and /readyz; port 0 picks a free one. Returns the port."""
        try:
            server = wsgi_server(
                address, port, health_app(self.registry, lambda: self.readiness()), _QuietHandler
            )
        except OSError as exc:
            raise listen_error(f"{address}:{port}", exc) from exc
        thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        thread.start()
        self._server, self._thread = server, thread
        return int(server.server_port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
