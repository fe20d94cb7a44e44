"""What the API server's state says after (and during) a chaos run: nodes with more GPUs
bound than they have, gangs partly bound, pods waiting without a reason from fairpool."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tests.chaos.workload import GANG_LABEL, GANG_SIZE

GPU = "nvidia.com/gpu"


def gpus_of(pod: Any) -> int:
    return sum(
        int(((c.resources.limits if c.resources else None) or {}).get(GPU, 0))
        for c in pod.spec.containers
    )


def holds_gpus(pod: Any) -> bool:
    """Bound and not finished (a terminating pod still holds its GPUs)."""
    phase = pod.status.phase if pod.status else ""
    return bool(pod.spec.node_name) and phase not in ("Succeeded", "Failed")


def overcommitted(capacity: Mapping[str, int], pods: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """node -> (GPUs held, GPUs it has), for nodes holding more than they have."""
    used: Counter[str] = Counter()
    for pod in pods:
        if holds_gpus(pod) and pod.spec.node_name in capacity:
            used[pod.spec.node_name] += gpus_of(pod)
    return {n: (used[n], capacity[n]) for n in sorted(used) if used[n] > capacity[n]}


def partly_bound_gangs(pods: Iterable[Any]) -> dict[str, tuple[int, int]]:
    """namespace/gang -> (pods bound, gang size), for gangs some of whose pods (not being
    deleted) are bound and some not."""
    bound: Counter[str] = Counter()
    waiting: Counter[str] = Counter()
    size: dict[str, int] = {}
    for pod in pods:
        labels = pod.metadata.labels or {}
        gang = labels.get(GANG_LABEL)
        if not gang or pod.metadata.deletion_timestamp:
            continue
        key = f"{pod.metadata.namespace}/{gang}"
        size[key] = int((pod.metadata.annotations or {}).get(GANG_SIZE, "0"))
        if pod.spec.node_name:
            bound[key] += 1
        else:
            waiting[key] += 1
    return {k: (bound[k], size[k]) for k in sorted(bound) if waiting[k]}


def lasting(samples: Sequence[Mapping[str, tuple[int, int]]]) -> dict[str, tuple[int, int]]:
    """The gangs partly bound in every one of `samples` (oldest first), with the last
    sample's counts. One list of the pods can catch a gang the leader is binding at that
    moment (its binds are separate requests, sent together): only a gang that stays
    partly bound while its binds would have been answered was left so."""
    if not samples:
        return {}
    keep = set(samples[0]).intersection(*samples[1:])
    return {k: v for k, v in samples[-1].items() if k in keep}


def waiting_without_reason(
    pods: Iterable[Any], explained: set[str], now: float, older_than: float
) -> list[str]:
    """Pods of fairpool waiting longer than `older_than` seconds with no FailedScheduling
    event (`explained`: uids of pods that have one)."""
    out = []
    for pod in pods:
        if pod.spec.node_name or pod.metadata.deletion_timestamp:
            continue
        if pod.spec.scheduler_name != "fairpool":
            continue
        age = now - pod.metadata.creation_timestamp.timestamp()
        if age > older_than and pod.metadata.uid not in explained:
            out.append(f"{pod.metadata.namespace}/{pod.metadata.name}")
    return sorted(out)
