"""Removing namespaces on a control plane that runs no kube-controller-manager.

Without the namespace controller a deleted namespace stays Terminating forever: its
`kubernetes` finalizer is only cleared by that controller once the namespace is empty.
Here the caller does that job: pods go first (no grace period), then the finalizer.
Other objects of the namespace stay in etcd, unreachable; test namespaces get unique
names, so none is ever seen again.
"""

from __future__ import annotations

import contextlib

from kubernetes import client as k8s
from kubernetes.client.rest import ApiException


def remove_namespace(core: k8s.CoreV1Api, name: str) -> None:
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)
    with contextlib.suppress(ApiException):
        core.delete_namespace(name, grace_period_seconds=0)
    try:
        namespace = core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    if namespace.spec is not None:
        namespace.spec.finalizers = []
    try:
        core.replace_namespace_finalize(name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def remove_labelled_namespaces(core: k8s.CoreV1Api, label_selector: str) -> list[str]:
    removed = []
    for namespace in core.list_namespace(label_selector=label_selector).items:
        if namespace.metadata and namespace.metadata.name:
            remove_namespace(core, namespace.metadata.name)
            removed.append(namespace.metadata.name)
    return removed
