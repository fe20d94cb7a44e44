"""Kubernetes API clients for the daemon: one connection pool sized for the binder.

Credentials are found as kubectl finds them: `--kubeconfig`, else `$KUBECONFIG` (one
file or a colon-separated list), else the pod's service account when running in a pod
(`KUBERNETES_SERVICE_HOST` is set), else `~/.kube/config`.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from policies.errors import InputError


def credentials_source(
    kubeconfig: str | Path | None, in_cluster: bool, environ: dict[str, str] | None = None
) -> str | None:
    """The kubeconfig to load (a path or colon-separated paths), or None for the pod's
    service account."""
    env = os.environ if environ is None else environ
    if kubeconfig is not None and in_cluster:
        raise InputError("give --kubeconfig FILE or --in-cluster, not both")
    if in_cluster:
        return None
    if kubeconfig is not None:
        if not Path(kubeconfig).is_file():
            raise InputError(f"--kubeconfig: no such file: {kubeconfig}")
        return str(kubeconfig)
    if env.get("KUBECONFIG"):
        paths = [p for p in env["KUBECONFIG"].split(os.pathsep) if p]
        if not any(Path(p).expanduser().is_file() for p in paths):
            raise InputError(f"$KUBECONFIG: no such file: {env['KUBECONFIG']}")
        return env["KUBECONFIG"]
    if env.get("KUBERNETES_SERVICE_HOST"):
        return None
    default = Path(env.get("HOME", "~")).expanduser() / ".kube" / "config"
    if default.is_file():
        return str(default)
    raise InputError(
        "no Kubernetes credentials: give --kubeconfig FILE, set $KUBECONFIG, or run in a pod"
    )


def api_client(
    kubeconfig: str | Path | None = None, in_cluster: bool = False, pool_size: int = 32
) -> client.ApiClient:
    """A client from a kubeconfig or the pod's service account (see the module's
    docstring for the order). `pool_size` bounds the concurrent connections: the
    binder's workers plus the informers' watches."""
    configuration = client.Configuration()
    source = credentials_source(kubeconfig, in_cluster)
    try:
        if source is None:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(
                config_file=source, client_configuration=configuration, persist_config=False
            )
    except ConfigException as exc:
        raise InputError(f"cannot load Kubernetes credentials: {exc}") from exc
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def read_body(response: object) -> bytes:
    """Read (and so release to the pool) a raw `_preload_content=False` response."""
    data = getattr(response, "data", b"")
    return data if isinstance(data, bytes) else b""
