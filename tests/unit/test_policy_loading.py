from pathlib import Path

import pytest

from policies import PolicyError, load_inventory, load_policy
from policies.inventory import parse_inventory
from policies.loader import parse_policy


def test_default_policy_and_inventory_load() -> None:
    policy = load_policy()
    inventory = load_inventory()
    assert set(inventory.owners()) == set(policy.member_names())
    assert inventory.total_gpus() == 64


def test_errors_name_field_path_and_line() -> None:
    text = Path("policies/defaults/policy.yaml").read_text()
    text = text.replace("weight: 2", "weight: -2\n      colour: red")
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    found = {(i.path, i.line) for i in info.value.issues}
    line = text.splitlines().index("      weight: -2") + 1
    assert ("spec.members[2].weight", line) in found
    assert ("spec.members[2].colour", line + 1) in found


def test_max_reclaims_per_job_defaults_to_3_and_rejects_negatives_by_path() -> None:
    text = Path("policies/defaults/policy.yaml").read_text()
    assert parse_policy(text).sharing.max_reclaims_per_job == 3
    assert (
        parse_policy(
            text.replace(
                "minRuntimeSeconds: 600", "minRuntimeSeconds: 600\n    maxReclaimsPerJob: null"
            )
        ).sharing.max_reclaims_per_job
        is None
    )
    bad = text.replace(
        "minRuntimeSeconds: 600", "minRuntimeSeconds: 600\n    maxReclaimsPerJob: -1"
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(bad)
    line = bad.splitlines().index("    maxReclaimsPerJob: -1") + 1
    assert ("spec.sharing.maxReclaimsPerJob", line) in {(i.path, i.line) for i in info.value.issues}


def test_a_namespace_claimed_by_two_members_is_an_error_at_its_line() -> None:
    text = Path("policies/defaults/policy.yaml").read_text()
    text = text.replace(
        'namespaces: ["lab-bio", "lab-bio-*"]', 'namespaces: ["lab-bio", "physics"]'
    )
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    (issue,) = info.value.issues
    assert issue.path == "spec.members[3].namespaces[0]"
    assert issue.message == "namespace 'physics' is already claimed by member 'lab-bio'"
    assert issue.line == text.splitlines().index('      namespaces: ["physics", "physics-*"]') + 1


@pytest.mark.parametrize(
    ("groups", "path", "says"),
    [
        # A count of 10^9 built node after node until killed.
        (["count: 1000000000, gpusPerNode: 8"], "spec.nodeGroups[0].count", "20000"),
        (["count: 1, gpusPerNode: 100000"], "spec.nodeGroups[0].gpusPerNode", "64"),
        (
            ["count: 15000, gpusPerNode: 8", "count: 5001, gpusPerNode: 8"],
            "spec.nodeGroups",
            "20,001 nodes in all, more than 20,000",
        ),
    ],
)
def test_inventory_sizes_are_bounded_by_path(groups: list[str], path: str, says: str) -> None:
    rows = "".join(
        f"    - {{name: g{i}, owner: o, {g}, gpuModel: NVIDIA-H100-80GB-HBM3}}\n"
        for i, g in enumerate(groups)
    )
    text = f"apiVersion: fairpool.io/v1\nkind: ClusterInventory\nspec:\n  nodeGroups:\n{rows}"
    with pytest.raises(PolicyError) as info:
        parse_inventory(text)
    assert any(i.path == path and says in i.message for i in info.value.issues), info.value
