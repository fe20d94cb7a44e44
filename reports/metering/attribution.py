"""Who a metered pod's GPU-seconds belong to: node, owner, GPU model and member (pure).

Every source that carries an attribute is read, in this order of precedence (the first
non-empty value wins):

- **node**: fairpool's ``fairpool_pod_gpu_allocation`` gauge (`node` label), then
  kube-state-metrics' GPU requests (`node` label), then ``kube_pod_info`` (`node`).
- **owner**: fairpool's gauge (`owner`), then the node's ``fairpool.io/owner`` label as
  ``kube_node_labels`` shows it around that hour.
- **GPU model**: fairpool's gauge (`gpu_model`), then the node's
  ``nvidia.com/gpu.product`` label as ``kube_node_labels`` shows it.
- **member**: fairpool's gauge (`member`), then the member whose namespace the pod runs
  in (the policy).

What no source gives is `UNATTRIBUTED` (one spelling, shared with the cost model): the
report bills it on its own line and lists the pod, hour and GPU-seconds.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from reports.costmodel.frames import UNATTRIBUTED

NODE_OWNER = "label_fairpool_io_owner"
NODE_GPU_MODEL = "label_nvidia_com_gpu_product"


def text(frame: pd.DataFrame, name: str) -> pd.Series:
    """Column `name` as strings, '' where absent or null."""
    if name in frame:
        return frame[name].fillna("").astype(str)
    return pd.Series([""] * len(frame), index=frame.index, dtype=str)


def first_of(*candidates: pd.Series) -> pd.Series:
    """Per row, the first candidate that is not ''."""
    result = candidates[0]
    for candidate in candidates[1:]:
        result = result.where(result != "", candidate)
    return result


def node_labels_by_hour(frame: pd.DataFrame, hour: str) -> pd.DataFrame:
    """One row per hour (column `hour`, Unix seconds) and node of an hourly answer: the
    node's owner label and GPU product label ('' if none), indexed by `hour_node_key`.
    Where exporter replicas disagree, a non-empty label beats an empty one."""
    labels = pd.DataFrame(
        {
            hour: frame[hour] if hour in frame else pd.Series([], dtype=float),
            "node": text(frame, "node"),
            NODE_OWNER: text(frame, NODE_OWNER),
            NODE_GPU_MODEL: text(frame, NODE_GPU_MODEL),
        }
    )
    labels = labels[labels["node"] != ""]
    labels = labels.groupby([hour, "node"], as_index=False).agg(
        {NODE_OWNER: "max", NODE_GPU_MODEL: "max"}
    )
    return labels.set_index(hour_node_key(labels[hour], labels["node"]))


def hour_node_key(hour: pd.Series, node: pd.Series) -> pd.Series:
    """One text key per (hour in Unix seconds, node)."""
    return hour.astype("int64").astype(str) + "|" + node.astype(str)


def attribute(
    rows: pd.DataFrame,
    known: pd.DataFrame,
    member_for_namespace: Callable[[str], str | None],
    keys: pd.Series,
) -> pd.DataFrame:
    """`rows` (pods with whatever `node`, `owner`, `gpu_model`, `member` their own source
    gave, '' when it gave none) with every attribute filled in the order above; `known`
    is `node_labels_by_hour(...)`, `keys` each row's `hour_node_key`."""
    rows = rows.copy()
    node = text(rows, "node")
    rows["node"] = node.where(node != "", UNATTRIBUTED)
    owner_label = _lookup(keys, known[NODE_OWNER])
    model_label = _lookup(keys, known[NODE_GPU_MODEL])
    rows["owner"] = first_of(text(rows, "owner"), owner_label).replace("", UNATTRIBUTED)
    rows["gpu_model"] = first_of(text(rows, "gpu_model"), model_label).replace("", UNATTRIBUTED)
    namespaces = text(rows, "namespace")
    by_namespace = {ns: member_for_namespace(ns) or "" for ns in namespaces.unique()}
    rows["member"] = first_of(text(rows, "member"), namespaces.map(by_namespace)).replace(
        "", UNATTRIBUTED
    )
    return rows


def capacity_attributes(nodes: pd.Series, known: pd.DataFrame) -> pd.DataFrame:
    """Owner and GPU model of each node of the capacity gauge, from the node's labels
    (`known`: `node_labels_by_hour(...)`, `nodes` the nodes' `hour_node_key`s)."""
    return pd.DataFrame(
        {
            "owner": _lookup(nodes, known[NODE_OWNER]).replace("", UNATTRIBUTED),
            "gpu_model": _lookup(nodes, known[NODE_GPU_MODEL]).replace("", UNATTRIBUTED),
        },
        index=nodes.index,
    )


def _lookup(keys: pd.Series, values: pd.Series) -> pd.Series:
    """`values[key]` per key as strings, '' where the key is unknown."""
    found = keys.astype(object).map(values.astype(object))
    return found.where(found.notna(), "").astype(object)
