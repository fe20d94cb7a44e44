"""Removing test namespaces.

The namespace controller (kube-controller-manager) empties a deleted namespace and
clears its `kubernetes` finalizer. What the caller adds is speed: the namespace's pods
are deleted at once (no grace period), so that no pod of a finished test still holds
room on a node the next test reuses by name. The namespace is deleted first, so that no
controller (a Job's) can create pods in it again.
"""

from __future__ import annotations

import contextlib

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException


def remove_namespace(core: k8s.CoreV1Api, name: str) -> None:
    with contextlib.suppress(ApiException):
        core.delete_namespace(name)
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)


def remove_labelled_namespaces(core: k8s.CoreV1Api, label_selector: str) -> list[str]:
    removed = []
    for namespace in core.list_namespace(label_selector=label_selector).items:
        if namespace.metadata and namespace.metadata.name:
            remove_namespace(core, namespace.metadata.name)
            removed.append(namespace.metadata.name)
    return removed
