"""Which pending jobs can never run as the cluster and policy stand, whatever the load
(glossary: "can never run").

A job can never run when no node, even empty, takes one of its pods (its selectors,
tolerations or size), or when its member may never hold all of it at once: more GPUs
than its `maxGpus`; with borrowing off, more than its entitlement of any model it may
use; or more than its own and unowned nodes plus what the other owners may lend under
their `lendingLimit`, on the nodes of one GPU model (`reach`). For a gang whose pods
differ in size that is an upper bound (`reach.gang_never_detail`): a gang asking for more
never runs; one within it may still never fit, but is never wrongly left out of demand. A
node added or a limit raised changes the answer: the next cycle looks again.

The share book leaves such a job out of its member's demand: counted, it would raise
the member's fair share by GPUs it can never use, lower every other member's, and make
the member's nodes look wanted. The cycle gives it its turn before every other job (as
the head of its member's queue it would set the member's place in the order by a
position on its own GPU model), holds no nominated capacity for it, and waits it with
the reason, without a what-if: it changes no other decision.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.model import Policy
from scheduler.engine.entitlement import MemberModel
from scheduler.engine.jobinfo import JobInfo, required_pods
from scheduler.engine.placement import ClusterState, pods_when_empty, spec_res
from scheduler.engine.reach import gang_never_detail, most_subset
from scheduler.engine.snapshot import PodSpec
from scheduler.engine.terms import terms_of


class NeverRuns:
    """The answers for one snapshot's nodes and one policy, kept per job shape (and
    member, where that matters). A plain class: see `scheduler.engine.jobinfo.JobInfo`."""

    __slots__ = (
        "borrowing",
        "entitlement",
        "found",
        "lenders",
        "max_gpus",
        "models",
        "models_of_shape",
        "never",
        "never_pods",
        "never_reached",
        "over_limit",
        "state",
    )

    def __init__(
        self,
        state: ClusterState,
        policy: Policy,
        entitlement: Mapping[MemberModel, int],
        models: list[str],
        like: NeverRuns | None = None,
    ) -> None:
        """`like`: answers for another snapshot of the same nodes, policy and shape
        numbers (`jobinfo.shapes_generation`), whose tables per shape this one shares
        (they only ever gain the same answers); `found` stays each one's own, as the
        daemon's API threads build share books too."""
        self.state = state
        terms = terms_of(policy)
        self.lenders = terms.lenders
        self.borrowing = terms.borrowing
        self.entitlement = entitlement
        self.models = models
        self.max_gpus = terms.max_gpus
        self.never: dict[int, bool] = {} if like is None else like.never
        """Shape -> `placement`, when that does not depend on the member (no lending
        limit, or a pod no node takes)."""
        self.never_pods: dict[int, bool] = {} if like is None else like.never_pods
        """Shape -> a pod of it fits no node, even empty."""
        self.never_reached: dict[tuple[int, str], str] = {} if like is None else like.never_reached
        """(shape, member) -> `reached`."""
        self.over_limit: dict[tuple[int, str], bool] = {} if like is None else like.over_limit
        """(shape, member) -> `limits`."""
        self.models_of_shape: dict[int, list[str]] = {} if like is None else like.models_of_shape
        """Shape -> `reachable_models`."""
        self.found = False
        """Some job asked about could never run. The share book asks about every pending
        job first, so while this is False the cycle need not ask again (most cycles)."""

    def asked(self, info: JobInfo) -> bool:
        """The job can never run (for the share book: left out of demand). A method, not
        `__call__`: the compiled engine calls a method directly, a callable object through
        Python's call protocol, and the share book asks about every pending job."""
        if info.gpus <= 0:
            return False
        if self.max_gpus or not self.borrowing:
            key = (info.sid, info.job.member)
            over = self.over_limit.get(key)
            if over is None:
                over = self.over_limit[key] = self.limits(info)
            if over:
                self.found = True
                return True
        never = self.placement(info)
        if never:
            self.found = True
        return never

    def known(self, info: JobInfo) -> bool:
        """`asked` for the cycle: asked only when the share book, which asks about every
        pending job first, found some job that can never run (most cycles find none)."""
        return self.found and self.asked(info)

    def reachable_models(self, info: JobInfo) -> list[str]:
        """The GPU models, by name, on whose nodes every pod of the job is admitted
        (selectors, hostname, affinity, tolerations; not size): a job pinned to a node by
        its hostname reaches only that node's model, one whose affinity names two models
        only those. Empty when no model admits them all."""
        shape = info.sid
        found = self.models_of_shape.get(shape)
        if found is None:
            state = self.state
            common: set[str] | None = None
            for pod in info.job.pods:
                have = {state.model[i] for i in state.candidate_nodes(pod.spec)}
                common = have if common is None else common & have
                if not common:
                    break
            found = self.models_of_shape[shape] = sorted(common or ())
        return found

    def limits(self, info: JobInfo) -> bool:
        """More GPUs than its member's `maxGpus`, or, with borrowing off, than the member's
        entitlement of every model the job may use."""
        member = info.job.member
        most = self.max_gpus.get(member)
        if most is not None and info.gpus > most:
            return True
        if self.borrowing:
            return False
        explicit = info.explicit_model
        options = [explicit] if explicit is not None else self.models
        return all(info.gpus > self.entitlement.get((member, m), 0) for m in options)

    def placement(self, info: JobInfo) -> bool:
        """No node, even empty, could ever take one of the job's pods, or its member may
        never hold all of them at once (`reached`). Placement, reclaim and moves could
        then never start it: placement and reclaim's what-if see at most the nodes'
        whole capacity and what owners may lend under their lendingLimit."""
        shape = info.sid
        never = self.never.get(shape)
        if never is None:
            pod_never = False
            state = self.state
            for pod in info.job.pods:
                res = spec_res(pod.spec)
                if not any(state.room_when_empty(i, res) for i in state.candidate_nodes(pod.spec)):
                    pod_never = True
                    break
            self.never_pods[shape] = never = pod_never
            if not never and not self.lenders:
                # No lending limit: what a member may hold does not depend on which it is.
                never = bool(self.reached(info))
            self.never[shape] = never
        if never or not self.lenders:
            return never
        return bool(self.reached(info))

    def reached(self, info: JobInfo) -> str:
        """`reach.never_detail` for a job whose pods all ask the same, or
        `reach.gang_never_detail` for one whose pods differ ("" when its member may hold
        them all at once)."""
        job = info.job
        key = (info.sid, job.member)
        found = self.never_reached.get(key)
        if found is None:
            found = ""
            pods, state = required_pods(job), self.state
            spec = pods[0].spec if pods else None
            if spec is not None:
                same = state.key(spec)
                if all(state.key(p.spec) == same for p in pods):
                    if spec.gpus > 0:
                        found = state.never_held(
                            spec, len(pods), job.member, info.explicit_model, tuple(self.lenders)
                        )
                else:
                    found = gang_never_detail(
                        job.member,
                        [p.spec.gpus for p in pods],
                        info.explicit_model,
                        self._held_when_empty(info),
                        dict(self.lenders),
                    )
            self.never_reached[key] = found
        return found

    def _held_when_empty(self, info: JobInfo) -> dict[tuple[str, str], int]:
        """(GPU model, owner or "") -> the most GPUs of the job's pods that owner's nodes of
        that model could hold if nothing ran there: per node, the pods it takes each
        alone (selectors, tolerations, size), as many as fit, at most its GPUs."""
        state = self.state
        shapes: dict[object, tuple[PodSpec, int]] = {}
        for pod in required_pods(info.job):
            k = state.key(pod.spec)
            have = shapes.get(k)
            shapes[k] = (pod.spec, 1 if have is None else have[1] + 1)
        per_node: dict[int, list[int]] = {}
        for spec, count in shapes.values():
            if spec.gpus <= 0:
                continue
            for i in state.candidate_nodes(spec):
                take = min(count, pods_when_empty(state.nodes[i], spec))
                if take > 0:
                    per_node.setdefault(i, []).extend([spec.gpus] * take)
        held: dict[tuple[str, str], int] = {}
        for i, sizes in per_node.items():
            n = state.nodes[i]
            where = (state.model[i], n.owner or "")
            held[where] = held.get(where, 0) + most_subset(sizes, n.gpus)
        return held
