"""A synthetic month of pooled usage with known totals, for tests, the benchmark and
demos: GPU slots on owners' nodes carry pods of random length, some of them of other
members (used on others' hardware).

Deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from policies.model import Policy
from reports.costmodel.coverage import month_hour_index
from reports.costmodel.frames import LOST_CAUSES
from reports.costmodel.months import month_bounds


@dataclass(frozen=True)
class NodeGroup:
    owner: str
    gpu_model: str
    nodes: int
    gpus_per_node: int


def demo_nodes(policy: Policy, gpus: int = 64) -> list[NodeGroup]:
    """Nodes of 8 GPUs spread over the policy's members and GPU models."""
    models = [m.name for m in policy.spec.gpu_models]
    members = policy.member_names()
    nodes = max(1, gpus // 8)
    groups = []
    for i, member in enumerate(members):
        count = nodes // len(members) + (1 if i < nodes % len(members) else 0)
        if count:
            groups.append(NodeGroup(member, models[i % len(models)], count, 8))
    return groups


@dataclass(frozen=True)
class _GpuSlots:
    """One entry per GPU of the nodes: its owner, GPU model and node name."""

    owner: np.ndarray
    gpu_model: np.ndarray
    node: np.ndarray


@dataclass(frozen=True)
class _Pods:
    """The busy segments, one pod each: the GPU slot it holds and its hours [start, end)."""

    slot: np.ndarray
    start: np.ndarray
    end: np.ndarray


def synthetic_month(
    policy: Policy,
    month: str,
    groups: list[NodeGroup],
    *,
    busy: float = 0.8,
    on_others: float = 0.25,
    mean_pod_hours: float = 24.0,
    seed: int = 7,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(usage, capacity, reclaim_lost) for `month`, in the cost model's input shape."""
    rng = np.random.default_rng(seed)
    start, end = month_bounds(month, policy.billing.zone)
    hours = month_hour_index(start, end)
    slots = _gpu_slots(groups)
    pods = _pods(rng, len(slots.owner), len(hours), busy, mean_pod_hours)
    owners = slots.owner[pods.slot]
    on_others_hardware = rng.random(len(pods.slot)) < on_others
    users = owners.copy()
    members = np.array(policy.member_names())
    others = rng.integers(0, len(members), size=len(pods.slot))
    users[on_others_hardware] = members[others[on_others_hardware]]
    usage = _usage(rng, hours, pods, slots, users, policy.version)
    lost = on_others_hardware & (rng.random(len(pods.slot)) < 0.05)
    seconds_lost = rng.integers(600, 7200, size=int(lost.sum())).astype(float)
    causes = np.array(LOST_CAUSES)[rng.integers(0, len(LOST_CAUSES), size=len(seconds_lost))]
    reclaim = pd.DataFrame(
        {
            "hour": hours[np.maximum(pods.end[lost] - 1, 0)],
            "member": users[lost],
            "gpu_model": slots.gpu_model[pods.slot][lost],
            "cause": causes,
            "gpu_seconds_lost": seconds_lost,
        }
    )
    return usage, _capacity(hours, groups), reclaim


def _gpu_slots(groups: list[NodeGroup]) -> _GpuSlots:
    slot_owner, slot_model, slot_node = [], [], []
    for group in groups:
        for n in range(group.nodes):
            for _ in range(group.gpus_per_node):
                slot_owner.append(group.owner)
                slot_model.append(group.gpu_model)
                slot_node.append(f"{group.owner}-{group.gpu_model[-9:].lower()}-{n}")
    return _GpuSlots(np.array(slot_owner), np.array(slot_model), np.array(slot_node))


def _pods(
    rng: np.random.Generator, n_slots: int, n_hours: int, busy: float, mean_pod_hours: float
) -> _Pods:
    """Per slot, back-to-back segments of random length; a segment is busy (a pod) or idle."""
    lengths = rng.geometric(
        1.0 / mean_pod_hours, size=(n_slots, int(3 * n_hours / mean_pod_hours) + 8)
    )
    ends = np.cumsum(lengths, axis=1)
    starts = ends - lengths
    slot_idx, seg_idx = np.nonzero(starts < n_hours)
    seg_start = starts[slot_idx, seg_idx]
    seg_end = np.minimum(ends[slot_idx, seg_idx], n_hours)
    is_busy = rng.random(len(slot_idx)) < busy
    return _Pods(slot_idx[is_busy], seg_start[is_busy], seg_end[is_busy])


def _usage(
    rng: np.random.Generator,
    hours: pd.DatetimeIndex,
    pods: _Pods,
    slots: _GpuSlots,
    users: np.ndarray,
    policy_version: int,
) -> pd.DataFrame:
    """One usage row per pod and hour it ran."""
    owners = slots.owner[pods.slot]
    pod_uid = np.char.add("pod-", np.arange(len(pods.slot)).astype(str))
    span = pods.end - pods.start
    row_pod = np.repeat(np.arange(len(pods.slot)), span)
    offsets = np.arange(len(row_pod)) - np.repeat(np.cumsum(span) - span, span)
    row_hour = np.repeat(pods.start, span) + offsets
    # First and last hours of a pod are partial (it starts/ends inside the hour).
    seconds = np.full(len(row_pod), 3600.0)
    first = offsets == 0
    last = offsets == np.repeat(span - 1, span)
    seconds[first] -= rng.integers(0, 1800, size=int(first.sum()))
    seconds[last & ~first] -= rng.integers(0, 1800, size=int((last & ~first).sum()))
    utilization = np.clip(rng.normal(0.7, 0.15, size=len(row_pod)), 0.0, 1.0)
    return pd.DataFrame(
        {
            "hour": hours[row_hour],
            "pod_uid": pod_uid[row_pod],
            "namespace": users[row_pod],
            "job_id": np.char.add("job-", (row_pod // 4).astype(str))[...],
            "member": users[row_pod],
            "owner": owners[row_pod],
            "gpu_model": slots.gpu_model[pods.slot][row_pod],
            "node": slots.node[pods.slot][row_pod],
            "gpu_seconds": seconds,
            "utilization": utilization,
            "coverage": 1.0,
            "policy_version": policy_version,
        }
    )


def _capacity(hours: pd.DatetimeIndex, groups: list[NodeGroup]) -> pd.DataFrame:
    """Every node group's GPUs available all month, per hour."""
    cap_rows = []
    for group in groups:
        cap_rows.append((group.owner, group.gpu_model, group.nodes * group.gpus_per_node * 3600.0))
    cap = pd.DataFrame(cap_rows, columns=["owner", "gpu_model", "gpu_seconds_available"])
    capacity = cap.merge(pd.DataFrame({"hour": hours}), how="cross")[
        ["hour", "owner", "gpu_model", "gpu_seconds_available"]
    ]
    capacity = capacity.groupby(["hour", "owner", "gpu_model"], as_index=False).sum()
    capacity["coverage"] = 1.0
    return capacity
