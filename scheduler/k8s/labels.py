"""Label and annotation keys fairpool reads and writes (docs/policy.md, "Labels and
annotations on Kubernetes objects")."""

from __future__ import annotations

SCHEDULER_NAME = "fairpool"

OWNER_LABEL = "fairpool.io/owner"
GPU_MODEL_LABEL = "nvidia.com/gpu.product"
TOPOLOGY_LABEL = "fairpool.io/topology-domain"
ZONE_LABEL = "topology.kubernetes.io/zone"
GPU_RESOURCE = "nvidia.com/gpu"

GANG_LABEL = "fairpool.io/gang"
GANG_SIZE_ANNOTATION = "fairpool.io/gang-size"
CHECKPOINTABLE_ANNOTATION = "fairpool.io/checkpointable"
"""`true` or `false`: whether the pod's job resumes where it stopped when preempted, over
its member's `checkpointable`."""
POD_GROUP_LABEL = "scheduling.x-k8s.io/pod-group"

MEMBER_ANNOTATION = "fairpool.io/member"
BORROWED_FROM_ANNOTATION = "fairpool.io/borrowed-from"
GANG_BIND_ANNOTATION = "fairpool.io/gang-bind"
"""`<batch>/<n>`, in the Binding of each pod of a gang's pods bound together: the n pods
of one batch. A gang whose batch is bound whole (or has lost pods since) ran whole; one
whose batch is not was bound half way, whatever its size says now (a PodGroup's
minMember raised later)."""
PREEMPTED_BY_ANNOTATION = "fairpool.io/preempted-by"
PREEMPTION_REASON_ANNOTATION = "fairpool.io/preemption-reason"
PREEMPTION_CAUSE_ANNOTATION = "fairpool.io/preemption-cause"
"""`entitlement`, `fair_share`, `consolidation` or `queue` (the engine's `Preemption.cause`)."""
RECLAIMS_ANNOTATION = "fairpool.io/reclaims"
"""Times the pod's job was reclaimed: written on a victim before its eviction, read on
pending and running pods (a workload that recreates pods copies it to carry it over)."""
RECLAIMED_AT_ANNOTATION = "fairpool.io/reclaimed-at"
"""When the pod's job was last reclaimed (RFC 3339, UTC): written and read beside
`fairpool.io/reclaims`."""
DURATION_ANNOTATION = "fairpool.io/duration-seconds"
