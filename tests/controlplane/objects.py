"""Kubernetes objects as plain JSON-shaped dicts (camelCase keys, as in manifests).

The generated client's models make every field optional; tests and tooling that only
read a few fields are clearer (and type-check) on the API's own JSON shape.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client as k8s

_SERIALIZER = k8s.ApiClient()


def as_dict(obj: object) -> dict[str, Any]:
    data = _SERIALIZER.sanitize_for_serialization(obj)
    if not isinstance(data, dict):
        raise TypeError(f"not a Kubernetes object: {type(obj).__name__}")
    return data
