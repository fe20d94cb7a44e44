"""Kubernetes API clients for the daemon: one connection pool sized for the binder."""

from __future__ import annotations

from pathlib import Path

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from policies.errors import InputError


def api_client(
    kubeconfig: str | Path | None = None, in_cluster: bool = False, pool_size: int = 32
) -> client.ApiClient:
    """A client from a kubeconfig file or the pod's service account. `pool_size` bounds
    the concurrent connections: the binder's workers plus the informers' watches."""
    configuration = client.Configuration()
    try:
        if in_cluster:
            config.load_incluster_config(client_configuration=configuration)
        else:
            if kubeconfig is None:
                raise InputError("give --kubeconfig FILE or --in-cluster")
            if not Path(kubeconfig).is_file():
                raise InputError(f"--kubeconfig: no such file: {kubeconfig}")
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    except ConfigException as exc:
        raise InputError(f"cannot load Kubernetes credentials: {exc}") from exc
    configuration.connection_pool_maxsize = pool_size
    return client.ApiClient(configuration)


def read_body(response: object) -> bytes:
    """Read (and so release to the pool) a raw `_preload_content=False` response."""
    data = getattr(response, "data", b"")
    return data if isinstance(data, bytes) else b""
