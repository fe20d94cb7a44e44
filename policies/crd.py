"""The policy as a Kubernetes object: the `Policy` CustomResourceDefinition, generated.

`python -m policies.crd` prints the CRD (cluster-scoped `policies.fairpool.io`, version
v1); `python -m policies.crd --values-schema FILE` writes its `spec` schema into the
chart's values.schema.json (`definitions.policySpec`). Its `spec` schema is the pydantic
`PolicySpec` turned into a structural OpenAPI v3 schema, so the API server refuses what
the schema can say (types, enums, minimums, patterns, required fields) and the daemon
refuses the rest (references between fields, duplicate names, fixed shares that do not
sum to 1). Its `status` schema is `PolicyStatus` below, written by the daemon. GPU
models and members are lists keyed by name, so the API server refuses two entries with
one name.

Money (`Decimal`) is a quoted string in policy files ("2.40"); the API server cannot
express "a number or a string", so such fields are `x-kubernetes-int-or-string` with a
decimal pattern on the string: a whole number or a quoted decimal.

Kubernetes forbids `additionalProperties: false` beside `properties`; unknown fields are
pruned by the API server instead, and `kubectl apply` (server-side field validation,
strict by default) refuses them with an error naming the field.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from policies.model import PolicySpec

GROUP = "fairpool.io"
VERSION = "v1"
KIND = "Policy"
PLURAL = "policies"
SINGULAR = "policy"
CRD_NAME = f"{PLURAL}.{GROUP}"
READY = "Ready"
"""The condition type saying whether the latest generation of the object is in force."""

_DECIMAL_PATTERN = r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$"
"""Money as a quoted string: the decimal notation a policy file may use (`"2.40"`, `".5"`,
`"1E+2"`, policies/numbers.py), so a file `fairpool policy validate` takes is taken by
`kubectl apply` too (`"1E+2"` and `".5"` were refused there: the pattern took digits with
an optional fraction only)."""
_DROPPED_KEYS = {"title", "default", "$defs"}


class _Status(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )


class GPUModelShare(_Status):
    """One member's position on one GPU model, as the latest scheduling cycle saw it."""

    name: str = Field(description="GPU model")
    entitlement: int = Field(ge=0, description="entitlement, GPUs")
    fair_share: float = Field(ge=0, description="fair share, GPUs")
    allocated: int = Field(ge=0, description="GPUs held by the member's running pods")


class MemberStatus(_Status):
    name: str
    gpu_models: list[GPUModelShare] = Field(default_factory=list)


