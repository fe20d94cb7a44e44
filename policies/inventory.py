"""The cluster inventory used by simulations and by the local test control plane:
groups of identical GPU nodes, each owned by a member."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from policies.errors import FieldIssue, PolicyError
from policies.model import Loc, NumberText, Policy, _Strict, raw_field, raw_list
from policies.yamldoc import document_lines, format_path, load_document, validate_document

DEFAULT_INVENTORY = Path(__file__).parent / "defaults" / "cluster.yaml"
MAX_NODES = 20_000
"""Nodes in an inventory, over all groups: beyond the largest clusters Kubernetes runs
(a count of 10^9 built node after node until killed)."""
MAX_GPUS_PER_NODE = 64


class TaintSpec(_Strict):
    key: str
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


def keeps_off_untolerating_pods(effects: Iterable[str]) -> bool:
    """Whether taints of these effects keep off a pod that tolerates none (a simulated
    one): NoSchedule and NoExecute do; PreferNoSchedule only makes the node less
    preferred, as placement takes it."""
    return any(effect != "PreferNoSchedule" for effect in effects)


class NodeGroup(_Strict):
    name: str = Field(min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    owner: str = Field(min_length=1)
    count: Annotated[int, NumberText] = Field(ge=1, le=MAX_NODES)
    gpus_per_node: Annotated[int, NumberText] = Field(ge=0, le=MAX_GPUS_PER_NODE)
    gpu_model: str = Field(min_length=1)
    cpu: Annotated[int, NumberText] = Field(default=64, ge=1)
    memory_gi_b: Annotated[int, NumberText] = Field(default=512, ge=1, alias="memoryGiB")
    max_pods: Annotated[int, NumberText] = Field(default=110, ge=1)
    topology_domain: str = "default"
    labels: dict[str, str] = Field(default_factory=dict)
    taints: list[TaintSpec] = Field(default_factory=list)

    def node_names(self) -> list[str]:
        return [f"{self.name}-{i}" for i in range(self.count)]


def group_name_issues(names: Iterable[object]) -> list[tuple[Loc, str]]:
    """Node groups named twice, each at its path (names that are not strings skipped: see
    `policies.model.name_issues`)."""
    found: list[tuple[Loc, str]] = []
    seen: set[str] = set()
    for i, name in enumerate(names):
        if isinstance(name, str):
            if name in seen:
                found.append((("spec", "nodeGroups", i, "name"), f"duplicate node group {name!r}"))
            seen.add(name)
    return found


class InventorySpec(_Strict):
    node_groups: list[NodeGroup] = Field(min_length=1)

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        issues = group_name_issues([g.name for g in self.node_groups])
        nodes = sum(g.count for g in self.node_groups)
        if nodes > MAX_NODES:
            issues.append(
                (("spec", "nodeGroups"), f"{nodes:,} nodes in all, more than {MAX_NODES:,}")
            )
        return issues


class ClusterInventory(_Strict):
    api_version: Literal["fairpool.io/v1"]
    kind: Literal["ClusterInventory"]
    spec: InventorySpec

    def reference_issues(self) -> list[tuple[tuple[str | int, ...], str]]:
        return self.spec.reference_issues()

    @staticmethod
    def name_issues_of(data: Mapping[str, object]) -> list[tuple[Loc, str]]:
        """`group_name_issues` of a document that failed validation, read as written."""
        groups = raw_list(data.get("spec"), "nodeGroups", "node_groups")
        return group_name_issues(raw_field(g, "name") for g in groups)

    @property
    def node_groups(self) -> list[NodeGroup]:
        return self.spec.node_groups

    def total_gpus(self) -> int:
        return sum(g.count * g.gpus_per_node for g in self.spec.node_groups)

    def owners(self) -> list[str]:
        return sorted({g.owner for g in self.spec.node_groups})

    def gpu_models(self) -> list[str]:
        return sorted({g.gpu_model for g in self.spec.node_groups})


def parse_inventory(text: str, source: str = "<inventory>") -> ClusterInventory:
    return validate_document(ClusterInventory, text, source)


def load_inventory(path: str | Path | None = None) -> ClusterInventory:
    """The inventory in `path`, or the built-in demo cluster when `path` is None."""
    return load_document(ClusterInventory, path if path is not None else DEFAULT_INVENTORY)


def check_inventory(inventory: ClusterInventory, policy: Policy, path: str | Path | None) -> None:
    """Every node owner must be a policy member, and every GPU model one the policy
    prices (a model it lacks ended the run at the cost report, the tables written).
    `path`: the file `inventory` was read from (None: the built-in one), for the lines."""
    members = set(policy.member_names())
    models = [m.name for m in policy.spec.gpu_models]
    issues: list[tuple[Loc, str]] = []
    for i, group in enumerate(inventory.node_groups):
        if group.owner not in members:
            issues.append(
                (
                    ("spec", "nodeGroups", i, "owner"),
                    f"owner {group.owner!r} is not a member of the policy "
                    f"(members: {', '.join(sorted(members))})",
                )
            )
        if group.gpu_model not in models:
            issues.append(
                (
                    ("spec", "nodeGroups", i, "gpuModel"),
                    f"GPU model {group.gpu_model!r} is not one of the policy's gpuModels "
                    f"({', '.join(models)}), which price its hours",
                )
            )
    if issues:
        line = document_lines(path if path is not None else DEFAULT_INVENTORY)
        raise PolicyError(
            str(path) if path is not None else "built-in cluster",
            [FieldIssue(format_path(loc), message, line(loc)) for loc, message in issues],
        )
