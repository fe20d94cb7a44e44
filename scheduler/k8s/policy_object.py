"""The daemon's side of the `Policy` object (policies.fairpool.io, cluster-scoped).

An admin changes the policy with `kubectl apply -f policy.yaml`. The daemon watches the
object, and each new generation is either taken (validated, recorded in the audit
history `policy_versions` with origin "external", put in force) or refused: the API
server's schema cannot say everything (a GPU model a member purchased that the policy
does not list, a namespace claimed by two members...), so an invalid generation gets a
`Ready=False` condition and a `PolicyRefused` Warning event on the object, and the
version in force stays. The gRPC ApplyPolicy writes the same object through the same
policy store, so both paths share one audit history.

The leader writes the object's status: the version in force, the generation it came
from, the latest generation looked at, the `Ready` condition, and each member's
entitlement, fair share and allocation per GPU model (at most every `status_seconds`
when only those move). A standby keeps the policy in force but writes nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from policies.crd import GROUP, PLURAL, READY, VERSION, Condition, MemberStatus, PolicyStatus
from policies.crd import GPUModelShare as GPUModelShareStatus
from policies.errors import InputError, PolicyError
from policies.kubectl import LAST_APPLIED, dropped_nulls
from policies.loader import parse_policy
from policies.model import Policy
from scheduler.api.policy_store import (
    PolicyObjectSource,
    PolicyStore,
    object_document,
)
from scheduler.engine.decisions import MemberShare
from scheduler.k8s.events import EventRecorder, EventType, ObjectRef
from scheduler.k8s.informer import Informer
from scheduler.k8s.objects import Obj

if TYPE_CHECKING:
    from scheduler.api.policy_audit import AuditLog

log = logging.getLogger(__name__)

IN_FORCE = "PolicyInForce"
REFUSED = "PolicyRefused"
PENDING = "PolicyPending"
"""A generation not taken yet since something it needs did not answer (the ledger's audit
history, the API server): neither in force nor refused, and tried again."""
RETRY_SECONDS = 5.0
_EVENT_TTL_SECONDS = 30.0
"""A standby drops an event it could not post for longer than this (the leader posts it)."""


def member_statuses(policy: Policy, shares: tuple[MemberShare, ...]) -> list[MemberStatus]:
    """Each member of `policy` (in policy order) with its share per GPU model."""
    by_member: dict[str, list[GPUModelShareStatus]] = {m: [] for m in policy.member_names()}
    for share in sorted(shares, key=lambda s: (s.member, s.gpu_model)):
        if share.member in by_member:
            by_member[share.member].append(
                GPUModelShareStatus(
                    name=share.gpu_model,
                    entitlement=share.entitlement,
                    fair_share=round(share.fair_share, 3),
                    allocated=share.allocated,
                )
            )
    return [MemberStatus(name=name, gpu_models=models) for name, models in by_member.items()]


class PolicyObject:
    """Takes each generation of the Policy object into the policy store, or refuses it;
    keeps the object's status. The informer's sink."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        audit: AuditLog,
        on_change: Callable[[Policy], None],
        recorder: EventRecorder,
        on_result: Callable[[str], None] = lambda _result: None,
        status_seconds: float = 10.0,
        price_gaps: Callable[[Policy], str] = lambda _policy: "",
    ) -> None:
        self.name = name
        self._price_gaps = price_gaps
        """Why a policy cannot bill the cluster's nodes ("" when it can)."""
        self._custom = client.CustomObjectsApi(api)
        self.source = PolicyObjectSource(self._custom, name)
        self.audit = audit
        self.store: PolicyStore | None = None
        self._on_change = on_change
        self._recorder = recorder
        self._on_result = on_result
        self.status_seconds = status_seconds
        self._lock = threading.Lock()
        self._uid = ""
        self._observed = 0
        self._in_force = 0
        self._refusal = ""
        self._event: tuple[float, EventType, str, str] | None = None
        self._transitions: dict[str, str] = {}
        self._written: dict[str, Any] | None = None
        self._written_at = 0.0
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="policy-status")
        self._writing = False
        self._observed_applied = ""
        self._pending = False
        """The latest generation failed to be taken for a reason that passes (a database
        or the API server not answering): `_retry` looks at it again."""
        self._retry_timer: threading.Timer | None = None
        self._closed = False

    def informer(self, stop: threading.Event, **options: Any) -> Informer:
        custom = self._custom

        def list_policies(**kwargs: Any) -> Any:
            return custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, **kwargs)

        list_policies.__doc__ = ":return: object"  # the watch streams dicts of this function
        return Informer(
            "policy",
            list_policies,
            self,
            stop,
            field_selector=f"metadata.name={self.name}",
            **options,
        )

    # --- the informer's sink ------------------------------------------------------------

    def replace(self, kind: str, objects: list[Obj]) -> None:
        if not objects:
            log.warning("no Policy object %r; the policy in force (if any) stays", self.name)
        for obj in objects:
            self.observe(obj)

    def apply(self, kind: str, event_type: str, obj: Obj) -> None:
        if event_type == "DELETED":
            log.warning("Policy object %r deleted; the policy in force stays", self.name)
            with self._lock:
                self._uid, self._written = "", None
            return
        self.observe(obj)

    def observe(self, obj: Obj, again: bool = False) -> None:
        """One state of the object from the watch: a new generation is taken or refused;
        a status-only change (our own write) changes nothing. `again`: the same
        generation once more, after it could not be taken (`_retry`)."""
        meta = obj.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        uid = str(meta.get("uid", ""))
        # A `kubectl apply` that only sets a field to null changes no generation (kubectl
        # removed the field, which was not there), only its last-applied annotation.
        applied = str((meta.get("annotations") or {}).get(LAST_APPLIED, ""))
        with self._lock:
            same = (
                uid == self._uid
                and generation == self._observed
                and applied == self._observed_applied
            )
            if again and not (same and self._pending):
                return  # a newer generation, or the object deleted, came meanwhile
            if not again and self.store is not None and same:
                return
            if uid != self._uid:
                self._written = None  # a new object: its status is empty
            self._uid, self._observed, self._pending = uid, generation, False
            self._observed_applied = applied
        text, revision = object_document(obj)
        try:
            dropped = dropped_nulls(obj)
            if dropped:
                raise PolicyError(f"Policy {self.name}", dropped)
            gaps = self._price_gaps(parse_policy(text, f"Policy {self.name}"))
            if gaps:
                raise InputError(gaps)
            if self.store is None:
                self.store = PolicyStore(self.source, self.audit, on_change=self._on_change)
                changed = True
            else:
                changed = self.store.take(text, revision)
        except PolicyError as exc:
            # Field paths only: line numbers would count lines of a document the admin
            # never wrote (the object as the API server serves it).
            self._refuse(generation, "; ".join(f"{i.path}: {i.message}" for i in exc.issues))
            return
        except InputError as exc:
            self._refuse(generation, str(exc))
            return
        except Exception as exc:
            # Not the generation's fault: the ledger's audit history (every version is
            # recorded before it is in force) or the API server did not answer. Marked
            # as looked at, it was never taken: the watch does not deliver it again,
            # and the change was lost until the next edit of the object.
            self._hold(obj, generation, exc)
            return
        entry, policy = self.store.current()
        with self._lock:
            self._in_force, self._refusal = generation, ""
        self._on_result("applied")
        log.info(
            "Policy %s generation %d in force as version %d", self.name, generation, entry.version
        )
        if changed:
            self._queue_event(
                "Normal",
                "PolicyApplied",
                f"generation {generation} in force as policy version {entry.version} "
                f"({len(policy.members)} members)",
            )

    def _hold(self, obj: Obj, generation: int, exc: Exception) -> None:
        """Keep `generation` pending and look at it again in `RETRY_SECONDS`."""
        why = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        version = self.store.current()[0].version if self.store is not None else 0
        stays = f"version {version} stays in force" if version else "no policy in force"
        message = (
            f"generation {generation} not taken yet: {type(exc).__name__}"
            f"{': ' + why[0][:300] if why else ''} (the ledger's audit history or the API "
            f"server did not answer); {stays}; tried again every {RETRY_SECONDS:g} s"
        )
        log.error("Policy %s: %s", self.name, message)
        with self._lock:
            self._refusal, self._pending = message, True
            if self._closed:
                return
            self._retry_timer = threading.Timer(RETRY_SECONDS, self._retry, (obj,))
            self._retry_timer.daemon = True
            self._retry_timer.start()
        self._queue_event("Warning", PENDING, message)

    def _retry(self, obj: Obj) -> None:
        try:
            self.observe(obj, again=True)
        except Exception:  # a timer thread has nobody to raise to
            log.exception("Policy %s: taking the pending generation failed", self.name)

    @property
    def refusal(self) -> str:
        """Why the latest generation was refused ('' when it is in force)."""
        with self._lock:
            return self._refusal

    def _refuse(self, generation: int, reason: str) -> None:
        self._on_result("rejected")
        version = self.store.current()[0].version if self.store is not None else 0
        stays = f"version {version} stays in force" if version else "no policy in force"
        message = f"generation {generation} refused: {reason}; {stays}"
        log.error("Policy %s: %s", self.name, message)
        with self._lock:
            self._refusal = message
        self._queue_event("Warning", REFUSED, message)

    def _queue_event(self, kind: EventType, reason: str, message: str) -> None:
        with self._lock:
            self._event = (time.monotonic(), kind, reason, message)

    # --- the status, written by the leader ----------------------------------------------

    def status(self, shares: tuple[MemberShare, ...]) -> PolicyStatus:
        with self._lock:
            observed, in_force, refusal = self._observed, self._in_force, self._refusal
            pending = self._pending
        version, members, count = 0, [], 0
        if self.store is not None:
            entry, policy = self.store.current()
            version, count = entry.version, len(policy.members)
            members = member_statuses(policy, shares)
        state: Literal["True", "False"]
        if refusal:
            state, reason, message = "False", PENDING if pending else REFUSED, refusal
        elif self.store is None:
            state, reason, message = "False", REFUSED, "no valid policy yet"
        else:
            state, reason = "True", IN_FORCE
            message = f"generation {in_force} in force as policy version {version}"
        since = self._transitions.setdefault(state, _now())
        for other in ("True", "False"):
            if other != state:
                self._transitions.pop(other, None)
        ready = Condition(
            type=READY,
            status=state,
            reason=reason,
            message=message[:1024],
            observed_generation=observed,
            last_transition_time=since,
        )
        return PolicyStatus(
            version=version,
            observed_generation=observed,
            generation_in_force=in_force,
            member_count=count,
            members=members,
            conditions=[ready],
        )

    def publish(self, shares: tuple[MemberShare, ...], leader: bool) -> None:
        """Called once per scheduling cycle: on the leader, post the pending event and
        write the status when it changed (when only the shares moved, at most every
        `status_seconds`); on a standby, drop events the leader has posted by now."""
        now = time.monotonic()
        with self._lock:
            event, uid = self._event, self._uid
            if event is not None and (leader or now - event[0] > _EVENT_TTL_SECONDS):
                self._event = None
        if not leader or not uid:
            return
        if event is not None:
            ref = ObjectRef("Policy", "", self.name, uid, api_version=f"{GROUP}/{VERSION}")
            self._recorder.record(ref, event[1], event[2], event[3])
        status = self.status(shares).model_dump(mode="json", by_alias=True)
        with self._lock:
            written, busy = self._written, self._writing
            if busy or status == written:
                return
            recent = now - self._written_at < self.status_seconds
            if written is not None and recent and _same_but_shares(status, written):
                return
            self._writing = True
        self._writer.submit(self._write, status, uid)

    def _write(self, status: dict[str, Any], uid: str) -> None:
        try:
            # With a timeout: a write that hangs (a half-open connection) would leave
            # `_writing` set, and the status would never be written again.
            self._custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, self.name, {"status": status}, _request_timeout=(5, 30)
            )
            with self._lock:
                if uid == self._uid:
                    self._written, self._written_at = status, time.monotonic()
        except (ApiException, OSError) as exc:
            log.warning("Policy %s: status not written: %s", self.name, exc)
        except Exception as exc:  # connection errors from urllib3
            log.warning("Policy %s: status not written: %s", self.name, exc)
        finally:
            with self._lock:
                self._writing = False

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._retry_timer is not None:
                self._retry_timer.cancel()
        self._writer.shutdown(wait=True, cancel_futures=False)


def _same_but_shares(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return {k: v for k, v in a.items() if k != "members"} == {
        k: v for k, v in b.items() if k != "members"
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
