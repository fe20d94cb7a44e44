"""Kubernetes API clients for the daemon: one connection pool sized for the binder.

Credentials are found as kubectl finds them: `--kubeconfig`, else `$KUBECONFIG` (one
file or a colon-separated list), else the pod's service account when running in a pod
(`KUBERNETES_SERVICE_HOST` is set), else `~/.kube/config`.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
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
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        # The library reads the file itself: broken YAML or bytes that are not text
        # were tracebacks.
        reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not valid YAML"
        raise InputError(f"cannot load Kubernetes credentials: {source}: {reason}") from exc
    configuration.connection_pool_maxsize = pool_size
    throttle_refresh(configuration, CREDENTIALS_REFRESH_SECONDS)
    return client.ApiClient(configuration)


CREDENTIALS_REFRESH_SECONDS = 1.0
"""How often the credentials' refresh hook may run at most (see `throttle_refresh`)."""


def throttle_refresh(
    configuration: client.Configuration,
    seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Let the configuration's credentials refresh hook run at most once every `seconds`
    (the first request always runs it).

    The kubeconfig's and the service account's refresh hooks run before every request:
    they renew a token when it is due, then copy the whole connection set-up onto the
    configuration again, whose `host` setter reads every environment variable for a
    proxy. At a bind per pod that was about 5 % of the daemon's time. Tokens are renewed
    well before they expire (the service account's file is read again every minute), so
    a second's delay changes nothing, and a request refused meanwhile (401) is retried.
    Each run installs a new hook of the library's, which this one takes over."""
    hook: Callable[[Any], None] | None = configuration.refresh_api_key_hook
    if hook is None:
        return
    last = -math.inf
    lock = threading.Lock()

    def throttled(config: Any) -> None:
        nonlocal hook, last
        with lock:
            now = clock()
            if hook is None or now - last < seconds:
                return
            last = now
            hook(config)
            renewed = config.refresh_api_key_hook
            if renewed is not throttled:
                hook = renewed
                config.refresh_api_key_hook = throttled

    # The library types the attribute as None (a hook is set at run time).
    configuration.refresh_api_key_hook = throttled  # type: ignore[assignment]


def read_body(response: object) -> bytes:
    """Read (and so release to the pool) a raw `_preload_content=False` response."""
    data = getattr(response, "data", b"")
    return data if isinstance(data, bytes) else b""


def patch_pod_status(
    core: client.CoreV1Api, name: str, namespace: str, uid: str, status: Mapping[str, Any]
) -> None:
    """PATCH the status of this very pod: the UID is immutable, so a pod replaced under
    the same name refuses the patch. The answer is read and dropped; a refusal raises
    the `ApiException`."""
    body = {"metadata": {"uid": uid}, "status": dict(status)}
    read_body(
        core.patch_namespaced_pod_status(
            name, namespace, body, _preload_content=False, _request_timeout=(5, 30)
        )
    )


def namespaced_path(namespace: str, resource: str, name: str = "", subresource: str = "") -> str:
    """The core API path of a namespaced object (or of its subresource)."""
    parts = ["/api/v1/namespaces", quote(namespace, safe=""), resource]
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def post_json(
    api: client.ApiClient,
    path: str,
    body: Mapping[str, Any],
    timeout: tuple[float, float],
) -> bytes:
    """POST `body` as JSON to `path` and return the answer's body; an answer outside 2xx
    raises the `ApiException` the generated methods raise (status, reason and body set).

    Why not `CoreV1Api.create_namespaced_pod_binding`: the generated methods validate
    every argument through pydantic and turn a dict body into its model class and back
    before sending it, work that took about a sixth of the daemon's time while it bound
    a backlog, once per pod. This sends the same request through the same client: its
    connection pool and TLS settings, its default headers (User-Agent), and its
    credentials, which `auth_settings()` reads through the refresh hook (see
    `throttle_refresh`) as the generated methods do."""
    headers = dict(api.default_headers)
    headers["Content-Type"] = "application/json"
    headers["Accept"] = "application/json"
    for auth in api.configuration.auth_settings().values():
        if auth["in"] == "header" and auth["value"]:
            headers[auth["key"]] = auth["value"]
    response = api.rest_client.request(
        "POST",
        api.configuration.host + path,
        headers=headers,
        body=body,
        _request_timeout=timeout,
    )
    data = response.read()
    if not 200 <= response.status <= 299:
        raise ApiException.from_response(http_resp=response, body=None, data=None)
    return data if isinstance(data, bytes) else b""


def retry_after(exc: ApiException) -> float | None:
    """The seconds the API server asked a client to wait before trying again, on a 429
    (API Priority and Fairness shedding load) or a 5xx: its `Retry-After` header, else
    its Status's `details.retryAfterSeconds`; None when it asked nothing."""
    if exc.status is None or (exc.status != 429 and exc.status < 500):
        return None
    header = (exc.headers or {}).get("Retry-After")
    if header is not None:
        try:
            return max(0.0, float(header))
        except ValueError:
            pass  # an HTTP date: the Status's figure, if any, is the API server's own
    seconds = status_details(exc).get("retryAfterSeconds")
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
        return float(seconds)
    return None


def status_details(exc: ApiException) -> dict[str, Any]:
    """The `details` of the API server's Status answer ({} when it has none, or the body
    is no Status)."""
    try:
        details = json.loads(exc.body or "{}").get("details")
    except (ValueError, AttributeError):
        return {}
    return details if isinstance(details, dict) else {}


def status_message(exc: ApiException) -> str:
    """The message of the API server's Status answer (why it refused), else the reason
    phrase."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