class Condition(_Status):
    """A condition as in metav1.Condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = ""
    observed_generation: int = Field(default=0, ge=0)
    last_transition_time: str = Field(description="RFC 3339 time the status last changed")


class PolicyStatus(_Status):
    """What the daemon writes on the Policy object (its status subresource)."""

    version: int = Field(
        default=0, ge=0, description="policy version in force (the audit history's number)"
    )
    observed_generation: int = Field(
        default=0, ge=0, description="the latest metadata.generation the daemon has looked at"
    )
    generation_in_force: int = Field(
        default=0, ge=0, description="the metadata.generation whose spec is in force"
    )
    member_count: int = Field(default=0, ge=0, description="members of the policy in force")
    members: list[MemberStatus] = Field(default_factory=list)
    conditions: list[Condition] = Field(default_factory=list)


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline every `$ref`, keeping the keys that stand beside it."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(merged, defs)
    return {key: _resolve(value, defs) for key, value in node.items()}


def _structural(node: Any) -> Any:
    """A pydantic JSON schema node as a Kubernetes structural schema node."""
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: v for k, v in node.items() if k not in _DROPPED_KEYS}
    variants = out.pop("anyOf", None)
    if variants is not None:
        kinds = [v for v in variants if v.get("type") != "null"]
        if len(kinds) < len(variants):
            out["nullable"] = True
        types = {v.get("type") for v in kinds}
        if types == {"number", "string"}:  # a Decimal
            number = next(v for v in kinds if v["type"] == "number")
            minimum = number.get("minimum")
            pattern = _DECIMAL_PATTERN
            if minimum is None or minimum < 0:
                pattern = "^-?" + _DECIMAL_PATTERN[1:]
            else:
                out["minimum"] = int(minimum)
            # The one union a structural schema allows; the pattern applies to strings.
            out["x-kubernetes-int-or-string"] = True
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            out["pattern"] = pattern
        elif len(kinds) == 1:
            out.update(kinds[0])
        else:
            raise ValueError(f"no structural schema for the union {variants}")
    if "exclusiveMinimum" in out:  # JSON Schema 2020-12 -> OpenAPI v3.0
        out["minimum"] = out.pop("exclusiveMinimum")
        out["exclusiveMinimum"] = True
    if out.get("type") == "object" and "properties" in out:
        # Kubernetes refuses additionalProperties beside properties (unknown fields are
        # pruned, and refused by strict field validation).
        out.pop("additionalProperties", None)
    return {k: _structural(v) if isinstance(v, dict | list) else v for k, v in out.items()}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s validation schema (camelCase keys) as a structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return dict(_structural(_resolve(raw, raw.get("$defs", {}))))


def _keyed_by_name(schema: dict[str, Any], *lists: str) -> dict[str, Any]:
    """Mark lists of objects as maps keyed by `name`: the API server refuses two entries
    with one name, and server-side apply merges them by name. A dotted path reaches a
    nested list (`billing.sharedFixedCosts`)."""
    for field in lists:
        node = schema
        for part in field.split("."):
            node = node["properties"][part]
        node["x-kubernetes-list-type"] = "map"
        node["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def _printer_columns() -> list[dict[str, Any]]:
    return [
        {
            "name": "Version",
            "type": "integer",
            "jsonPath": ".status.version",
            "description": "policy version in force",
        },
        {
            "name": "Members",
            "type": "integer",
            "jsonPath": ".status.memberCount",
            "description": "members of the policy in force",
        },
        {
            "name": "Ready",
            "type": "string",
            "jsonPath": f'.status.conditions[?(@.type=="{READY}")].status',
        },
        {
            "name": "Reason",
            "type": "string",
            "priority": 1,
            "jsonPath": f'.status.conditions[?(@.type=="{READY}")].reason',
        },
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


def _status_schema() -> dict[str, Any]:
    schema = _keyed_by_name(schema_of(PolicyStatus), "members")
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    return schema


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition of the cluster-scoped `Policy`."""
    root = {
        "type": "object",
        "description": "The fairpool policy of the cluster: members, GPU models and prices, "
        "sharing and billing rules (docs/policy.md).",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _keyed_by_name(
                schema_of(PolicySpec), "gpuModels", "members", "billing.sharedFixedCosts"
            ),
            "status": _status_schema(),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {"app.kubernetes.io/name": "fairpool"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": ["fpolicy"],
                "categories": ["fairpool"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _printer_columns(),
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def _json_schema(node: Any) -> Any:
    """A structural schema node as draft-07 JSON Schema, for the chart's values."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if out.pop("exclusiveMinimum", False):  # OpenAPI v3.0's flag -> draft-07's bound
        out["exclusiveMinimum"] = out.pop("minimum")
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        else:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    if out.get("type") == "object" and "properties" in out:
        # What the API server would prune from the Policy object (with a mere warning),
        # while the meter's copy of the policy kept it.
        out["additionalProperties"] = False
    return out


def values_spec_schema() -> dict[str, Any]:
    """The `spec` of the CRD as JSON Schema: the chart's values.schema.json checks
    `policy.spec` with it, so `helm install` and `helm upgrade` refuse a policy the API
    server would refuse before anything is applied (the meter's policy ConfigMap and
    Deployment were updated first, and the release left failed)."""
    version = crd()["spec"]["versions"][0]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return dict(_json_schema(spec))


_VALUES_BLOCK = re.compile(r'(\n    "policySpec": )\{.*?\n    \}(?=\n  \},)', re.DOTALL)


def values_schema(current: str) -> str:
    """values.schema.json with its `definitions.policySpec` made again (the rest of the
    file is written by hand)."""
    block = json.dumps(values_spec_schema(), indent=2).replace("\n", "\n    ")
    updated, count = _VALUES_BLOCK.subn(lambda m: m.group(1) + block, current)
    if count != 1:
        raise ValueError('values.schema.json: no "policySpec" last in "definitions"')
    return updated


HEADER = (
    "# Generated by `python -m policies.crd` from policies/model.py and policies/crd.py;\n"
    "# do not edit (tests/unit/test_policy_crd.py checks it is up to date).\n"
)


def render() -> str:
    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100)


def main() -> None:
    """Print the CRD; `--values-schema FILE`: update the chart's values.schema.json."""
    if sys.argv[1:2] == ["--values-schema"]:
        path = Path(sys.argv[2])
        path.write_text(values_schema(path.read_text(encoding="utf-8")), encoding="utf-8")
        return
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
