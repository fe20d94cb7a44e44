"""The scheduler daemon: watch the cluster, ask the engine, carry out its decisions.

Wiring only: informers fill the cluster cache; the scheduling loop turns the cache into
a snapshot, calls the pure engine, and hands binds to the binder, preemptions to the
evictor and explanations to the event recorder. Everything the daemon remembers besides
the cluster itself is small: the policy, the nominations it decided that the watch does
not show yet, and the usage history (passed in `Snapshot.usage_history`; the leader keeps
it in a ConfigMap, see `scheduler/k8s/usage_history.py` and docs/usage-history.md).

Nominations live on the pods. When the engine reclaims for a waiting job, the GPUs
being freed are held for it: the leader writes each of the job's pods' nominated node to
its `status.nominatedNodeName` (as kube-scheduler does on preemption), and the cache
reads it back into `PendingJob.nominated_nodes`, the same field the simulator fills. So
the held capacity survives a restart or a leader change (the borrowed job whose pods
were preempted cannot take it back meanwhile), and `kubectl get pod -o yaml` shows what
a pod waits for. The field is cleared when the nomination is dropped (stale, see
`nominator`) or its node is gone, and when the pod binds to another node.

Restart safety: nothing else is kept. On start the cache is listed from the API server;
pods bound before the restart are running pods (their member comes from the annotation
written in the Binding); pods not bound are pending. A bind the old process sent but
whose answer it never saw is refused by the API server the second time (409), so no pod
is bound twice, and every unbound pod is in the pending list, so none is forgotten.
Nominations are read back from the pods.

A gang is bound all or none: a gang not bound whole (a pod deleted between the check and
its bind, a bind failing for good) has its bound pods deleted, so that its controller
recreates it whole; Kubernetes cannot unbind a pod (see `binder`). A gang found partly
bound (a leader killed between its binds) is repaired by the leader in every cycle:
finished where the engine places the rest, else undone the same way (`gang_repair`).

Only the leader (a coordination.k8s.io Lease) binds, evicts and posts events; a standby
keeps its cache warm and computes shares, so it takes over within one lease period.

`SchedulerView` is the read-only window other parts of the process (the gRPC policy API)
get onto the running daemon. `Daemon` implements it: after each cycle the loop swaps in
one immutable `Published` (snapshot, policy, decisions), and every read takes it without
a lock, so readers never wait for a cycle and a cycle never waits for readers.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from kubernetes import client

from policies.errors import InputError, UnavailableError
from policies.loader import load_policy, parse_policy
from policies.model import Policy, price_gaps_text
from scheduler import engine
from scheduler.engine.decisions import Bind, Decisions, Explanations, MemberShare, Preemption
from scheduler.engine.snapshot import Node, RunningPod, Snapshot
from scheduler.engine.usage import lost_gpu_seconds
from scheduler.k8s import labels as L
from scheduler.k8s.binder import Binder, BindResult
from scheduler.k8s.cache import (
    JOBS,
    JOBSETS,
    NODES,
    POD_GROUPS,
    PODS,
    PRIORITY_CLASSES,
    PYTORCHJOBS,
    VOLCANO_POD_GROUPS,
    CacheView,
    ClusterCache,
)
from scheduler.k8s.events import EventLevel, EventRecorder, ObjectRef
from scheduler.k8s.evictor import Evictor, EvictResult
from scheduler.k8s.exporter import SchedulerMetrics, State
from scheduler.k8s.gang_repair import (
    PartialGang,
    Repair,
    partial_gangs,
    plan,
    remainders,
    without_undone,
)
from scheduler.k8s.informer import Informer
from scheduler.k8s.leader import LeaderElector
from scheduler.k8s.names import name_problem
from scheduler.k8s.nominator import Nominations, NominationWriter, cleared_on_bind
from scheduler.k8s.objects import Obj, PodInfo
from scheduler.k8s.owners import (
    JOB,
    JOBSET,
    PYTORCHJOB,
    SCHEDULER_PLUGINS_POD_GROUP,
    VOLCANO_POD_GROUP,
    OwnerKind,
)
from scheduler.k8s.policy_object import PolicyObject
from scheduler.k8s.published import NOTHING_PUBLISHED, Published, Rejected
from scheduler.k8s.redaction import redact_explanation
from scheduler.k8s.usage_history import (
    UsageHistoryStore,
    UsageKeeper,
    allocated_by_member,
    bound_by_member,
)

if TYPE_CHECKING:
    # Only a Policy object needs it (the ledger and its database drivers): a daemon
    # reading its policy from a file starts without importing them.
    from scheduler.api.policy_audit import AuditLog

log = logging.getLogger(__name__)

POLICY_KEY = "policy.yaml"
QUIET_CYCLES = 10
"""While binds are in flight, a cycle with nothing to place runs at most once per this
many `cycle_seconds`."""


@runtime_checkable
class SchedulerView(Protocol):
    """What the running scheduler exposes to the gRPC server (docs/architecture.md, "The gRPC API").

    Every method is thread-safe and cheap: it returns the latest immutable value and
    never waits for a scheduling cycle.
    """

    def published(self) -> Published:
        """What the latest scheduling cycle published (snapshot, policy and decisions of
        the same cycle); version 0 with an empty snapshot before the first cycle."""
        ...

    def policy(self) -> Policy:
        """The policy the scheduler is using now."""
        ...

    def snapshot(self) -> Snapshot:
        """The snapshot the latest scheduling cycle decided on (an empty snapshot before
        the first cycle)."""
        ...

    def last_decisions(self) -> Decisions:
        """What the engine decided in the latest cycle (explanations per pending job id,
        member shares per GPU model); `Decisions()` before the first cycle."""
        ...

    def set_policy(self, policy: Policy) -> None:
        """Hot-swap the policy (after ApplyPolicy validated and stored it). The next
        scheduling cycle uses it; running pods are not touched by the swap itself."""
        ...


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


PRICE_CHECK_SECONDS = 60.0
"""How often the daemon looks for nodes of a GPU model the policy does not price."""


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    scheduler_name: str = L.SCHEDULER_NAME
    identity: str = field(default_factory=default_identity)
    leader_elect: bool = True
    lease_namespace: str = "fairpool-system"
    lease_name: str = "fairpool-scheduler"
    lease_seconds: float = 10.0
    renew_deadline: float = 7.0
    retry_seconds: float = 2.0
    cycle_seconds: float = 1.0
    """Longest pause between cycles when nothing changes (time-based effects: grace
    periods, min-runtime, policy file changes)."""
    batch_seconds: float = 0.05
    """After a change, wait this long for more changes before the cycle starts."""
    bind_workers: int = 16
    resync_seconds: float = 300.0
    explain_after_seconds: float = 1.0
    """A job must have waited this long before it gets a FailedScheduling event (gangs
    still being created would otherwise get one per arriving pod)."""
    event_repeat_seconds: float = 60.0
    watch_pod_groups: bool = True
    """Read gang sizes from scheduler-plugins and Volcano PodGroups (when installed)."""
    watch_owners: bool = True
    """Read gangs from the objects that own pods: Jobs, JobSets, PyTorchJobs (a kind the
    cluster does not serve, or fairpool may not read, is simply off)."""
    events: EventLevel = "all"
    """Which Kubernetes Events to post: `all` (a `Scheduled` event per bind, as
    kube-scheduler does, and every warning), `warnings` (`FailedScheduling`,
    `Preempted`, `GangBindUndone`, `PolicyRejected`...), or `none`. Events always yield
    to binds in flight (scheduler/k8s/events.py)."""
    usage_history_configmap: str | None = "fairpool-usage-history"
    """ConfigMap (in `lease_namespace`) keeping the usage history across restarts and
    leader changes; None keeps it in memory only."""
    usage_write_seconds: float = 30.0
    """The leader writes the usage history at most this often (and on a clean stop): a
    crash loses at most this long of usage, a restart's decay covers the rest."""
    policy_status_seconds: float = 10.0
    """The leader rewrites the Policy object's status at most this often when only the
    members' shares moved (a new version or a refusal is written at once)."""
    owed_read_seconds: float = 5.0
    """Read the wait meter (owed members, idle GPUs) at the end of a cycle when the last
    reading is this old, between Prometheus' scrapes: the owed episodes behind
    `fairpool_time_to_entitlement_seconds` are timed at least this finely. 0: only at
    scrapes (a reading costs about a third of a cycle at 5,000 nodes and 50,000 pending
    pods, `python -m bench engine`'s meter ms)."""


