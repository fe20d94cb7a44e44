"""What `kubectl apply` leaves in a Policy object's last-applied annotation (pure)."""

from __future__ import annotations

import json
from typing import Any

from policies.kubectl import LAST_APPLIED, MAX_LAST_APPLIED, dropped_nulls, with_last_applied


def _object(written: dict[str, Any], served: dict[str, Any]) -> dict[str, Any]:
    annotation = json.dumps({"kind": "Policy", "spec": written})
    return {"metadata": {"annotations": {LAST_APPLIED: annotation}}, "spec": served}


def test_a_null_kubectl_dropped_is_named_only_where_the_default_differs() -> None:
    written = {"sharing": {"maxReclaimsPerJob": None, "usageHalfLifeHours": None}}
    found = dropped_nulls(_object(written, {"sharing": {}}))
    assert [issue.path for issue in found] == ["spec.sharing.maxReclaimsPerJob"]
    assert "default (3)" in found[0].message
    # Kept by the API server (server-side apply, ApplyPolicy): nothing to say.
    assert dropped_nulls(_object(written, {"sharing": {"maxReclaimsPerJob": None}})) == []
    assert dropped_nulls({"metadata": {}, "spec": {"sharing": {}}}) == []
    broken = {"metadata": {"annotations": {LAST_APPLIED: "{not json"}}, "spec": {}}
    assert dropped_nulls(broken) == []


def test_apply_policy_keeps_the_annotation_in_step_or_drops_one_too_large() -> None:
    obj = _object({"sharing": {"maxReclaimsPerJob": None}}, {})
    with_last_applied(obj, {"sharing": {"headStart": True}})
    kept = json.loads(obj["metadata"]["annotations"][LAST_APPLIED])
    assert kept == {"kind": "Policy", "spec": {"sharing": {"headStart": True}}}
    obj = _object({}, {})
    with_last_applied(obj, {"members": [{"name": "m" * MAX_LAST_APPLIED}]})
    assert LAST_APPLIED not in obj["metadata"]["annotations"]
    bare: dict[str, Any] = {"metadata": {}, "spec": {}}
    with_last_applied(bare, {"members": []})
    assert bare == {"metadata": {}, "spec": {}}, "no annotation is made up"
