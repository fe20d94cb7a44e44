"""The evictor: carries out the engine's `Preemption` decisions through the Eviction API.

Before the eviction the victim is annotated with who reclaimed it, why, and the engine's
cause of it: an owner taking back its entitlement, a member below its fair share, a
consolidation, or an older job of its own member taking back what it overtook
(`fairpool.io/preempted-by`, `fairpool.io/preemption-reason`,
`fairpool.io/preemption-cause`), so the reason survives on
the pod object through its grace period and in its final state, and with its job's
reclaim count plus one and the time (`fairpool.io/reclaims`, `fairpool.io/reclaimed-at`,
read back into the engine's snapshot). The annotations are written on this very pod (its
uid as a precondition, `annotation_patch`), as the eviction is.
The Eviction API honours PodDisruptionBudgets: `429 Too Many Requests` whose Status names
a `DisruptionBudget` cause means a budget forbids it now (`blocked`), so the victim is
retried later (`retry_seconds`), never deleted around the
budget. A 409 means the pod was replaced (its uid precondition failed) only when it says
so; otherwise the budget's status could not be updated (the API server's retries of it
all conflicted) and the victim is retried later too. A refused eviction (429, or another
4xx) is no reclaim: the annotations written
before it are put back as they were (`restored_annotations`); after a 5xx or no answer at
all, the pod says whether the eviction went through (`_unclear`). The annotations are
also put back after their own patch got no answer or a 5xx, which may follow a patch
the server applied. Left in place, the
annotations of each refusal added one to the job's reclaim count, and after
`maxReclaimsPerJob` refusals a job never reclaimed was never a victim again, keeping the
owner out of its node for the job's whole run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from scheduler.engine.decisions import Preemption
from scheduler.k8s import labels as L
from scheduler.k8s.client import read_body, status_details, status_message
from scheduler.k8s.events import EventRecorder, EventType, ObjectRef
from scheduler.k8s.objects import PodInfo, reclaim_timestamp
from scheduler.k8s.owners import OWNER_KINDS, RECLAIM_RECORD_KEYS, Owner
from scheduler.k8s.redaction import ANOTHER_MEMBER, redact_explanation

log = logging.getLogger(__name__)

EvictOutcome = Literal["evicted", "blocked", "gone", "failed"]
EVICTED_MEMORY_S = 600.0
"""How long an evicted pod is not evicted again: far longer than the watch takes to show
it terminating (then the engine never preempts it again)."""
REFUSED_MEMORY_S = 300.0
"""How long a refused eviction counts as refused without another attempt."""


@dataclass(frozen=True, slots=True)
class EvictResult:
    preemption: Preemption
    pod: PodInfo
    outcome: EvictOutcome
    detail: str


def eviction_body(preemption: Preemption, pod: PodInfo) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod.name, "namespace": pod.namespace},
        "deleteOptions": {
            "gracePeriodSeconds": preemption.grace_period_seconds,
            "preconditions": {"uid": pod.uid},
        },
    }


def victim_reason(preemption: Preemption) -> str:
    """The preemption's reason as the victim's member reads it, on its pod in its
    namespace: the other members and their jobs hidden as the FailedScheduling events
    hide them (a pod of no member reads no member's name)."""
    return redact_explanation(preemption.reason, preemption.victim_member or "")


def victim_reclaimer(preemption: Preemption) -> str:
    """Who preempts, as the victim's member reads it: its own member by name, any other
    as "another member" (as `victim_reason` says it). The annotation named the other
    member while the reason beside it hid it."""
    own = preemption.reclaimer == preemption.victim_member
    return preemption.reclaimer if own else ANOTHER_MEMBER


def victim_annotations(preemption: Preemption, pod: PodInfo, now: float) -> dict[str, str]:
    """What the victim carries through its eviction; `now` (seconds since the epoch) is
    when its job is reclaimed."""
    return {
        L.PREEMPTED_BY_ANNOTATION: victim_reclaimer(preemption),
        L.PREEMPTION_REASON_ANNOTATION: victim_reason(preemption),
        L.PREEMPTION_CAUSE_ANNOTATION: preemption.cause,
        L.RECLAIMS_ANNOTATION: str(pod.reclaims + 1),
        L.RECLAIMED_AT_ANNOTATION: reclaim_timestamp(now),
    }


def restored_annotations(pod: PodInfo) -> dict[str, str | None]:
    """The victim annotations as they were before `victim_annotations` (as a JSON merge
    patch: None removes one the pod did not carry)."""
    keys = (
        L.PREEMPTED_BY_ANNOTATION,
        L.PREEMPTION_REASON_ANNOTATION,
        L.PREEMPTION_CAUSE_ANNOTATION,
        L.RECLAIMS_ANNOTATION,
        L.RECLAIMED_AT_ANNOTATION,
    )
    return {key: pod.annotations.get(key) for key in keys}


def annotation_patch(pod: PodInfo, annotations: Mapping[str, str | None]) -> dict[str, Any]:
    """A merge patch of the pod's annotations, for this very pod: the API server refuses
    it (422: the uid cannot change) when the pod was replaced by another of the same name
    (a StatefulSet's), which would otherwise carry a reclaim count it never earned."""
    return {"metadata": {"uid": pod.uid, "annotations": dict(annotations)}}


def event_text(
    preemption: Preemption, job: Owner | None = None, for_job: str = ""
) -> tuple[EventType, str, str]:
    """The victim's event: its type, its reason (`Preempted` for a reclaim, `Consolidated`
    for a move) and message. `for_job`: how to name the job the GPUs go to (a pod alone
    by namespace/name: its job id is its uid), else its id. `job`: the batch Job that
    controls the pod; one that counts the eviction as a failure (`Owner.eviction_fails`)
    turns the event into a Warning that says so, since the Job may fail for good where
    the user expected its work to wait and run again. Read by the victim's member, it
    names another member and its job as `victim_reason` does."""
    grace = f"(grace period {preemption.grace_period_seconds}s)"
    why = f"{victim_reason(preemption)} {grace}"
    for_job = for_job or preemption.for_job
    by = victim_reclaimer(preemption)
    own = by == preemption.reclaimer
    if preemption.cause == "consolidation":
        whose = f"job {for_job} of member {by}" if own else f"a job of {by}"
        reason, text = ("Consolidated", f"Moved for consolidation, for {whose}: {why}")
    else:
        whom = f"member {by} for job {for_job}" if own else f"{by} for a job of {by}"
        reason, text = ("Preempted", f"Preempted by {whom}: {why}")
    if job is None or job.eviction_fails is None:
        return "Normal", reason, text
    return (
        "Warning",
        reason,
        f"{text}; Job {job.name} counts this eviction as a failed pod, against its "
        f"backoffLimit of {job.eviction_fails}: give it a podFailurePolicy rule with "
        "action Ignore on the condition DisruptionTarget so that a reclaim puts its work "
        'back in the queue (docs/policy.md, "Workloads a reclaim puts back in the queue")',
    )


class Evictor:
    def __init__(
        self,
        api: client.ApiClient,
        recorder: EventRecorder | None = None,
        workers: int = 4,
        retry_seconds: float = 5.0,
        on_result: Callable[[EvictResult], None] | None = None,
        may_evict: Callable[[], bool] | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self._custom = client.CustomObjectsApi(api)
        self.may_evict = may_evict
        """Asked before each victim's annotation patch and again before its Eviction: a
        replica that lost the lease evicts nothing more."""
        self.recorder = recorder
        self.retry_seconds = retry_seconds
        self.on_result = on_result
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="evictor")
        self._lock = threading.Lock()
        self._in_flight: set[str] = set()
        self._not_before: dict[str, float] = {}
        """uid -> earliest next attempt (after a PDB refusal or once evicted)."""
        self._kept_at_prune = 0
        self._refused: dict[str, float] = {}
        """uid -> when a PodDisruptionBudget last refused its eviction (monotonic)."""

    def submit(
        self,
        preemption: Preemption,
        pod: PodInfo,
        record: Owner | None = None,
        job: Owner | None = None,
        for_job: str = "",
    ) -> bool:
        """Evict the victim unless it is already going or was tried too recently;
        `record`: the object that keeps its job's reclaim record (`owners.record_owner`);
        `job`: the batch Job that controls it, `for_job`: the name of the job the GPUs go
        to (`event_text`)."""
        if pod.deleting:
            return False
        now = time.monotonic()
        with self._lock:
            if pod.uid in self._in_flight or self._not_before.get(pod.uid, 0.0) > now:
                return False
            self._in_flight.add(pod.uid)
            if len(self._not_before) > 2 * self._kept_at_prune + 1024:
                # Past entries hold nothing back: dropped once the table doubled.
                self._not_before = {u: t for u, t in self._not_before.items() if t > now}
                self._kept_at_prune = len(self._not_before)
        self._pool.submit(self._evict, preemption, pod, record, job, for_job)
        return True

    def refused(self) -> frozenset[str]:
        """The pods whose latest eviction a PodDisruptionBudget refused, within
        `REFUSED_MEMORY_S`: the owner's wait meter names the budget as what holds its
        node (`waiting.BUDGET_CAUSE`). Older refusals are forgotten: a victim refused
        again is tried every `retry_seconds`, so one not tried for that long is no
        longer decided."""
        now = time.monotonic()
        with self._lock:
            for uid in [u for u, at in self._refused.items() if now - at > REFUSED_MEMORY_S]:
                del self._refused[uid]
            return frozenset(self._refused)

    def wait_idle(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._in_flight:
                    return
            time.sleep(0.05)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _evict(
        self,
        preemption: Preemption,
        pod: PodInfo,
        record: Owner | None = None,
        job: Owner | None = None,
        for_job: str = "",
    ) -> None:
        try:
            outcome, detail = self._attempt(preemption, pod, record)
        except Exception as exc:
            outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._in_flight.discard(pod.uid)
            if outcome in ("blocked", "failed"):
                self._not_before[pod.uid] = time.monotonic() + self.retry_seconds
            elif outcome == "evicted":
                # The pod now terminates: the engine sees it so and never preempts it
                # again; until the watch says so, it is not evicted twice.
                self._not_before[pod.uid] = time.monotonic() + EVICTED_MEMORY_S
            if outcome == "blocked":
                self._refused[pod.uid] = time.monotonic()
            else:
                self._refused.pop(pod.uid, None)
        ref = ObjectRef("Pod", pod.namespace, pod.name, pod.uid)
        if outcome == "evicted" and self.recorder is not None:
            self.recorder.record(ref, *event_text(preemption, job, for_job))
        elif outcome == "blocked":
            log.info("eviction of %s blocked: %s", pod.key, detail)
        elif outcome == "failed":
            log.warning("eviction of %s failed: %s", pod.key, detail)
        if self.on_result is not None:
            self.on_result(EvictResult(preemption, pod, outcome, detail))

    def _attempt(
        self, preemption: Preemption, pod: PodInfo, record: Owner | None
    ) -> tuple[EvictOutcome, str]:
        if self.may_evict is not None and not self.may_evict():
            return "gone", "not the leader any more; the new leader decides"
        annotations = victim_annotations(preemption, pod, time.time())
        try:
            self._annotate(pod, annotations)
        except ApiException as exc:
            if exc.status == 404:
                return "gone", "pod already gone"
            if exc.status in (409, 422) and _replaced(exc):
                return "gone", "pod replaced"
            if exc.status is not None and exc.status < 500:  # refused: nothing to undo
                return "failed", f"{exc.status} {exc.reason}"
            # A 5xx may follow a patch that was applied (a timeout behind the server).
            return "failed", f"{exc.status} {exc.reason}{self._restore(pod)}"
        except Exception as exc:  # no answer: the patch may have been applied
            return "failed", f"{type(exc).__name__}: {exc}{self._restore(pod)}"
        if self.may_evict is not None and not self.may_evict():
            # The lease was lost while the patch was on its way (it may take up to its
            # read timeout): the new leader decides, and what was written is undone.
            return "gone", "not the leader any more; the new leader decides" + self._restore(pod)
        try:
            read_body(
                self._core.create_namespaced_pod_eviction(
                    pod.name,
                    pod.namespace,
                    eviction_body(preemption, pod),  # type: ignore[arg-type]
                    _preload_content=False,
                    _request_timeout=(5, 30),
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return "gone", "pod already gone"
            if exc.status == 409 and "precondition" in status_message(exc).lower():
                return "gone", "pod replaced"
            if exc.status == 409:
                # The budget's status update conflicted on every retry of the API server:
                # nothing was evicted, and the next attempt may go through.
                return "failed", f"409 {status_message(exc)}{self._restore(pod)}"
            budget = budget_refusal(exc)
            if budget is not None:
                return "blocked", f"a PodDisruptionBudget forbids the eviction now: {budget}" + (
                    self._restore(pod)
                )
            if exc.status == 429:
                # API Priority and Fairness sheds load: no budget is involved, and the
                # owner's wait is not the budget's.
                return "failed", f"429 {status_message(exc)}{self._restore(pod)}"
            if exc.status is not None and exc.status < 500:  # refused: nothing was evicted
                return "failed", f"{exc.status} {exc.reason}{self._restore(pod)}"
            # A 5xx refuses for good (a pod under two budgets gets 500) or may follow an
            # eviction that went through (a timeout): the pod says which.
            outcome, detail = self._unclear(pod, f"{exc.status} {status_message(exc)}")
        except Exception as exc:  # no answer: the eviction may or may not have happened
            outcome, detail = self._unclear(pod, f"{type(exc).__name__}: {exc}")
        else:
            outcome, detail = "evicted", "evicted"
        if outcome == "evicted" and record is not None:
            detail += self._keep_record(record, annotations)
        return outcome, detail

    def _keep_record(self, record: Owner, annotations: Mapping[str, str]) -> str:
        """Write the job's reclaim count and time on the object that recreates its pods,
        once the eviction went through (a refused one is no reclaim); "" when done, else
        why not (the new pods then count from their own annotations: none)."""
        kind = next((k for k in OWNER_KINDS if k.kind == record.kind), None)
        if kind is None:
            return ""
        body = {
            "metadata": {
                "uid": record.uid,  # this very object, not a new one of the same name
                "annotations": {k: annotations[k] for k in RECLAIM_RECORD_KEYS},
            }
        }
        try:
            self._custom.patch_namespaced_custom_object(
                kind.group,
                kind.version,
                record.namespace,
                kind.plural,
                record.name,
                body,
                _request_timeout=(5, 30),
            )
        except ApiException as exc:
            why = f"{exc.status} {exc.reason}"
        except Exception as exc:  # no answer
            why = f"{type(exc).__name__}: {exc}"
        else:
            return ""
        where = f"{record.kind} {record.namespace}/{record.name}"
        # Logged here: an eviction that went through is not logged otherwise.
        log.warning("reclaim record of an evicted pod's job not kept on %s: %s", where, why)
        return f"; its job's reclaim record not kept on {where}: {why}"

    def _unclear(self, pod: PodInfo, what: str) -> tuple[EvictOutcome, str]:
        """After an answer that does not say whether the eviction went through: evicted
        when the pod now terminates, else failed, its annotations put back (left as they
        are when the pod cannot be read)."""
        try:
            current = self._core.read_namespaced_pod(
                pod.name, pod.namespace, _request_timeout=(5, 30)
            )
        except ApiException as exc:
            if exc.status == 404:
                return "gone", "pod already gone"
            return "failed", f"{what}; the pod could not be read: {exc.status} {exc.reason}"
        except Exception as exc:
            return "failed", f"{what}; the pod could not be read: {type(exc).__name__}: {exc}"
        meta = current.metadata
        if meta is None or meta.uid != pod.uid:
            return "gone", "pod replaced"
        if meta.deletion_timestamp is not None:
            return "evicted", f"evicted ({what}, yet the pod terminates)"
        return "failed", what + self._restore(pod)

    def _annotate(self, pod: PodInfo, annotations: Mapping[str, str | None]) -> None:
        read_body(
            self._core.patch_namespaced_pod(
                pod.name,
                pod.namespace,
                annotation_patch(pod, annotations),
                _preload_content=False,
                _request_timeout=(5, 30),
            )
        )

    def _restore(self, pod: PodInfo) -> str:
        """Put the victim's annotations back after a refused eviction; "" when done, else
        why not (the count then stays one too high until the pod is evicted or gone)."""
        try:
            self._annotate(pod, restored_annotations(pod))
        except Exception as exc:  # the API server restarts: logged with the refusal
            return f"; its reclaim annotations could not be put back: {exc}"
        return ""


def budget_refusal(exc: ApiException) -> str | None:
    """What a PodDisruptionBudget's refusal of an eviction says (the message of its
    `DisruptionBudget` cause), None when the refusal names no budget."""
    if exc.status is None or not 400 <= exc.status < 500:
        return None
    for cause in status_details(exc).get("causes") or ():
        if isinstance(cause, dict) and cause.get("type") == "DisruptionBudget":
            return str(cause.get("message") or status_message(exc))
    message = status_message(exc)
    # API servers before Kubernetes 1.26 name no cause, only the budget in the message.
    return message if "disruption budget" in message.lower() else None


def _replaced(exc: ApiException) -> bool:
    """The patch was refused for the uid it carries: the pod of that name is another."""
    return "uid" in str(exc.body or "").lower()