@dataclass(frozen=True, slots=True)
class PolicyConfigMap:
    namespace: str
    name: str
    key: str = POLICY_KEY

    @classmethod
    def parse(cls, text: str) -> PolicyConfigMap:
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name:
            raise InputError(f"--policy-configmap: expected NAMESPACE/NAME, got {text!r}")
        problem = name_problem(namespace, "label") or name_problem(name, "subdomain")
        if problem is not None:  # 'a/b/c' was the ConfigMap 'b/c' of namespace 'a'
            raise InputError(f"--policy-configmap: {problem}")
        return cls(namespace, name)


def pause_before_cycle(changed: bool, gap: float, cycle_seconds: float) -> float:
    """How long the loop waits before a cycle, having waited for a change (at most
    `cycle_seconds`). After a change: `gap`, so more changes join the same cycle (the
    batch) and a long cycle leaves the binder as long again. Without one, the periodic
    cycle is due: only what `gap` exceeds the wait already spent (a `--batch-seconds`
    above the period used to be added to it, so time-based effects came late)."""
    return gap if changed else max(0.0, gap - cycle_seconds)


class Daemon:
    """The scheduler: `start()`, then `stop()`; implements `SchedulerView`."""

    def __init__(
        self,
        api: client.ApiClient,
        policy: Policy | None = None,
        config: DaemonConfig | None = None,
        *,
        policy_file: str | Path | None = None,
        policy_configmap: PolicyConfigMap | None = None,
        policy_object: str | None = None,
        policy_audit: AuditLog | None = None,
    ) -> None:
        given = [policy_file, policy_configmap, policy_object]
        if policy is None and all(g is None for g in given):
            raise InputError("give a policy, a policy file, a policy ConfigMap or a Policy object")
        if policy_object is not None and policy_audit is None:
            raise InputError("a Policy object needs the audit history (the ledger) to number it")
        self.api = api
        self.config = config or DaemonConfig()
        self.policy_file = Path(policy_file) if policy_file is not None else None
        self.policy_configmap = policy_configmap
        self._policy_mtime = 0.0
        if policy is None and self.policy_file is not None:
            policy = load_policy(self.policy_file)
            self._policy_mtime = self.policy_file.stat().st_mtime
        self._policy = policy
        self._policy_resource_version = ""
        self._lock = threading.Lock()
        self._published = NOTHING_PUBLISHED
        self._meter_read_at = -math.inf
        self._priced: tuple[float, Policy | None] = (0.0, None)
        """When `_watch_prices` last looked, and under which policy."""
        self._price_warning = ""
        self._owner_warning = ""
        self.nominations = Nominations()
        self._victims: dict[str, RunningPod] = {}
        self._shares_at: tuple[float, Policy | None] = (0.0, None)
        self._last_cycle = 0.0
        self._policy_changed = False
        self.stop_event = threading.Event()
        self.cycles = 0
        c = self.config
        self.cache = ClusterCache(c.scheduler_name)
        self.metrics = SchedulerMetrics(self._metrics_state, self.readiness)
        self.recorder = EventRecorder(
            api,
            instance=c.identity,
            repeat_seconds=c.event_repeat_seconds,
            level=c.events,
            busy=lambda: self.binder.in_flight() > 0,
        )
        self.binder = Binder(
            api,
            self.cache,
            self.recorder,
            workers=c.bind_workers,
            on_result=self._bound,
            scheduled_events=c.events == "all",
            may_bind=lambda: self.is_leader,
        )
        self.evictor = Evictor(
            api, self.recorder, on_result=self._evicted, may_evict=lambda: self.is_leader
        )
        self.policy_object: PolicyObject | None = None
        if policy_object is not None:
            assert policy_audit is not None
            self.policy_object = PolicyObject(
                api,
                policy_object,
                policy_audit,
                self.set_policy,
                self.recorder,
                on_result=self._policy_taken_or_refused,
                price_gaps=self.price_gaps,
                status_seconds=self.config.policy_status_seconds,
            )
        self.nomination_writer = NominationWriter(api, may_write=lambda: self.is_leader)
        store = None
        if c.usage_history_configmap:
            store = UsageHistoryStore(api, c.lease_namespace, c.usage_history_configmap)
        self.usage = UsageKeeper(store, write_seconds=c.usage_write_seconds)
        self._was_leader = False
        self.elector: LeaderElector | None = None
        if c.leader_elect:
            self.elector = LeaderElector(
                api,
                c.lease_namespace,
                c.lease_name,
                c.identity,
                lease_seconds=c.lease_seconds,
                renew_deadline=c.renew_deadline,
                retry_seconds=c.retry_seconds,
                on_change=lambda _leading: self.cache.changed.set(),
            )
        self.informers = self._informers()
        self._loop = threading.Thread(target=self._run, name="scheduling-loop", daemon=True)

    # --- SchedulerView ------------------------------------------------------------------

    # Reads take no lock: each returns one attribute, swapped whole by its writer.

    def published(self) -> Published:
        return self._published

    def policy(self) -> Policy:
        policy = self._policy
        assert policy is not None, "no policy loaded yet"
        return policy

    def snapshot(self) -> Snapshot:
        return self._published.snapshot

    def last_decisions(self) -> Decisions:
        return self._published.decisions

    def price_gaps(self, policy: Policy) -> str:
        """`Policy.price_gaps` against the nodes the last cycle saw (none before the
        first: a policy read at start is not checked)."""
        nodes = self._published.snapshot.nodes
        return policy.price_gaps(n.gpu_model for n in nodes if n.gpus > 0)

    def _watch_prices(self, nodes: tuple[Node, ...], policy: Policy, now: float) -> None:
        """Say, in the log and in `fairpool_unpriced_gpu_nodes`, when nodes have a GPU
        model the policy in force does not price (new hardware before the policy lists
        it): the hours they run cannot be billed; and nodes whose owner names no member
        (`_watch_owners`). Looked at when the policy changes and at most every
        `PRICE_CHECK_SECONDS` otherwise (a pass over every node)."""
        if policy is self._priced[1] and now - self._priced[0] < PRICE_CHECK_SECONDS:
            return
        self._priced = (now, policy)
        unpriced = policy.unpriced_models(n.gpu_model for n in nodes if n.gpus > 0)
        self.metrics.unpriced_nodes.set(sum(unpriced.values()))
        gaps = price_gaps_text(unpriced)
        if gaps and gaps != self._price_warning:
            log.warning("%s: list the model in the policy's gpuModels", gaps)
        self._price_warning = gaps
        self._watch_owners(nodes, policy)

    def _watch_owners(self, nodes: tuple[Node, ...], policy: Policy) -> None:
        """Say, in the log and in `fairpool_stray_owner_gpu_nodes`, when GPU nodes carry
        an owner label that names no member of the policy in force (a typo, a member
        removed from the policy): such a node is unowned (docs/glossary.md), so the member
        meant gets no entitlement from it, and nothing said so."""
        members = set(policy.member_names())
        stray: dict[str, list[str]] = {}
        for n in nodes:
            if n.gpus > 0 and n.owner is not None and n.owner not in members:
                stray.setdefault(n.owner, []).append(n.name)
        self.metrics.stray_owner_nodes.set(sum(len(v) for v in stray.values()))
        said = stray_owners_text(stray)
        if said and said != self._owner_warning:
            log.warning("%s", said)
        self._owner_warning = said

    def set_policy(self, policy: Policy) -> None:
        with self._lock:
            self._policy = policy
            self._policy_changed = True
        self.metrics.policy_version.set(policy.version)
        self.cache.changed.set()
        log.info("policy %s version %s in use", policy.metadata.name, policy.version)

    # --- life cycle ---------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        return self.elector is None or self.elector.is_leading()

    def readiness(self) -> tuple[bool, str]:
        """Ready once every informer has synced and a policy is in force; the detail
        says why not, or whether this replica is the leader or a standby (both ready)."""
        waiting = [i.kind for i in self.informers if not i.synced.is_set()]
        if waiting:
            return False, f"informer caches not synced: {', '.join(waiting)}"
        if self._policy is None:
            return False, "no policy loaded"
        if not self._loop.is_alive():
            return False, "scheduling loop not running"
        return True, "leader" if self.is_leader else "standby"

    def start(self, sync_timeout: float = 60.0) -> Daemon:
        """List the cluster and start the loop; stopped instead when `stop_event` is set
        before the lists are in."""
        for informer in self.informers:
            informer.start()
        deadline = time.monotonic() + sync_timeout
        for informer in self.informers:
            while not informer.synced.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                if self.stop_event.is_set():
                    # Stopped (SIGTERM) while the API is still being listed: a pod being
                    # deleted must not sit out the whole timeout into its SIGKILL.
                    self.stop()
                    return self
                if time.monotonic() < deadline:
                    continue
                self.stop()
                # A wrong address or credentials: one line for the operator, not a traceback.
                why = f"; last error: {informer.last_error}" if informer.last_error else ""
                raise UnavailableError(
                    f"the Kubernetes API at {self.api.configuration.host} did not list "
                    f"{informer.kind} within {sync_timeout:g} s{why}"
                )
        if self._policy is None:
            where = self.policy_configmap
            if self.policy_object is not None:
                # Say why on the object too (status and event) before giving up.
                self.policy_object.publish((), leader=True)
                self.stop()
                raise InputError(
                    f"Policy object {self.policy_object.name!r} holds no valid policy: "
                    f"{self.policy_object.refusal or 'it does not exist'}"
                )
            self.stop()
            raise InputError(
                f"policy ConfigMap {where.namespace}/{where.name} is missing or holds no "
                f"valid policy under key {where.key!r}"
                if where
                else "no policy"
            )
        self.metrics.policy_version.set(self._policy.version)
        if self.elector is not None:
            self.elector.start()
        self._loop.start()
        return self

    def stop(self, release_lease: bool = True) -> None:
        self.stop_event.set()
        self.cache.changed.set()
        if self._loop.is_alive():
            self._loop.join(timeout=30)
        if self.cycles and self.is_leader:
            self._save_usage_history()
        if self.elector is not None and self.elector.running:
            self.elector.stop(release=release_lease)
        for informer in self.informers:
            informer.join(timeout=5)
        self.binder.close()
        self.evictor.close()
        self.nomination_writer.close()
        if self.policy_object is not None:
            self.policy_object.close()
        self.recorder.flush(timeout=5)
        self.recorder.close()
        self.metrics.close()

    def wait(self) -> None:
        while not self.stop_event.wait(1.0):
            pass

    # --- informers ----------------------------------------------------------------------

    def _informers(self) -> list[Informer]:
        core = client.CoreV1Api(self.api)
        scheduling = client.SchedulingV1Api(self.api)
        custom = client.CustomObjectsApi(self.api)
        c = self.config
        common: dict[str, Any] = {"resync_seconds": c.resync_seconds}
        informers = [
            Informer(NODES, core.list_node, self.cache, self.stop_event, **common),
            Informer(PODS, core.list_pod_for_all_namespaces, self.cache, self.stop_event, **common),
            Informer(
                PRIORITY_CLASSES,
                scheduling.list_priority_class,
                self.cache,
                self.stop_event,
                **common,
            ),
        ]
        optional: list[tuple[str, OwnerKind]] = []
        if c.watch_pod_groups:
            optional += [(POD_GROUPS, SCHEDULER_PLUGINS_POD_GROUP)]
            optional += [(VOLCANO_POD_GROUPS, VOLCANO_POD_GROUP)]
        if c.watch_owners:
            optional += [(JOBS, JOB), (JOBSETS, JOBSET), (PYTORCHJOBS, PYTORCHJOB)]
        for kind, served in optional:
            informers.append(
                Informer(
                    kind,
                    _cluster_lister(custom, served),
                    self.cache,
                    self.stop_event,
                    optional=True,
                    on_unavailable=self.cache.unavailable,
                    **common,
                )
            )
        if self.policy_configmap is not None:
            where = self.policy_configmap
            informers.append(
                Informer(
                    "configmap",
                    core.list_namespaced_config_map,
                    _PolicySink(self),
                    self.stop_event,
                    namespace=where.namespace,
                    field_selector=f"metadata.name={where.name}",
                    **common,
                )
            )
        if self.policy_object is not None:
            informers.append(self.policy_object.informer(self.stop_event, **common))
        return informers

    # --- policy reload ------------------------------------------------------------------

    def _policy_from_configmap(self, obj: Obj) -> None:
        assert self.policy_configmap is not None
        where = self.policy_configmap
        meta = obj.get("metadata") or {}
        version = meta.get("resourceVersion", "")
        if version and version == self._policy_resource_version:
            return
        self._policy_resource_version = version
        ref = ObjectRef("ConfigMap", where.namespace, where.name, meta.get("uid", ""))
        text = (obj.get("data") or {}).get(where.key)
        try:
            if text is None:
                raise InputError(f"ConfigMap has no key {where.key!r}")
            policy = parse_policy(text, f"configmap {where.namespace}/{where.name}")
            gaps = self.price_gaps(policy)
            if gaps:
                raise InputError(f"configmap {where.namespace}/{where.name}: {gaps}")
        except InputError as exc:
            self.metrics.policy_reloads.labels("rejected").inc()
            log.error("policy rejected, keeping the running one: %s", exc)
            if self._policy is not None:
                self.recorder.record(
                    ref, "Warning", "PolicyRejected", f"{exc}; the running policy stays"
                )
            return
        self.metrics.policy_reloads.labels("applied").inc()
        if self._policy is not None:
            self.recorder.record(
                ref,
                "Normal",
                "PolicyApplied",
                f"policy {policy.metadata.name} version {policy.version} in use",
            )
        self.set_policy(policy)

    def _policy_taken_or_refused(self, result: str) -> None:
        """Count it, and run a cycle soon so the leader writes the status at once."""
        self.metrics.policy_reloads.labels(result).inc()
        with self._lock:
            self._policy_changed = True
        self.cache.changed.set()

    def _reload_policy_file(self) -> None:
        if self.policy_file is None:
            return
        try:
            mtime = self.policy_file.stat().st_mtime
        except OSError:
            return
        if mtime == self._policy_mtime:
            return
        self._policy_mtime = mtime
        try:
            policy = load_policy(self.policy_file)
            gaps = self.price_gaps(policy)
            if gaps:
                raise InputError(f"{self.policy_file}: {gaps}")
        except InputError as exc:
            self.metrics.policy_reloads.labels("rejected").inc()
            log.error("policy file rejected, keeping the running one: %s", exc)
            return
        self.metrics.policy_reloads.labels("applied").inc()
        self.set_policy(policy)

    # --- the scheduling loop ------------------------------------------------------------

    def _run(self) -> None:
        c = self.config
        gap = c.batch_seconds
        while not self.stop_event.is_set():
            changed = self.cache.changed.wait(c.cycle_seconds)
            pause = pause_before_cycle(changed, gap, c.cycle_seconds)
            if pause and self.stop_event.wait(pause):
                break
            if self.stop_event.is_set():
                break
            self.cache.changed.clear()
            started = time.monotonic()
            if not self._worth_a_cycle(started):
                continue
            self._last_cycle = started
            try:
                self.run_cycle()
            except Exception:
                log.exception("scheduling cycle failed")
                self.stop_event.wait(1.0)
            # Under a storm of watch events, cycles would run back to back and starve the
            # binder and informer threads of the GIL: leave them as long as a cycle took.
            gap = max(c.batch_seconds, time.monotonic() - started)

    def _worth_a_cycle(self, now: float) -> bool:
        """Skip cycles that could decide nothing: during a storm of watch events for
        pods already bound (kwok marking them Running), a cycle over every pod would only
        take the GIL from the binder. The periodic cycle (time-based effects, the shares
        reported) also waits while binds are in flight, up to `QUIET_CYCLES` periods:
        their answers are about to change the cluster, and a cycle over thousands of
        pods would slow them down."""
        if self.cache.has_pending() or self.nominations or self._policy_changed:
            return True
        since = now - self._last_cycle
        if since < self.config.cycle_seconds:
            return False
        return self.binder.in_flight() == 0 or since >= QUIET_CYCLES * self.config.cycle_seconds

    def run_cycle(self) -> Decisions:
        """One cycle: snapshot, engine, and (on the leader) the decisions carried out,
        with the repair of gangs found partly bound (`gang_repair`)."""
        started = time.monotonic()
        c = self.config
        self._reload_policy_file()
        self._policy_changed = False
        policy = self.policy()
        leader = self.is_leader
        if not leader:
            self.nominations.reset()
        now = time.time()
        if leader and not self._was_leader:
            self.usage.reload()
        self._was_leader = leader
        history = self.usage.advance(policy, now)
        # Read before the cache's copy: a gang undo that ends while the copy is taken
        # still counts as in flight, not as a gang a crash left partly bound (read after,
        # the cycle repaired such a gang once more, binding a pod whose siblings were
        # being deleted).
        busy = self.binder.in_flight_uids()
        view = self.cache.view(policy, self.nominations.decided, now=now, usage_history=history)
        snapshot = view.snapshot
        self._watch_prices(snapshot.nodes, policy, now)
        viewed = time.monotonic()
        repair = Repair()
        pending = bool(snapshot.pending)
        partial: tuple[PartialGang, ...] = ()
        if pending:
            # On a standby too: its sentences are the leader's, and a started PodGroup's
            # waiting pods were read as a gang short of pods ("it waits for the rest
            # before any can start") while the leader placed them one by one.
            partial = partial_gangs(snapshot.pending, view.pods, c.scheduler_name, busy)
            snapshot = remainders(snapshot, partial)
        if leader and pending:
            decisions = engine.schedule(snapshot, policy)
            repair = plan(partial, decisions)
            decisions = without_undone(decisions, repair)
        else:
            # Nothing to place (or not the leader): only the shares, and those at most
            # once per cycle_seconds, since they are only reported. A standby's pending
            # jobs get the engine's sentences on first read: any replica answers
            # ExplainPending (the chart's Service), and a standby's answer was "no
            # scheduling decision yet" for every waiting pod.
            decisions = Decisions(
                shares=self._shares(snapshot, policy, started),
                explanations=standby_explanations(snapshot, policy, partial) if pending else None,
            )
        decided = time.monotonic()
        self.metrics.engine_seconds.observe(decided - viewed)
        running_phase = frozenset(
            uid for uid, pod in view.pods.items() if pod.phase == "Running" and pod.assigned
        )
        with self._lock:  # writers only (set_policy); readers never take it
            self._published = self._published.next(
                snapshot,
                policy,
                decisions,
                running_phase,
                rejected(view, policy),
                sentences_on_request=not leader,
            )
        if decisions.binds or decisions.preemptions:
            self._shares_at = (decided, policy)
        carried_out = leader and not self.stop_event.is_set()
        if carried_out:
            self._repair(repair, view)
            self._carry_out(view, decisions, repair.replacing)
        if self.policy_object is not None:
            self.policy_object.publish(decisions.shares, leader and not self.stop_event.is_set())
        bound = bound_by_member(snapshot, decisions) if carried_out else None
        self.usage.held(allocated_by_member(snapshot, bound))
        if leader:
            self.usage.maybe_write(now)
        self.cycles += 1
        done = time.monotonic()
        self.metrics.cycle_seconds.observe(done - started)
        self._read_wait_meter(done)
        log.debug(
            "cycle %d: %d pods, %d pending jobs, %d binds, %d preemptions; "
            "view %.0f ms, engine %.0f ms, hand-off %.0f ms",
            self.cycles,
            len(view.pods),
            len(snapshot.pending),
            len(decisions.binds),
            len(decisions.preemptions),
            (viewed - started) * 1000,
            (decided - viewed) * 1000,
            (done - decided) * 1000,
        )
        return decisions

    def _read_wait_meter(self, now: float) -> None:
        every = self.config.owed_read_seconds
        if every <= 0 or now - self._meter_read_at < every:
            return
        self._meter_read_at = now
        try:
            self.metrics.read()
        except Exception:
            # Only gauges depend on it; the next scrape tries again and shows the error.
            log.exception("wait meter reading failed")

    def _repair(self, repair: Repair, view: CacheView) -> None:
        """Gangs found partly bound: events for the ones the cycle's binds finish, the
        bound pods of the others deleted."""
        for gang in repair.finish:
            self.metrics.gang_repairs.labels("finished").inc()
            log.warning("%s: binding the rest as planned", gang.describe())
            for uid in gang.pending:
                pod = view.pods.get(uid)
                if pod is not None:
                    self.recorder.record(
                        _ref(pod),
                        "Normal",
                        "GangBindFinished",
                        f"{gang.describe()}; this pod is bound with the rest of the gang "
                        "where the engine placed it",
                    )
        for gang in repair.undo:
            if self.binder.undo_partial(gang):
                self.metrics.gang_repairs.labels("undone").inc()

    def _shares(self, snapshot: Snapshot, policy: Policy, now: float) -> tuple[MemberShare, ...]:
        at, for_policy = self._shares_at
        previous = self.last_decisions().shares
        if previous and for_policy is policy and now - at < self.config.cycle_seconds:
            return previous
        self._shares_at = (now, policy)
        return engine.compute_shares(snapshot, policy)

    def _carry_out(
        self, view: CacheView, decisions: Decisions, replacing: AbstractSet[str] = frozenset()
    ) -> None:
        """`replacing`: job ids of gangs whose pending pods replace pods of a gang that
        ran whole (`gang_repair`)."""
        snapshot = view.snapshot
        by_job: dict[str, list[Bind]] = {}
        for bind in decisions.binds:
            by_job.setdefault(bind.job_id, []).append(bind)
        bound_jobs: set[str] = set()
        for job_id, binds in by_job.items():
            pods = [view.pods.get(b.pod_uid) for b in binds]
            if any(p is None or p.deleting for p in pods):
                # All or none: a gang member vanished between snapshot and bind.
                self.metrics.attempts.labels("dropped").inc()
                continue
            placed = [(b, p) for b, p in zip(binds, pods, strict=True) if p]
            # A replacing gang's pods are not bound all or none: undone as a gang, the
            # replacements that bound would be deleted while the rest of it runs on.
            gang = job_id not in replacing and any(p.gang is not None for _, p in placed)
            self.binder.submit(placed, gang=gang)
            self.metrics.attempts.labels("scheduled").inc()
            bound_jobs.add(job_id)
            for bind, pod in placed:
                if (write := cleared_on_bind(pod, bind.node)) is not None:
                    self.nomination_writer.submit(write)
        running = {p.uid: p for p in snapshot.running}
        for preemption in decisions.preemptions:
            self._preempt(preemption, view.pods.get(preemption.pod_uid), running, view)
        for write in self.nominations.update(snapshot, decisions, bound_jobs, view.pods):
            self.nomination_writer.submit(write)
        self._explain(snapshot, decisions.explanations, view)
        for rejected in view.unschedulable:
            self.metrics.attempts.labels("error").inc()
            for pod in rejected.pods:
                self.recorder.failed_scheduling(_ref(pod), rejected.reason)

    def _preempt(
        self,
        preemption: Preemption,
        pod: PodInfo | None,
        running: Mapping[str, RunningPod],
        view: CacheView,
    ) -> None:
        if pod is None:
            return
        victim = running.get(pod.uid)
        # A pod alone is a job whose id is its uid: the victim's event names it as its
        # user knows it (a gang's id is already its namespace/name).
        reclaimer = view.pods.get(preemption.for_job)
        submitted = self.evictor.submit(
            preemption,
            pod,
            self.cache.record_of(pod),
            self.cache.job_of(pod),
            reclaimer.key if reclaimer is not None else "",
        )
        if submitted and victim is not None:
            self._victims[pod.uid] = victim

    def _explain(
        self, snapshot: Snapshot, explanations: Mapping[str, str], view: CacheView
    ) -> None:
        now = snapshot.now
        recorder = self.recorder
        post = recorder.wanted("Warning")
        waiting = 0
        for job in snapshot.pending:
            sentence = explanations.get(job.job_id)
            if sentence is None:
                continue
            waiting += 1
            if not post or now - job.submitted_at < self.config.explain_after_seconds:
                continue
            told = ""
            for pending in job.pods:
                pod = view.pods.get(pending.uid)
                if pod is not None and recorder.due(pod.uid or pod.key, sentence, now):
                    if not told:
                        # Read in the pod's namespace by its member: other members and
                        # their jobs (a reclaim's victims) hidden as ExplainPending hides
                        # them from a member. Only for events that go out: at 50,000
                        # waiting pods almost none is due.
                        told = redact_explanation(sentence, job.member)
                    recorder.record(_ref(pod), "Warning", "FailedScheduling", told)
        if waiting:
            self.metrics.attempts.labels("unschedulable").inc(waiting)

    # --- results from the binder and evictor threads ------------------------------------

    def _bound(self, result: BindResult) -> None:
        self.metrics.binds.labels(result.outcome).inc()
        self.metrics.bind_seconds.observe(result.seconds)
        if result.outcome == "bound" and result.pod.created_at:
            self.metrics.e2e_seconds.observe(max(0.0, time.time() - result.pod.created_at))

    def _evicted(self, result: EvictResult) -> None:
        p = result.preemption
        self.metrics.preemptions.labels(p.reclaimer, result.outcome, p.cause).inc()
        victim = self._victims.pop(result.pod.uid, None)
        if result.outcome != "evicted" or victim is None or victim.spec.gpus <= 0:
            return
        nodes = {n.name: n for n in self.snapshot().nodes}
        node = nodes.get(victim.node)
        # Counted at the eviction up to the end of the grace period the victim is given,
        # the instant the simulator frees its GPUs, so both count the same work as lost.
        # The preemption's own: a policy applied since it was decided does not change it.
        gone_at = time.time() + p.grace_period_seconds
        resumes = victim.checkpointable
        if resumes is None:
            resumes = self._checkpointable(victim.member)
        lost = lost_gpu_seconds(victim.spec.gpus, victim.started_at, gone_at, resumes)
        self.metrics.reclaim_lost.labels(
            victim.member or "", (node.gpu_model if node else None) or "", p.cause
        ).inc(lost)

    def _checkpointable(self, member: str | None) -> bool:
        try:
            return member is not None and self.policy().member(member).checkpointable
        except KeyError:
            return False

    def _save_usage_history(self) -> None:
        """On a clean stop: the history up to now, so the next leader loses nothing."""
        try:
            self.usage.advance(self.policy(), time.time())
            self.usage.maybe_write(time.time(), force=True)
        except Exception:
            log.exception("usage history not saved on stop")

    def _metrics_state(self) -> State:
        published = self._published
        return State(
            snapshot=published.snapshot if published.version else None,
            decisions=published.decisions,
            leader=self.is_leader,
            running_phase=published.running_phase,
            policy=published.policy,
            version=published.version,
            refused=self.evictor.refused(),
        )


