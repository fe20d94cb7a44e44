"""Hosting the API in the scheduler daemon: the policy store follows where the daemon
reads its policy (its Policy object or ConfigMap in a cluster, else its file), so an
ApplyPolicy reaches the daemon both directly (set_policy) and through its own reload.
With a Policy object the API shares the daemon's own store (one audit history)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubernetes import client as k8s

from policies.errors import InputError
from scheduler.api.auth import TokenTable
from scheduler.api.policy_store import ConfigMapSource, FileSource, PolicySource
from scheduler.api.server import ApiConfig, ApiServer
from scheduler.k8s.daemon import Daemon


def daemon_policy_source(daemon: Daemon, api: k8s.ApiClient) -> PolicySource:
    if daemon.policy_object is not None:
        return daemon.policy_object.source
    if daemon.policy_configmap is not None:
        where = daemon.policy_configmap
        return ConfigMapSource(k8s.CoreV1Api(api), where.namespace, where.name, where.key)
    if daemon.policy_file is not None:
        return FileSource(daemon.policy_file)
    raise InputError("the API needs the daemon's policy in a ConfigMap or a file to store it")


def serve_daemon_api(
    daemon: Daemon,
    api: k8s.ApiClient,
    *,
    tokens: Path,
    ledger_url: str,
    listen: str = "127.0.0.1:50051",
    keep_tokens_on_reload_error: bool = False,
    read_front: bool = True,
    **options: Any,
) -> ApiServer:
    """Start the API on a running daemon; `options` are further ApiConfig fields (TLS
    files, limits, insecure_plaintext). With `read_front` its address is served by a
    front process (scheduler/api/front.py). Its own series (token reloads, refused calls) go
    to the daemon's /metrics. The caller stops it with `.stop()` before stopping the
    daemon."""
    config = ApiConfig(
        tokens=TokenTable(tokens, keep_on_reload_error=keep_tokens_on_reload_error),
        policy_source=daemon_policy_source(daemon, api),
        ledger_url=ledger_url,
        policy_store=daemon.policy_object.store if daemon.policy_object is not None else None,
        address=listen,
        registry=daemon.metrics.registry,
        read_front=read_front,
        **options,
    )
    return ApiServer(daemon, config).start()
