"""An informer whose list is refused (401/403/404): an optional resource counts as
empty, any other keeps the cache as it was and is retried (a kube-apiserver that just
restarted refuses requests until its RBAC is loaded). A watch whose connection breaks
resumes where it was."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes.client.exceptions import ApiException

from scheduler.k8s.cache import JOBSETS, ClusterCache
from scheduler.k8s.informer import Informer
from scheduler.k8s.objects import Obj


class Sink:
    def __init__(self) -> None:
        self.replaced: list[tuple[str, list[Obj]]] = []

    def replace(self, kind: str, objects: list[Obj]) -> None:
        self.replaced.append((kind, objects))

    def apply(self, kind: str, event_type: str, obj: Obj) -> None:
        raise AssertionError("no watch in these tests")


def refusing(calls: list[float]) -> Any:
    def list_function(**_kwargs: Any) -> Any:
        calls.append(time.monotonic())
        raise ApiException(status=403, reason="Forbidden")

    return list_function


def run_briefly(optional: bool) -> tuple[Informer, Sink, list[float]]:
    sink, calls, stop = Sink(), [], threading.Event()
    informer = Informer("pods", refusing(calls), sink, stop, optional=optional)
    informer.start()
    time.sleep(1.2)
    stop.set()
    informer.join(timeout=5)
    return informer, sink, calls


def test_a_refused_list_of_pods_leaves_the_cache_alone_and_is_retried() -> None:
    informer, sink, calls = run_briefly(optional=False)
    assert sink.replaced == [], "no pods is not what the API server said"
    assert not informer.synced.is_set()
    assert len(calls) >= 2, "retried after a short backoff"


def test_a_refused_list_of_an_optional_resource_counts_as_empty() -> None:
    informer, sink, calls = run_briefly(optional=True)
    assert sink.replaced == [("pods", [])]
    assert informer.synced.is_set() and informer.forbidden
    assert len(calls) == 1, "looked at again only after the resync period"


def test_an_optional_resource_not_served_turns_its_integration_off_in_the_cache() -> None:
    # A JobSet CRD that is not installed: the list answers 404, the cache hears that
    # JobSets are off (pods they own are placed as if unowned) and nothing fails.
    cache, stop, offs = ClusterCache(), threading.Event(), []

    def not_served(**_kwargs: Any) -> Any:
        raise ApiException(status=404, reason="Not Found")

    def off(kind: str) -> None:
        offs.append(kind)
        cache.unavailable(kind)

    informer = Informer(JOBSETS, not_served, cache, stop, optional=True, on_unavailable=off)
    informer.start()
    assert informer.synced.wait(5)
    stop.set()
    informer.join(timeout=5)
    assert offs == [JOBSETS] and informer.forbidden
    assert not cache.reads(JOBSETS)


def test_a_broken_watch_resumes_from_the_last_version_it_delivered() -> None:
    """Resumed from the list's version, the API server would replay every event since
    (minutes of them), and the cache would go back in time until the replay caught up."""
    started: list[str] = []
    applied: list[str] = []

    class Events:
        def replace(self, kind: str, objects: list[Obj]) -> None:
            pass

        def apply(self, kind: str, event_type: str, obj: Obj) -> None:
            applied.append(obj["metadata"]["resourceVersion"])

    def list_function(**_kwargs: Any) -> Any:
        class Answer:
            data = b'{"items": [], "metadata": {"resourceVersion": "10"}}'

        return Answer()

    class Breaking(Informer):
        def _events(self, w: Any, version: str) -> Any:
            started.append(version)
            first = int(version) + 1

            def stream() -> Any:
                for rv in range(first, first + 3):
                    w.resource_version = str(rv)
                    yield {"type": "MODIFIED", "object": {"metadata": {"resourceVersion": str(rv)}}}
                raise ConnectionResetError("the API server restarted")

            return stream()

    stop = threading.Event()
    informer = Breaking("pods", list_function, Events(), stop)
    informer.start()
    deadline = time.monotonic() + 5
    while len(started) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    informer.join(timeout=5)
    assert started[:3] == ["10", "13", "16"]
    assert applied[:9] == [str(rv) for rv in range(11, 20)], "no event delivered twice"