class _PolicySink:
    """Receives the policy ConfigMap from its informer."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def replace(self, kind: str, objects: list[Obj]) -> None:
        for obj in objects:
            self.daemon._policy_from_configmap(obj)

    def apply(self, kind: str, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            log.warning("policy ConfigMap deleted; the running policy stays")
            return
        self.daemon._policy_from_configmap(obj)


def _cluster_lister(custom: client.CustomObjectsApi, served: OwnerKind) -> Any:
    """The list (and watch) call of one API resource across namespaces, as JSON."""

    def list_objects(**kwargs: Any) -> Any:
        return custom.list_cluster_custom_object(
            served.group, served.version, served.plural, **kwargs
        )

    # kubernetes.watch reads the return type from the docstring.
    list_objects.__doc__ = ":return: object"
    return list_objects


def rejected(view: CacheView, policy: Policy) -> tuple[Rejected, ...]:
    """The view's pods the engine is not given, for `fairpool explain`."""
    out = []
    for job in view.unschedulable:
        if not job.pods:
            continue
        specs = [p.spec for p in job.pods if p.spec is not None]
        models = {s.gpu_model or "" for s in specs}
        out.append(
            Rejected(
                job.job_id,
                policy.member_for_namespace(job.pods[0].namespace) or "",
                job.pods[0].namespace,
                tuple(p.name for p in job.pods),
                job.reason,
                min(p.submitted for p in job.pods),
                sum(s.gpus for s in specs),
                models.pop() if len(models) == 1 else "",
            )
        )
    return tuple(out)


