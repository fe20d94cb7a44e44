"""The policy model: members, GPU models, sharing and billing rules, and the cluster
inventory used by simulations. Pure: no I/O beyond turning YAML text into models."""

from policies.errors import FieldIssue, InputError, PolicyError
from policies.inventory import ClusterInventory, NodeGroup, load_inventory
from policies.loader import load_policy, parse_policy
from policies.model import (
    BillingRules,
    GPUModel,
    IdleCostRule,
    Member,
    Policy,
    SharedFixedCost,
    SharingRules,
    SplitRule,
)

__all__ = [
    "BillingRules",
    "ClusterInventory",
    "FieldIssue",
    "GPUModel",
    "IdleCostRule",
    "InputError",
    "Member",
    "NodeGroup",
    "Policy",
    "PolicyError",
    "SharedFixedCost",
    "SharingRules",
    "SplitRule",
    "load_inventory",
    "load_policy",
    "parse_policy",
]
