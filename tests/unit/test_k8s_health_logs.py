"""/healthz and /readyz beside /metrics, JSON logs, and finding Kubernetes credentials."""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from policies.errors import InputError
from scheduler.cli.logs import JsonFormatter, configure_logging
from scheduler.k8s.client import api_client, credentials_source, throttle_refresh
from scheduler.k8s.exporter import SchedulerMetrics


def _get(url: str, accept: str | None = None) -> tuple[int, str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_the_daemon_and_the_meter_listen_on_an_ipv6_address() -> None:
    # wsgiref's server is IPv4 only: on an IPv6-only cluster the probes found nothing,
    # and `--metrics-address ::` failed at start.
    from reports.metering.exporter import MeterMetrics
    from reports.metering.exporter import serve as serve_meter

    daemon = SchedulerMetrics(readiness=lambda: (True, "leader"))
    port = daemon.serve(0, "::1")
    meter = serve_meter(MeterMetrics(), 0, "::1")
    try:
        assert _get(f"http://[::1]:{port}/healthz")[::2] == (200, "ok\n")
        assert _get(f"http://[::1]:{meter.server_address[1]}/livez")[::2] == (200, "ok\n")
    finally:
        daemon.close()
        meter.shutdown()
        meter.server_close()


def test_health_ready_and_metrics_share_one_port() -> None:
    state = {"ready": False, "detail": "informer caches not synced: pods"}
    metrics = SchedulerMetrics(readiness=lambda: (bool(state["ready"]), str(state["detail"])))
    metrics.binds.labels("bound").inc()
    port = metrics.serve(0, "127.0.0.1")
    base = f"http://127.0.0.1:{port}"
    try:
        assert _get(f"{base}/healthz")[::2] == (200, "ok\n")
        assert _get(f"{base}/readyz")[::2] == (503, "not ready: informer caches not synced: pods\n")
        state.update(ready=True, detail="standby")
        assert _get(f"{base}/readyz")[::2] == (200, "ready: standby\n")
        code, content_type, body = _get(f"{base}/metrics")
        assert code == 200 and content_type.startswith("text/plain; version=0.0.4")
        assert 'fairpool_binds_total{result="bound"} 1.0' in body
        # prometheus-client's own content negotiation is kept.
        code, content_type, body = _get(
            f"{base}/metrics", accept="application/openmetrics-text; version=1.0.0"
        )
        assert content_type.startswith("application/openmetrics-text") and body.endswith("# EOF\n")
    finally:
        metrics.close()


def test_json_formatter_writes_one_object_per_line_with_extras_and_exceptions() -> None:
    logger = logging.getLogger("fairpool.test.json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("policy %s refused", "default", extra={"generation": 3})
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("cycle failed")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "policy default refused" and first["level"] == "WARNING"
    assert first["logger"] == "fairpool.test.json" and first["generation"] == 3
    assert first["time"].endswith("+00:00")
    assert "exception" not in first
    assert second["exception"].splitlines()[-1] == "ValueError: bad"


def test_configure_logging_refuses_an_unknown_format() -> None:
    with pytest.raises(InputError, match="--log-format"):
        configure_logging("INFO", "xml")


def test_credentials_are_found_as_kubectl_finds_them(tmp_path: Path) -> None:
    given = tmp_path / "given.yaml"
    given.write_text("apiVersion: v1\n")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("apiVersion: v1\n")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    env = {"KUBECONFIG": str(env_file), "KUBERNETES_SERVICE_HOST": "10.0.0.1", "HOME": str(home)}
    assert credentials_source(given, False, env) == str(given), "--kubeconfig first"
    assert credentials_source(None, False, env) == str(env_file), "then $KUBECONFIG"
    assert credentials_source(None, True, env) is None, "--in-cluster asked for"
    del env["KUBECONFIG"]
    assert credentials_source(None, False, env) is None, "in a pod: the service account"
    del env["KUBERNETES_SERVICE_HOST"]
    with pytest.raises(InputError, match="no Kubernetes credentials"):
        credentials_source(None, False, env)
    (home / ".kube" / "config").write_text("apiVersion: v1\n")
    assert credentials_source(None, False, env) == str(home / ".kube" / "config")
    with pytest.raises(InputError, match="no such file"):
        credentials_source(tmp_path / "missing.yaml", False, env)
    with pytest.raises(InputError, match=r"\$KUBECONFIG"):
        credentials_source(None, False, {"KUBECONFIG": str(tmp_path / "nope")})
    with pytest.raises(InputError, match="not both"):
        credentials_source(given, True, env)


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"garbage: [\n", "not valid YAML"), (b"\xff\xfe\x00binary", "not UTF-8 text")],
)
def test_a_kubeconfig_that_is_not_yaml_text_is_one_line(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    # Both were tracebacks (a YAML parser error, a UnicodeDecodeError).
    path = tmp_path / "kubeconfig"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"cannot load Kubernetes credentials: {path}: {reason}"):
        api_client(path)


def test_the_credentials_refresh_runs_at_most_once_a_second(tmp_path: Path) -> None:
    # A token kubeconfig installs a refresh hook that runs before every request (and
    # installs itself again each time); the client's runs it at most once a second.
    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {"token": "secret-token"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    daemons = api_client(kubeconfig).configuration
    auth = daemons.auth_settings()["BearerToken"]
    assert auth["in"] == "header" and auth["value"] == "Bearer secret-token"
    assert daemons.host == "https://127.0.0.1:6443"
    hook = daemons.refresh_api_key_hook
    assert hook is not None and hook.__qualname__.startswith("throttle_refresh.")

    # The library's hook copies the kubeconfig's server onto the configuration: seen
    # through `host`, whether it ran.
    configuration = k8s_client.Configuration()
    k8s_config.load_kube_config(
        config_file=str(kubeconfig), client_configuration=configuration, persist_config=False
    )
    now = [100.0]
    throttle_refresh(configuration, 1.0, clock=lambda: now[0])

    def ran() -> bool:
        configuration.host = "https://127.0.0.1:1"
        configuration.auth_settings()
        return configuration.host == "https://127.0.0.1:6443"

    assert ran(), "the first request runs it"
    assert not any(ran() for _ in range(50)), "not again within the second"
    now[0] += 0.99
    assert not ran()
    now[0] += 0.02
    assert ran(), "a second after its last run it runs again"
    assert not ran(), "and stays throttled after the library installed its hook again"
    assert configuration.auth_settings()["BearerToken"]["value"] == "Bearer secret-token"