def standby_explanations(
    snapshot: Snapshot, policy: Policy, partial: tuple[PartialGang, ...] = ()
) -> Explanations:
    """The sentences the engine writes for the snapshot's pending jobs (the `remainders`
    of the `partial` gangs), as the leader's cycle writes them, worked out when first
    read (a standby carries out nothing: only the API reads them)."""

    def sentences() -> dict[str, str]:
        decisions = engine.schedule(snapshot, policy)
        return dict(without_undone(decisions, plan(partial, decisions)).explanations)

    return Explanations(sentences)


def _ref(pod: PodInfo) -> ObjectRef:
    return ObjectRef("Pod", pod.namespace, pod.name, pod.uid)


STRAY_NODES_SHOWN = 5
"""Nodes named per owner label in the warning; the rest are counted."""


def stray_owners_text(stray: Mapping[str, Sequence[str]]) -> str:
    """The warning for GPU nodes whose owner label names no member ("" when none do)."""
    parts = []
    for owner in sorted(stray):
        names = sorted(stray[owner])
        shown = ", ".join(names[:STRAY_NODES_SHOWN])
        if len(names) > STRAY_NODES_SHOWN:
            shown += f" and {len(names) - STRAY_NODES_SHOWN} more"
        parts.append(f"owner label {owner!r} on {len(names)} GPU node(s) ({shown})")
    if not parts:
        return ""
    return (
        f"{'; '.join(parts)} names no member of the policy: those nodes are unowned, their "
        "GPUs nobody's contribution or entitlement; correct the fairpool.io/owner label "
        "(or add the member to the policy)"
    )
