"""A daemon whose Kubernetes API does not answer (a wrong address in the kubeconfig,
nothing listening) stops with one line naming the address and the last error, which
the CLI prints and exits 1 on; it was a TimeoutError traceback after a minute."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from policies.errors import UnavailableError
from policies.loader import load_policy
from scheduler.k8s.daemon import Daemon, DaemonConfig


def test_start_names_the_api_and_its_last_error() -> None:
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"  # the discard port on loopback: refused
    daemon = Daemon(k8s.ApiClient(configuration), load_policy(), DaemonConfig(leader_elect=False))
    with pytest.raises(UnavailableError) as failed:
        daemon.start(sync_timeout=2.0)
    message = str(failed.value)
    assert message.startswith("the Kubernetes API at http://127.0.0.1:9 did not list ")
    assert "within 2 s; last error: " in message
    assert "Connection refused" in message or "ConnectionRefused" in message
