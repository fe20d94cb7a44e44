"""Pure conversion of Kubernetes API objects (JSON dicts as the API server sends them) to
the engine's snapshot types. No I/O: everything here is unit-tested on literal dicts.

A pod is read once per change into a `PodInfo` (policy-independent); the policy-dependent
parts (member, priority from PriorityClasses, gang grouping) are applied when a snapshot is
built, so a policy hot swap never needs a re-list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, cast

from kubernetes.utils import parse_quantity

from policies.errors import InputError
from policies.model import Policy
from scheduler.engine.snapshot import (
    Node,
    PendingJob,
    PendingPod,
    PodSpec,
    RunningPod,
    SelectorOperator,
    SelectorRequirement,
    Taint,
    TaintEffect,
    Toleration,
)
from scheduler.k8s import labels as L
from scheduler.k8s.owners import OwnerRef, controller_of, volcano_group_of

Obj = Mapping[str, Any]

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
_OPERATORS: frozenset[str] = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})
_EFFECTS: frozenset[str] = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})


class ConversionError(InputError):
    """A pod or node whose spec fairpool cannot read; the message names the field."""


# --- quantities -------------------------------------------------------------------------

MAX_QUANTITY = Decimal(2**63 - 1)


def quantity(value: object, field_path: str) -> Decimal:
    """A Kubernetes resource quantity ("500m", "64Gi", "1.5", "2e3") as a Decimal."""
    try:
        result = parse_quantity(value)
    except (ValueError, InvalidOperation, TypeError) as exc:
        raise ConversionError(f"{field_path}: not a quantity: {value!r}") from exc
    if not result.is_finite():
        # NaN raised from the comparison below, infinity when rounded to an integer.
        raise ConversionError(f"{field_path}: not a finite quantity: {value!r}")
    if result < 0:
        raise ConversionError(f"{field_path}: negative quantity {value!r}")
    if result > MAX_QUANTITY:
        # As the API server bounds a pod's quantities; a PodGroup's are free text it
        # never bounds, and "1e5000" raised at every cycle (or "1e800000" held the
        # cache for minutes) when turned into an integer.
        raise ConversionError(f"{field_path}: {value!r} is more than {MAX_QUANTITY:,}")
    return cast(Decimal, result)


def reclaim_time(text: str) -> float | None:
    """An RFC 3339 time with its UTC offset as seconds since the epoch, or None when it
    is not one (a time without an offset would depend on the reader's zone)."""
    try:
        when = _rfc3339(text.strip())
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


def reclaim_timestamp(seconds: float) -> str:
    """`reclaim_time`'s inverse, to the second, as Kubernetes writes its times."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def milli(value: object, field_path: str) -> int:
    """CPU in millicores, rounded up as the API server does ("500m" -> 500, "2" -> 2000)."""
    return _ceil(quantity(value, field_path) * 1000)


def whole(value: object, field_path: str) -> int:
    """An integer quantity: bytes, GPUs, pods ("64Gi" -> 68719476736)."""
    return _ceil(quantity(value, field_path))


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding="ROUND_CEILING"))


def timestamp(value: str | None) -> float:
    """An RFC 3339 API timestamp as float seconds since the epoch; 0.0 when unset."""
    if not value:
        return 0.0
    return _rfc3339(value).timestamp()


def _rfc3339(value: str) -> datetime:
    """An RFC 3339 time as the API writes it ("Z" for UTC, or an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- nodes ------------------------------------------------------------------------------


def node_from_api(obj: Obj) -> Node:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    labels: dict[str, str] = dict(meta.get("labels") or {})
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    allocatable = status.get("allocatable") or status.get("capacity") or {}
    where = f"node {name}: status.allocatable"
    taints = tuple(
        Taint(
            key=t.get("key", ""),
            value=t.get("value", "") or "",
            effect=_effect(t.get("effect", "NoSchedule"), f"node {name}: spec.taints"),
        )
        for t in spec.get("taints") or ()
    )
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )
    return Node(
        name=name,
        owner=labels.get(L.OWNER_LABEL) or None,
        gpu_model=labels.get(L.GPU_MODEL_LABEL) or None,
        gpus=whole(allocatable.get(L.GPU_RESOURCE, 0), f"{where}[{L.GPU_RESOURCE}]"),
        cpu_milli=milli(allocatable.get("cpu", 0), f"{where}.cpu"),
        memory_bytes=whole(allocatable.get("memory", 0), f"{where}.memory"),
        max_pods=whole(allocatable.get("pods", 110), f"{where}.pods"),
        topology_domain=labels.get(L.TOPOLOGY_LABEL) or labels.get(L.ZONE_LABEL) or None,
        labels=labels,
        taints=taints,
        ready=ready,
        unschedulable=bool(spec.get("unschedulable", False)),
    )


def _effect(value: str, where: str) -> TaintEffect:
    if value not in _EFFECTS:
        raise ConversionError(f"{where}: unknown taint effect {value!r}")
    return cast(TaintEffect, value)


# --- pods -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requests:
    gpus: int = 0
    cpu_milli: int = 0
    memory_bytes: int = 0

    def __add__(self, other: Requests) -> Requests:
        return Requests(
            self.gpus + other.gpus,
            self.cpu_milli + other.cpu_milli,
            self.memory_bytes + other.memory_bytes,
        )

    def max(self, other: Requests) -> Requests:
        return Requests(
            max(self.gpus, other.gpus),
            max(self.cpu_milli, other.cpu_milli),
            max(self.memory_bytes, other.memory_bytes),
        )


def _container_requests(container: Obj, where: str) -> Requests:
    resources = container.get("resources") or {}
    # Defaulting copies limits to unset requests; extended resources (GPUs) are often
    # given as limits only.
    values = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return Requests(
        gpus=whole(values.get(L.GPU_RESOURCE, 0), f"{where}[{L.GPU_RESOURCE}]"),
        cpu_milli=milli(values.get("cpu", 0), f"{where}.cpu"),
        memory_bytes=whole(values.get("memory", 0), f"{where}.memory"),
    )


def pod_requests(spec: Obj, pod: str = "pod") -> Requests:
    """Effective requests as kube-scheduler computes them: app containers and sidecars
    (init containers with restartPolicy Always) add up; a plain init container runs alone,
    so only the largest matters; pod-level resources (`spec.resources`) replace that sum
    for the CPU and memory they name; pod overhead adds on top."""
    total = Requests()
    for i, c in enumerate(spec.get("containers") or ()):
        total += _container_requests(c, f"{pod}: spec.containers[{i}].resources")
    init_peak = Requests()
    sidecars = Requests()
    for i, c in enumerate(spec.get("initContainers") or ()):
        r = _container_requests(c, f"{pod}: spec.initContainers[{i}].resources")
        if c.get("restartPolicy") == "Always":
            sidecars += r
        else:
            init_peak = init_peak.max(r + sidecars)
    total = (total + sidecars).max(init_peak)
    total = _pod_level(spec.get("resources"), total, f"{pod}: spec.resources")
    overhead = spec.get("overhead")
    if overhead:
        total += _container_requests({"resources": {"requests": overhead}}, f"{pod}: overhead")
    return total


def _pod_level(resources: object, total: Requests, where: str) -> Requests:
    """`total` with the CPU and memory the pod-level `spec.resources` request in place of
    its containers' (Kubernetes 1.34 serves them by default): kube-scheduler and the
    kubelet count those, and read from the containers alone, a pod asking 4 CPUs for
    the whole pod was counted as none and bound to a node without them. GPUs are no
    pod-level resource (the API server refuses them there)."""
    if not isinstance(resources, Mapping):
        return total
    # The API server defaults pod-level requests (from the limits, or the containers');
    # limits stand in for them only in an object it has not defaulted.
    values = {**(resources.get("limits") or {}), **(resources.get("requests") or {})}
    return Requests(
        gpus=total.gpus,
        cpu_milli=milli(values["cpu"], f"{where}.cpu") if "cpu" in values else total.cpu_milli,
        memory_bytes=(
            whole(values["memory"], f"{where}.memory") if "memory" in values else total.memory_bytes
        ),
    )


def _tolerations(spec: Obj, where: str) -> tuple[Toleration, ...]:
    out = []
    for i, t in enumerate(spec.get("tolerations") or ()):
        operator = t.get("operator") or "Equal"
        if operator not in ("Equal", "Exists"):
            raise ConversionError(f"{where}: spec.tolerations[{i}].operator: {operator!r}")
        out.append(
            Toleration(
                key=t.get("key") or "",
                operator=cast(Literal["Equal", "Exists"], operator),
                value=t.get("value") or "",
                effect=t.get("effect") or "",
            )
        )
    return tuple(out)


def _required_affinity(spec: Obj, where: str) -> tuple[tuple[SelectorRequirement, ...], ...]:
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = []
    for i, term in enumerate(required.get("nodeSelectorTerms") or ()):
        path = f"{where}: spec.affinity.nodeAffinity.required…nodeSelectorTerms[{i}]"
        requirements = []
        for j, e in enumerate(term.get("matchExpressions") or ()):
            operator = e.get("operator")
            if operator not in _OPERATORS:
                raise ConversionError(
                    f"{path}.matchExpressions[{j}].operator: {operator!r} is not supported "
                    f"(supported: {', '.join(sorted(_OPERATORS))})"
                )
            requirements.append(
                SelectorRequirement(
                    key=e.get("key", ""),
                    operator=cast(SelectorOperator, operator),
                    values=tuple(e.get("values") or ()),
                )
            )
        # matchFields can only name metadata.name; it maps onto the hostname label that
        # the kubelet and kwok both set, which is what such terms mean in practice.
        for j, f in enumerate(term.get("matchFields") or ()):
            if f.get("key") != "metadata.name" or f.get("operator") not in ("In", "NotIn"):
                raise ConversionError(f"{path}.matchFields[{j}]: only metadata.name In/NotIn")
            requirements.append(
                SelectorRequirement(
                    key="kubernetes.io/hostname",
                    operator=cast(SelectorOperator, f["operator"]),
                    values=tuple(f.get("values") or ()),
                )
            )
        if not requirements:
            # An empty term matches no node, as kube-scheduler and the kubelet read it
            # (read as no requirement, it matched every node and such a pod was bound
            # where they refuse it): no label has an empty key.
            requirements.append(SelectorRequirement(key="", operator="Exists"))
        terms.append(tuple(requirements))
    return tuple(terms)


def _requests_only(spec: Obj, where: str, error: str) -> tuple[PodSpec | None, str | None]:
    """A bound pod's requests alone, when the rest of it cannot be read; (None, error)
    when its requests cannot be read either."""
    try:
        requests = pod_requests(spec, where)
    except ConversionError:
        return None, error
    return (
        PodSpec(
            gpus=requests.gpus, cpu_milli=requests.cpu_milli, memory_bytes=requests.memory_bytes
        ),
        None,
    )


def pod_spec_from_api(obj: Obj) -> PodSpec:
    meta = obj.get("metadata") or {}
    where = f"pod {meta.get('namespace', '')}/{meta.get('name', '')}"
    spec = obj.get("spec") or {}
    requests = pod_requests(spec, where)
    _no_resource_claims(spec, where)
    _counted_resources_only(spec, where)
    selector: dict[str, str] = dict(spec.get("nodeSelector") or {})
    affinity = _required_affinity(spec, where)
    model = selector.get(L.GPU_MODEL_LABEL)
    return PodSpec(
        gpus=requests.gpus,
        cpu_milli=requests.cpu_milli,
        memory_bytes=requests.memory_bytes,
        gpu_model=model if model is not None else _affinity_model(affinity),
        node_selector=selector,
        affinity=affinity,
        tolerations=_tolerations(spec, where),
    )


def _no_resource_claims(spec: Obj, where: str) -> None:
    """A ConversionError for a pod that names Dynamic Resource Allocation claims: only a
    scheduler that allocates a claim may bind its pod (the kubelet starts none whose
    claims are not allocated and reserved for it), and fairpool allocates none. It bound
    such a pod, even one whose claim did not exist, which then never started."""
    for i, claim in enumerate(spec.get("resourceClaims") or ()):
        name = claim.get("name", "") if isinstance(claim, Mapping) else ""
        raise ConversionError(
            f"{where}: spec.resourceClaims[{i}] ({name}): fairpool does not allocate "
            "ResourceClaims (Dynamic Resource Allocation); give the pod a scheduler that "
            "does, or request nvidia.com/gpu instead"
        )


COUNTED_RESOURCES: frozenset[str] = frozenset({L.GPU_RESOURCE, "cpu", "memory"})
"""The resources fairpool counts against a node's allocatable."""
UNCOUNTED_BUT_PLACED: frozenset[str] = frozenset({"ephemeral-storage"})
"""Not counted, yet no reason to keep a pod waiting: most charts ask for a little of it,
which any GPU node has; a request beyond what its node allows is refused by the kubelet
(OutOfephemeral-storage), as docs/policy.md says. Refused, such pods all waited."""


def _counted_resources_only(spec: Obj, where: str) -> None:
    """A ConversionError for a pod that requests any other resource (an extended one such
    as `rdma/ib` or a MIG slice, `hugepages-*`; not `UNCOUNTED_BUT_PLACED`): kube-scheduler
    counts those against the nodes' allocatable and a kubelet refuses a pod its node has
    too little of (OutOf<resource>), but fairpool, counting only `COUNTED_RESOURCES`,
    bound it to a node with none. A zero request asks for nothing, as kube-scheduler
    reads it."""
    parts: list[tuple[str, object]] = [
        (f"spec.{kind}[{i}].resources", c.get("resources") if isinstance(c, Mapping) else None)
        for kind in ("containers", "initContainers")
        for i, c in enumerate(spec.get(kind) or ())
    ]
    parts.append(("spec.resources", spec.get("resources")))
    parts.append(("spec.overhead", {"requests": spec.get("overhead")}))
    for path, resources in parts:
        if not isinstance(resources, Mapping):
            continue
        for kind in ("requests", "limits"):
            values = resources.get(kind)
            if not isinstance(values, Mapping):
                continue
            for name, value in values.items():
                if name in COUNTED_RESOURCES or name in UNCOUNTED_BUT_PLACED:
                    continue
                if quantity(value, f"{where}: {path}.{kind}[{name}]") == 0:
                    continue
                raise ConversionError(
                    f"{where}: {path}: {name}: fairpool does not place pods that request "
                    f"{name}: it counts only {L.GPU_RESOURCE}, cpu and memory on a node, "
                    "and a kubelet refuses a pod its node has too little of; drop the "
                    "request, or give the pod a scheduler that counts it (kube-scheduler)"
                )


def _affinity_model(terms: tuple[tuple[SelectorRequirement, ...], ...]) -> str | None:
    """The one GPU model a required node affinity allows (`nvidia.com/gpu.product In`
    naming it, in every term that can match), else None. The engine counts a job's
    entitlement on the model it requires: read from the nodeSelector alone, a job that
    named its member's model this way was counted on every model, and its owner was
    refused its own borrowed GPUs ("nothing can be reclaimed")."""
    allowed: set[str] = set()
    for term in terms:
        if any(not r.key for r in term):
            continue  # an empty term, which matches no node (`_required_affinity`)
        models: set[str] | None = None
        for r in term:
            if r.key == L.GPU_MODEL_LABEL and r.operator == "In":
                models = set(r.values) if models is None else models & set(r.values)
        if models is None:
            return None  # this term allows any model
        allowed |= models
    return next(iter(allowed)) if len(allowed) == 1 else None


@dataclass(frozen=True, slots=True)
class GangRef:
    """The gang a pod belongs to: which label named it and the size it declares, or the
    object it was found from (scheduler/k8s/owners.py)."""

    name: str
    pod_group: bool
    """True for the scheduler-plugins `scheduling.x-k8s.io/pod-group` label."""
    size: int | None
    """From the `fairpool.io/gang-size` annotation or the owning object; None when
    absent."""
    kind: str = ""
    """'' for a gang a label names; else the kind it was found from (Job, JobSet,
    PyTorchJob, or Volcano's PodGroup), re-read whenever that object changes."""
    waits_for: str = ""
    """Why the size is not known yet (the owning object not read yet, or unreadable)."""


@dataclass(frozen=True, slots=True)
class PodInfo:
    """What the scheduler needs of one pod, read once per change of the pod."""

    uid: str
    name: str
    namespace: str
    resource_version: str
    scheduler_name: str
    node_name: str
    phase: str
    created_at: float
    started_at: float
    deleting: bool
    priority: int | None
    """spec.priority as admission set it; None when the Priority plugin did not run."""
    priority_class: str
    annotations: Mapping[str, str]
    gang: GangRef | None
    spec: PodSpec | None
    """None when the spec cannot be read; `error` then says why."""
    error: str | None = None
    nominated_node: str = ""
    """`status.nominatedNodeName`: the node an earlier reclaim holds GPUs on for this pod."""
    owner: OwnerRef | None = None
    """Its controller (`metadata.ownerReferences`): a Job, a PyTorchJob, a ReplicaSet..."""
    volcano_group: str = ""
    """The Volcano PodGroup its annotation names, or ''."""
    checkpointable: bool | None = None
    """Its `fairpool.io/checkpointable` annotation; None without one (or, on a running
    pod, an unreadable one): its member's setting decides."""
    scheduled_at: float = 0.0
    """When the API server bound it (its `PodScheduled` condition); 0.0 when not known."""
    submitted_at: float = 0.0
    """When its job was submitted: the creation of its controller (a Job, a PyTorchJob),
    which the pods it makes after a reclaim keep, as the simulator keeps a reclaimed
    job's place in its member's queue; 0.0: its own creation (`submitted`)."""
    scheduling_gates: tuple[str, ...] = ()
    """The names in `spec.schedulingGates` (Kueue's admission gate, for one): while any
    is left, the API server refuses the pod's Binding."""

    @property
    def submitted(self) -> float:
        return self.submitted_at or self.created_at

    @property
    def labelled_gang(self) -> bool:
        """A label names its gang: nothing an owner says changes it."""
        return self.gang is not None and not self.gang.kind

    @property
    def reclaims(self) -> int:
        """Times its job was reclaimed, from the `fairpool.io/reclaims` annotation
        fairpool writes on victims; a missing or unreadable value counts as 0 (the
        annotation is fairpool's own bookkeeping, not an input to reject the pod for);
        readable is `_plain_count`."""
        return _plain_count(self.annotations.get(L.RECLAIMS_ANNOTATION, "")) or 0

    def with_reclaim_record(self, record: Mapping[str, str]) -> PodInfo:
        """The pod carrying its job's reclaim record from the object that made it
        (`owners.record_owner`) when that counts more reclaims than its own annotations:
        a recreated pod carries none, and its job would start counting again."""
        if (_plain_count(record.get(L.RECLAIMS_ANNOTATION, "")) or 0) <= self.reclaims:
            return self
        return dataclasses.replace(self, annotations={**self.annotations, **record})

    @property
    def reclaimed_at(self) -> float | None:
        """When its job was last reclaimed, from the `fairpool.io/reclaimed-at`
        annotation fairpool writes beside `fairpool.io/reclaims`; a missing or unreadable
        value (not an RFC 3339 time with its offset) is None, like an unreadable count:
        the time is fairpool's own bookkeeping, not a reason to reject the pod."""
        return reclaim_time(self.annotations.get(L.RECLAIMED_AT_ANNOTATION, ""))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def assigned(self) -> bool:
        return bool(self.node_name)

    def takes_resources(self) -> bool:
        """Assigned pods of any scheduler take their node's resources until they finish."""
        return self.assigned and not self.terminal

    @property
    def gated(self) -> bool:
        return bool(self.scheduling_gates)

    def waits_for(self, scheduler_name: str) -> bool:
        """Pending for this scheduler: ours, unassigned, not finished, not being deleted,
        and held by no scheduling gate. A gated pod is not ours yet, as kube-scheduler
        keeps it out of its queue (`SchedulingGated`): counted pending, the engine
        reclaimed GPUs for a pod that may not be bound, and its Binding was refused
        every cycle."""
        return (
            self.scheduler_name == scheduler_name
            and not self.assigned
            and not self.terminal
            and not self.deleting
            and not self.scheduling_gates
        )


def pod_info(obj: Obj) -> PodInfo:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    labels = meta.get("labels") or {}
    annotations: dict[str, str] = dict(meta.get("annotations") or {})
    pod_spec: PodSpec | None
    error = None
    gang = None
    where = f"pod {meta.get('namespace')}/{meta.get('name')}"
    bound = bool(spec.get("nodeName"))
    try:
        pod_spec = pod_spec_from_api(obj)
        gang = _gang(labels, annotations, where)
    except ConversionError as exc:
        pod_spec, error = None, str(exc)
        if bound:
            # A bound pod holds its resources whatever else in it cannot be read (a
            # gang annotation edited after the bind, an affinity operator only other
            # schedulers place with): counted as 0 GPUs, its node looked free and was
            # given away again. Only where it may go is lost, which no longer matters.
            pod_spec, error = _requests_only(spec, where, error)
    checkpointable = None
    try:
        checkpointable = _checkpointable(annotations, where)
    except ConversionError as exc:
        # A pending pod is told why it waits; a running one keeps the GPUs it holds
        # counted, and its member's setting decides.
        if not bound and error is None:
            pod_spec, error = None, str(exc)
    priority = spec.get("priority")
    return PodInfo(
        uid=meta.get("uid", ""),
        name=meta.get("name", ""),
        namespace=meta.get("namespace", ""),
        resource_version=meta.get("resourceVersion", ""),
        scheduler_name=spec.get("schedulerName") or "default-scheduler",
        node_name=spec.get("nodeName") or "",
        phase=status.get("phase") or "Pending",
        created_at=timestamp(meta.get("creationTimestamp")),
        started_at=timestamp(status.get("startTime")),
        deleting=bool(meta.get("deletionTimestamp")),
        priority=int(priority) if priority is not None else None,
        priority_class=spec.get("priorityClassName") or "",
        annotations=annotations,
        gang=gang,
        spec=pod_spec,
        error=error,
        nominated_node=status.get("nominatedNodeName") or "",
        owner=controller_of(meta),
        volcano_group=volcano_group_of(annotations),
        checkpointable=checkpointable,
        scheduled_at=_scheduled_at(status),
        scheduling_gates=_scheduling_gates(spec),
    )


def _scheduling_gates(spec: Obj) -> tuple[str, ...]:
    gates = spec.get("schedulingGates") or ()
    return tuple(str(g.get("name", "")) if isinstance(g, Mapping) else str(g) for g in gates)


def _scheduled_at(status: Obj) -> float:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("status") == "True":
            try:
                return timestamp(condition.get("lastTransitionTime"))
            except (TypeError, ValueError):
                return 0.0  # a time the API would not write: not known
    return 0.0


def _checkpointable(annotations: Obj, where: str) -> bool | None:
    text = annotations.get(L.CHECKPOINTABLE_ANNOTATION)
    if text is None:
        return None
    value = {"true": True, "false": False}.get(str(text).strip().lower())
    if value is None:
        raise ConversionError(
            f"{where}: annotation {L.CHECKPOINTABLE_ANNOTATION}={text!r} is neither "
            "'true' nor 'false'"
        )
    return value


def _plain_count(text: str) -> int | None:
    """A count written in up to nine ASCII digits, else None: `int` also reads '１６',
    '1_6' and ' 16 ', and `str.isdigit` takes '²', which `int` then refuses."""
    if len(text) <= 9 and text.isascii() and text.isdigit():
        return int(text)
    return None


def _gang(labels: Obj, annotations: Obj, where: str) -> GangRef | None:
    size_text = annotations.get(L.GANG_SIZE_ANNOTATION)
    size = None
    if size_text is not None:
        size = _plain_count(size_text) or 0
        if size < 1:
            raise ConversionError(
                f"{where}: annotation {L.GANG_SIZE_ANNOTATION}={size_text!r} "
                "is not a positive integer"
            )
    if labels.get(L.GANG_LABEL):
        if size is None:
            raise ConversionError(
                f"{where}: label {L.GANG_LABEL} needs annotation {L.GANG_SIZE_ANNOTATION}"
            )
        return GangRef(labels[L.GANG_LABEL], pod_group=False, size=size)
    if labels.get(L.POD_GROUP_LABEL):
        return GangRef(labels[L.POD_GROUP_LABEL], pod_group=True, size=size)
    return None


# --- priority classes, pod groups -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Priorities:
    """PriorityClass name -> value, and the global default."""

    values: Mapping[str, int] = field(default_factory=dict)
    default: int = 0

    @classmethod
    def from_api(cls, classes: Iterable[Obj]) -> Priorities:
        values: dict[str, int] = {}
        default = 0
        for c in classes:
            name = (c.get("metadata") or {}).get("name", "")
            values[name] = int(c.get("value", 0))
            if c.get("globalDefault"):
                default = values[name]
        return cls(values, default)

    def of(self, pod: PodInfo) -> int:
        if pod.priority is not None:
            return pod.priority
        if pod.priority_class:
            return self.values.get(pod.priority_class, self.default)
        return self.default


def pod_group_key(obj: Obj) -> str:
    """`namespace/name` of a scheduler-plugins PodGroup."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def pod_group_min_member(obj: Obj) -> int | None:
    """spec.minMember of a scheduler-plugins PodGroup; None when it names none (absent
    or 0: the pods' `fairpool.io/gang-size` decides, as docs/policy.md says; read as 1,
    it started a gang of 4 with 2 pods); a ConversionError naming the field for a value
    that is no count (a negative one went into the engine)."""
    value = (obj.get("spec") or {}).get("minMember")
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConversionError(
            f"PodGroup {pod_group_key(obj)}: spec.minMember: {value!r} is not a count"
        )
    return value


def pod_group_min_resources(obj: Obj) -> Requests | None:
    """spec.minResources of a scheduler-plugins PodGroup (GPUs, CPU, memory), None when it
    names none; a ConversionError naming the field for a value that is no quantity."""
    meta = obj.get("metadata") or {}
    values = (obj.get("spec") or {}).get("minResources")
    if not values:
        return None
    where = f"PodGroup {meta.get('namespace', '')}/{meta.get('name', '')}: spec.minResources"
    if not isinstance(values, dict):
        raise ConversionError(f"{where}: not a map of resources")
    return Requests(
        gpus=whole(values.get(L.GPU_RESOURCE, 0), f"{where}[{L.GPU_RESOURCE}]"),
        cpu_milli=milli(values.get("cpu", 0), f"{where}.cpu"),
        memory_bytes=whole(values.get("memory", 0), f"{where}.memory"),
    )


def _short_of(have: Requests, need: Requests) -> str:
    """What the created pods request below a PodGroup's minResources, or ""."""
    parts = [
        f"{name} {got} of {want}"
        for name, got, want in (
            (L.GPU_RESOURCE, have.gpus, need.gpus),
            ("cpu (millicores)", have.cpu_milli, need.cpu_milli),
            ("memory (bytes)", have.memory_bytes, need.memory_bytes),
        )
        if got < want
    ]
    return ", ".join(parts)


# --- snapshot parts ---------------------------------------------------------------------


class _Membership:
    """One policy's member names and namespace -> member mapping, remembered: matching
    every pod's namespace against every member's patterns, each cycle, costs more than
    the rest of building a snapshot of thousands of pods."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.names = frozenset(policy.member_names())
        self.by_namespace: dict[str, str | None] = {}

    def of_namespace(self, namespace: str) -> str | None:
        try:
            return self.by_namespace[namespace]
        except KeyError:
            member = self.by_namespace[namespace] = self.policy.member_for_namespace(namespace)
            return member


_membership: _Membership | None = None


def _membership_of(policy: Policy) -> _Membership:
    global _membership
    known = _membership
    if known is None or known.policy is not policy:
        known = _membership = _Membership(policy)
    return known


def member_of(pod: PodInfo, policy: Policy, scheduler_name: str = L.SCHEDULER_NAME) -> str | None:
    """The member a pod counts for: the annotation written at bind (so a policy change
    never re-attributes a running pod), else the policy's namespace mapping. Only a pod
    of this scheduler was bound by it: on another scheduler's pod the annotation is the
    user's own, and counted its GPUs as any member's it named."""
    membership = _membership_of(policy)
    annotated = pod.annotations.get(L.MEMBER_ANNOTATION)
    if annotated and annotated in membership.names and pod.scheduler_name == scheduler_name:
        return annotated
    return membership.of_namespace(pod.namespace)


def job_id_of(pod: PodInfo) -> str:
    if pod.gang is not None:
        return f"{pod.namespace}/{pod.gang.name}"
    return pod.uid


def running_pod(
    pod: PodInfo,
    policy: Policy,
    priorities: Priorities,
    scheduler_name: str = L.SCHEDULER_NAME,
    node: str | None = None,
    started_at: float | None = None,
) -> RunningPod:
    """A pod that takes resources (bound, or assumed bound to `node`)."""
    return RunningPod(
        uid=pod.uid,
        name=pod.name,
        namespace=pod.namespace,
        member=member_of(pod, policy, scheduler_name),
        job_id=job_id_of(pod),
        node=node or pod.node_name,
        spec=pod.spec if pod.spec is not None else PodSpec(gpus=0),
        priority=priorities.of(pod),
        # Until the kubelet writes its startTime, a pod runs since its bind: from its
        # creation it looked as old as its wait, and a borrower that waited longer than
        # the minimum runtime was a victim the moment it was bound.
        started_at=(
            started_at
            if started_at is not None
            else pod.started_at or pod.scheduled_at or pod.created_at
        ),
        terminating=pod.deleting,
        scheduled_by_fairpool=pod.scheduler_name == scheduler_name,
        reclaims=pod.reclaims,
        checkpointable=pod.checkpointable,
        submitted_at=pod.submitted,
    )


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """A pending pod (or gang) fairpool cannot even hand to the engine, and why."""

    job_id: str
    pods: tuple[PodInfo, ...]
    reason: str


def pending_jobs(
    pods: Iterable[PodInfo],
    policy: Policy,
    priorities: Priorities,
    pod_groups: Mapping[str, int],
    nominations: Mapping[str, Mapping[str, str]],
    pod_group_resources: Mapping[str, Requests | str] | None = None,
) -> tuple[tuple[PendingJob, ...], tuple[Unschedulable, ...]]:
    """Group pending pods into jobs (single pods, gangs).

    Gangs whose size is known only from a PodGroup use its minMember, else the
    annotation. A PodGroup's minResources (`pod_group_resources`, or why it cannot be
    read) holds its gang back until the created pods request at least that much: the
    pods still to come are part of the gang. Pods that cannot be read, or belong to no
    member, come back as `Unschedulable` with the reason (they get a FailedScheduling
    event).
    """
    groups: dict[str, list[PodInfo]] = {}
    for pod in pods:
        groups.setdefault(job_id_of(pod), []).append(pod)
    jobs: list[PendingJob] = []
    rejected: list[Unschedulable] = []
    for job_id, members in groups.items():
        found = pending_job(
            job_id,
            members,
            policy,
            priorities,
            pod_groups.get(job_id),
            (pod_group_resources or {}).get(job_id),
            nominations.get(job_id),
        )
        if isinstance(found, Unschedulable):
            rejected.append(found)
        else:
            jobs.append(found)
    jobs.sort(key=queue_key)
    return tuple(jobs), tuple(rejected)


def queue_key(job: PendingJob) -> tuple[float, str]:
    """The order `pending_jobs` gives its jobs: by submission, then job id."""
    return job.submitted_at, job.job_id


def pending_job(
    job_id: str,
    pods: Iterable[PodInfo],
    policy: Policy,
    priorities: Priorities,
    pod_group_size: int | None,
    pod_group_resources: Requests | str | None,
    nominated: Mapping[str, str] | None,
) -> PendingJob | Unschedulable:
    """One job of `pending_jobs`, from its pending pods in any order, with what its
    PodGroup says (minMember, minResources or why they cannot be read) and the nodes
    nominated for it, each None when there is none."""
    members = sorted(pods, key=lambda p: (p.created_at, p.name))
    broken = next((p for p in members if p.spec is None), None)
    if broken is not None:
        return Unschedulable(job_id, tuple(members), broken.error or "unreadable")
    first = members[0]
    member = policy.member_for_namespace(first.namespace)
    if member is None:
        return Unschedulable(
            job_id,
            tuple(members),
            f"namespace {first.namespace!r} belongs to no member of policy "
            f"{policy.metadata.name!r}",
        )
    min_member = 1
    alone = _gang_size_alone(first) if first.gang is None else ""
    if alone:
        return Unschedulable(job_id, tuple(members), alone)
    if first.gang is not None:
        size = pod_group_size if first.gang.pod_group else None
        declared = {p.gang.size for p in members if p.gang is not None and p.gang.size}
        if size is None and not first.gang.kind and len(declared) > 1:
            # The oldest pod's size was taken without a word: a typo in one manifest
            # started the gang at the wrong size.
            return Unschedulable(
                job_id,
                tuple(members),
                f"gang {first.gang.name}: its pods declare different sizes in "
                f"{L.GANG_SIZE_ANNOTATION} ({', '.join(map(str, sorted(declared)))}); "
                "give every pod the same",
            )
        models = _gpu_models(members)
        if len(models) > 1:
            return Unschedulable(
                job_id,
                tuple(members),
                f"gang {first.gang.name}: its pods require different GPU models in "
                f"nodeSelector {L.GPU_MODEL_LABEL} ({', '.join(models)}), and a gang runs on "
                "one model; give every pod the same",
            )
        size = size or first.gang.size
        if size is None and first.gang.kind:
            return Unschedulable(
                job_id,
                tuple(members),
                f"gang {first.gang.name}: {first.gang.waits_for}, so its size is "
                "unknown and its pods wait",
            )
        if size is None and first.gang.pod_group and isinstance(pod_group_resources, str):
            return Unschedulable(job_id, tuple(members), pod_group_resources)
        if size is None:
            return Unschedulable(
                job_id,
                tuple(members),
                f"pod group {first.gang.name!r}: no PodGroup readable and no "
                f"{L.GANG_SIZE_ANNOTATION} annotation, so the gang size is unknown",
            )
        min_member = size
        need = pod_group_resources if first.gang.pod_group else None
        short = _below_min_resources(members, need)
        if short:
            return Unschedulable(job_id, tuple(members), f"gang {first.gang.name}: {short}")
    pending = tuple(
        PendingPod(
            uid=p.uid,
            name=p.name,
            namespace=p.namespace,
            spec=cast(PodSpec, p.spec),
            created_at=p.created_at,
        )
        for p in members
    )
    return PendingJob(
        job_id=job_id,
        member=member,
        pods=pending,
        min_member=min_member,
        priority=max(priorities.of(p) for p in members),
        submitted_at=min(p.submitted for p in members),
        nominated_nodes=dict(nominated or {}),
        reclaims=max(p.reclaims for p in members),
        reclaimed_at=_last_reclaim(members),
        checkpointable=_resumes(members),
    )


def _gpu_models(pods: list[PodInfo]) -> list[str]:
    """The GPU models a gang's pods require, sorted, when any of them asks for GPUs: the
    engine places all of such a gang's pods on nodes of one model, so two models mean it
    never runs (it waited with a sentence about nodes too small for it)."""
    specs = [cast(PodSpec, p.spec) for p in pods]
    if not any(spec.gpus > 0 for spec in specs):
        return []
    return sorted({spec.gpu_model for spec in specs if spec.gpu_model is not None})


def _gang_size_alone(pod: PodInfo) -> str:
    """Why a pod in no gang waits when its `fairpool.io/gang-size` asks for more than
    itself, or "": placed alone, the first pod of a job meant to start whole ran (and held
    its GPUs) while the others waited, as if the annotation were not there."""
    text = pod.annotations.get(L.GANG_SIZE_ANNOTATION)
    size = _plain_count(text) if text is not None else None
    if size is None or size <= 1:
        return ""
    return (
        f"pod {pod.key}: annotation {L.GANG_SIZE_ANNOTATION}={text!r} asks for a gang, but "
        f"no label names it ({L.GANG_LABEL}, or {L.POD_GROUP_LABEL}) and no controller makes "
        "its pods one; placed alone it would start without the others"
    )


def _resumes(pods: list[PodInfo]) -> bool | None:
    """A job's `checkpointable` from its pods': a gang restarts whole, so one pod that
    does not resume makes it restart; None (its member decides) unless every pod says
    it resumes or one says it does not."""
    said = {p.checkpointable for p in pods}
    if False in said:
        return False
    return True if said == {True} else None


def _last_reclaim(pods: list[PodInfo]) -> float | None:
    """The latest reclaim time any pod of the job carries (None when none does)."""
    times = [t for t in (p.reclaimed_at for p in pods) if t is not None]
    return max(times) if times else None


def _below_min_resources(pods: list[PodInfo], need: Requests | str | None) -> str:
    """Why a PodGroup's gang waits for its minResources, or "" when it need not."""
    if need is None:
        return ""
    if isinstance(need, str):
        return f"{need}, so its pods wait"
    have = Requests()
    for p in pods:
        spec = cast(PodSpec, p.spec)
        have = have + Requests(spec.gpus, spec.cpu_milli, spec.memory_bytes)
    short = _short_of(have, need)
    if not short:
        return ""
    return (
        f"its {len(pods)} created pods request {short} its PodGroup's spec.minResources "
        "asks for, so it waits for the rest of its pods"
    )
