"""A daemon whose Kubernetes API does not answer (a wrong address in the kubeconfig,
nothing listening) stops with one line naming the address and the last error, which
the CLI prints and exits 1 on; it was a TimeoutError traceback after a minute."""

from __future__ import annotations

import threading
import time

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


def test_a_stop_while_listing_ends_the_start_at_once() -> None:
    """SIGTERM (here its handler's `stop_event`) while the API does not answer: the start
    returns within a moment, stopped, instead of waiting the listing timeout out (a pod
    being deleted sat out the whole minute into its SIGKILL)."""
    configuration = k8s.Configuration()
    configuration.host = "http://127.0.0.1:9"
    daemon = Daemon(k8s.ApiClient(configuration), load_policy(), DaemonConfig(leader_elect=False))
    threading.Timer(0.5, daemon.stop_event.set).start()
    began = time.monotonic()
    assert daemon.start(sync_timeout=60.0) is daemon
    assert time.monotonic() - began < 5.0
    assert daemon.stop_event.is_set() and not daemon.cycles
