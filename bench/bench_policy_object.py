"""How soon a `kubectl apply` of the Policy object shows in its status.

One fresh control plane (etcd, kube-apiserver, kwok), the Policy CRD, a Policy object
and the daemon in this process (`--policy-object`, the scheduler's identity, no leader
election). The object is replaced `CHANGES` times, every third change invalid (a GPU
model purchased that the policy does not list, which only the daemon can refuse).
Each change is timed from the replace call's answer until the status says so
(`generationInForce`, or `observedGeneration` with `Ready=False`), two ways: by polling
the object every 20 ms, and by a watch on it (the API server pushes each status write).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import watch
from rich.console import Console
from rich.table import Table

from policies.crd import GROUP, PLURAL, VERSION, crd
from policies.loader import DEFAULT_POLICY
from scheduler.cli.tables import print_table

CHANGES = 30
NAME = "bench"


def _status_reached(obj: dict[str, Any], generation: int, refused: bool) -> bool:
    status = obj.get("status") or {}
    if refused:
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status.get("observedGeneration") == generation and ready.get("status") == "False"
    return status.get("generationInForce") == generation


def _install(admin: k8s.ApiClient) -> k8s.CustomObjectsApi:
    extensions = k8s.ApiextensionsV1Api(admin)
    extensions.create_custom_resource_definition(crd())
    while True:
        found = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}")
        if any(
            c.type == "Established" and c.status == "True" for c in found.status.conditions or []
        ):
            break
        time.sleep(0.1)
    custom = k8s.CustomObjectsApi(admin)
    document = yaml.safe_load(DEFAULT_POLICY.read_text())
    document["metadata"] = {"name": NAME}
    custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, document)
    return custom


def _measure(custom: k8s.CustomObjectsApi) -> dict[str, dict[str, list[float]]]:
    """change kind -> way -> seconds per change."""
    found: dict[str, dict[str, list[float]]] = {
        kind: {"poll": [], "watch": []} for kind in ("taken", "refused")
    }
    target: dict[str, Any] = {}
    reached = threading.Event()
    stop = threading.Event()

    def watch_object() -> None:
        w = watch.Watch()
        try:
            for event in w.stream(
                custom.list_cluster_custom_object,
                GROUP,
                VERSION,
                PLURAL,
                field_selector=f"metadata.name={NAME}",
                timeout_seconds=600,
            ):
                if stop.is_set():
                    break
                goal = dict(target)
                if goal and _status_reached(event["object"], goal["generation"], goal["refused"]):
                    target["watched_at"] = time.monotonic()
                    reached.set()
        except Exception:
            if not stop.is_set():  # the control plane going away ends the watch
                raise
        finally:
            w.stop()

    watcher = threading.Thread(target=watch_object, daemon=True)
    watcher.start()
    time.sleep(1.0)
    base = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, NAME)
    for i in range(CHANGES):
        refused = i % 3 == 2
        obj = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, NAME)
        spec = copy.deepcopy(base["spec"])
        spec["members"][0]["weight"] = 2 + i
        if refused:
            spec["members"][0]["purchased"] = {"TPU-v9": 1}
        obj["spec"] = spec
        reached.clear()
        target.clear()
        written = custom.replace_cluster_custom_object(GROUP, VERSION, PLURAL, NAME, obj)
        started = time.monotonic()
        target.update(generation=written["metadata"]["generation"], refused=refused)
        while not _status_reached(
            custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, NAME),
            target["generation"],
            refused,
        ):
            time.sleep(0.02)
        polled = time.monotonic() - started
        if not reached.wait(30):
            raise TimeoutError(f"change {i}: the watch never saw the status")
        kind = "refused" if refused else "taken"
        found[kind]["poll"].append(polled)
        found[kind]["watch"].append(max(0.0, target["watched_at"] - started))
    stop.set()
    return found


def run(console: Console) -> None:
    import os

    from scheduler.api.policy_audit import AuditLog
    from scheduler.k8s.client import api_client
    from scheduler.k8s.daemon import Daemon, DaemonConfig
    from tests.controlplane import start, stop

    workdir = Path(tempfile.mkdtemp(prefix="fairpool-bench-policy-"))
    plane = start(workdir / "cluster", die_with_parent=True, console=console)
    try:
        custom = _install(plane.admin)
        daemon = Daemon(
            api_client(plane.kubeconfig("scheduler")),
            config=DaemonConfig(
                leader_elect=False, watch_pod_groups=False, usage_history_configmap=None
            ),
            policy_object=NAME,
            policy_audit=AuditLog(f"sqlite:///{workdir / 'ledger.db'}"),
        ).start()
        try:
            found = _measure(custom)
        finally:
            daemon.stop()
    finally:
        stop(workdir / "cluster")
    table = Table(title=f"kubectl apply -> status ({CHANGES} changes)")
    for column in ("change", "measured by", "n", "median s", "p90 s", "max s"):
        table.add_column(column, justify="right" if column.endswith("s") else "left")
    for kind, ways in found.items():
        for way, seconds in ways.items():
            ordered = sorted(seconds)
            p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
            table.add_row(
                kind,
                way,
                str(len(ordered)),
                f"{statistics.median(ordered):.2f}",
                f"{p90:.2f}",
                f"{ordered[-1]:.2f}",
            )
    print_table(console, table)
    console.print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
