"""What `kubectl apply` does to a Policy object that the policy cannot see in its spec.

Client-side `kubectl apply` (its default) sends a JSON merge patch, in which `null`
means "remove the field": a policy file's `maxReclaimsPerJob: null` ("no limit") reached
the object as no field at all, so the daemon put the default (3) in force without a word.
The manifest as written is kept in the object's last-applied annotation, so such a null
can be found there and the generation refused, naming the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from policies.errors import FieldIssue
from policies.model import PolicySpec

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MAX_LAST_APPLIED = 200_000
"""Characters of the annotation ApplyPolicy writes: an object's annotations hold at most
256 KiB in all."""


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _dropped(
    model: type[BaseModel], written: Mapping[str, Any], served: Mapping[str, Any], path: str
) -> list[FieldIssue]:
    found: list[FieldIssue] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        if key not in written:
            continue
        value = written[key]
        nested = _nested_model(field.annotation)
        meaningful = not field.is_required() and field.default_factory is None
        if value is None and key not in served and meaningful and field.default is not None:
            found.append(
                FieldIssue(
                    f"{path}.{key}",
                    f"null in the applied document, but kubectl apply removes a field set to "
                    f"null, so the default ({field.default!r}) would be in force: apply it "
                    "with `kubectl apply --server-side` or `fairpool policy apply`",
                )
            )
        elif (
            nested is not None
            and isinstance(value, Mapping)
            and isinstance(served.get(key), Mapping)
        ):
            found += _dropped(nested, value, served[key], f"{path}.{key}")
    return found


def dropped_nulls(obj: Mapping[str, Any]) -> list[FieldIssue]:
    """Fields the last `kubectl apply` of the object set to null, that its spec lacks, and
    whose default is not null (so their absence means something else)."""
    meta = obj.get("metadata") or {}
    text = (meta.get("annotations") or {}).get(LAST_APPLIED)
    spec = obj.get("spec")
    if not text or not isinstance(spec, Mapping):
        return []
    try:
        applied = json.loads(text)
    except ValueError:
        return []  # not kubectl's: nothing to tell
    written = applied.get("spec") if isinstance(applied, Mapping) else None
    if not isinstance(written, Mapping):
        return []
    return _dropped(PolicySpec, written, spec, "spec")


def with_last_applied(obj: dict[str, Any], spec: Mapping[str, Any]) -> None:
    """`obj`, whose spec becomes `spec`, with a last-applied annotation that says so when
    it has one: ApplyPolicy's change is then what a later `kubectl apply` merges against,
    and an earlier kubectl null no longer stands for a field of the new spec."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(LAST_APPLIED)
    if not text:
        return
    try:
        applied = json.loads(text)
    except ValueError:
        return
    if isinstance(applied, dict):
        applied["spec"] = spec
        text = json.dumps(applied, separators=(",", ":")) + "\n"
        if len(text) > MAX_LAST_APPLIED:
            # Past what an object's annotations may hold: without one, the next kubectl
            # apply writes its own (and says so), as after `kubectl replace`.
            del annotations[LAST_APPLIED]
        else:
            annotations[LAST_APPLIED] = text
