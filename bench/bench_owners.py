"""Gangs read from the owning object against hand-labelled gangs, on 1,000 kwok nodes.

The cluster of bench_k8s (1,000 kwok nodes x 8 GPUs, four members) with
kube-controller-manager and the real JobSet controller running. `fairpool run` (its own
process, 16 bind workers) binds, in turn:

- hand-labelled: 200 gangs of 4 pods x 8 GPUs created directly, each pod with the
  `fairpool.io/gang` label and `fairpool.io/gang-size` annotation;
- JobSets: 200 JobSets submitted at once, each of 2 Jobs x 2 pods x 8 GPUs (the same
  800 pods), no gang label: the JobSet controller makes the Jobs, the Job controller the
  pods, and fairpool reads each gang's size from the JobSet.

Each row: first submission to the last gang fully bound (as a watch saw the binds), and
for the JobSets also to the last pod created (by its creationTimestamp, whole seconds),
so the part the controllers take is apart from fairpool's. The machine's two cores are
shared by everything; the load average is printed with each row.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s
from rich.console import Console
from rich.table import Table

from bench.bench_k8s import (
    MEMBERS,
    NODES,
    WORKERS,
    FairpoolProcess,
    _create_all,
    _delete_bench_pods,
    _pod,
    _wait,
    bench_cluster,
)
from scheduler.cli.tables import print_table

GANGS = 200
GANG_SIZE = 4
GPUS = 8
JOBS_PER_JOBSET = 2
TIMEOUT = 900.0


@dataclass(frozen=True)
class Row:
    scenario: str
    pods: int
    submitted_seconds: float
    """First to last submission (pods or JobSets)."""
    bound_seconds: float
    """First submission to the last pod bound."""
    created_seconds: float | None
    """First submission to the last pod created (JobSets only)."""
    load: float


def _labelled_pods() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for g in range(GANGS):
        for k in range(GANG_SIZE):
            body = _pod(f"hand{g}-{k}", "fairpool", (f"hand{g}", GANG_SIZE))
            body["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = str(GPUS)
            out.append((f"bench-{MEMBERS[g % len(MEMBERS)]}", body))
    return out


def _jobset(name: str) -> dict[str, Any]:
    template = _pod("unused", "fairpool")
    template["metadata"].pop("name")
    template["spec"]["restartPolicy"] = "Never"
    template["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = str(GPUS)
    per_job = GANG_SIZE // JOBS_PER_JOBSET
    return {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": name},
        "spec": {
            "replicatedJobs": [
                {
                    "name": "w",
                    "replicas": JOBS_PER_JOBSET,
                    "template": {
                        "spec": {
                            "parallelism": per_job,
                            "completions": per_job,
                            "template": template,
                        }
                    },
                }
            ]
        },
    }


def _submit_jobsets(custom: k8s.CustomObjectsApi) -> tuple[float, float]:
    first = time.monotonic()

    def create(g: int) -> None:
        namespace = f"bench-{MEMBERS[g % len(MEMBERS)]}"
        for attempt in range(5):
            try:
                custom.create_namespaced_custom_object(
                    "jobset.x-k8s.io", "v1alpha2", namespace, "jobsets", _jobset(f"js{g}")
                )
                return
            except k8s.exceptions.ApiException:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(create, range(GANGS)))
    return first, time.monotonic()


def _last_created(core: k8s.CoreV1Api, wall_at_first: float) -> float:
    pods = core.list_pod_for_all_namespaces(label_selector="fairpool.io/bench=true").items
    latest = max(p.metadata.creation_timestamp.timestamp() for p in pods)
    return latest - wall_at_first


def _print(console: Console, row: Row) -> None:
    created = f", last pod created at {row.created_seconds:.0f}s" if row.created_seconds else ""
    console.print(
        f"{row.scenario}: {row.pods} pods, last gang bound {row.bound_seconds:.1f}s after the "
        f"first submission{created} (load average {row.load:.1f})"
    )


def run(console: Console) -> None:
    from tests.controlplane.controllers import JOBSET, start_controller, stop_controller

    rows: list[Row] = []
    pods = GANGS * GANG_SIZE
    with bench_cluster(console) as b:
        jobset = start_controller(b.plane, JOBSET)
        fairpool = FairpoolProcess(b.plane, b.workdir)
        fairpool.start()
        try:
            # A warm-up pod proves fairpool is up (caches synced) before the clock starts.
            b.core.create_namespaced_pod(
                f"bench-{MEMBERS[0]}",
                _pod("warm-up", "fairpool"),  # type: ignore[arg-type]
            )
            _wait(lambda: b.watch.count() >= 1, 180, "warm-up pod bound")
            _delete_bench_pods(b.core, b.watch)

            with console.status(f"hand-labelled: {GANGS} gangs of {GANG_SIZE} pods"):
                first, last = _create_all(b.core, _labelled_pods())
                _wait(lambda: b.watch.count() >= pods, TIMEOUT, "hand-labelled gangs bound")
            rows.append(
                Row(
                    "hand-labelled gangs",
                    pods,
                    last - first,
                    b.watch.last() - first,
                    None,
                    os.getloadavg()[0],
                )
            )
            _print(console, rows[-1])
            _delete_bench_pods(b.core, b.watch)

            custom = k8s.CustomObjectsApi(b.core.api_client)
            with console.status(f"JobSets: {GANGS} of {JOBS_PER_JOBSET} Jobs"):
                wall = time.time()
                first, last = _submit_jobsets(custom)
                _wait(lambda: b.watch.count() >= pods, TIMEOUT, "JobSet gangs bound")
            rows.append(
                Row(
                    f"JobSets ({JOBS_PER_JOBSET} Jobs x {GANG_SIZE // JOBS_PER_JOBSET} pods)",
                    pods,
                    last - first,
                    b.watch.last() - first,
                    _last_created(b.core, wall),
                    os.getloadavg()[0],
                )
            )
            _print(console, rows[-1])
        finally:
            fairpool.stop()
            with contextlib.suppress(Exception):
                stop_controller(b.plane, jobset)
    _table(console, rows)


def _table(console: Console, rows: list[Row]) -> None:
    table = Table(
        title=f"{GANGS} gangs of {GANG_SIZE} pods x {GPUS} GPUs submitted at once, {NODES} kwok "
        f"nodes, fairpool with {WORKERS} bind workers, {os.cpu_count()} cores shared",
        title_justify="left",
    )
    for column in (
        "gangs from",
        "pods",
        "submitted in s",
        "last pod created at s",
        "last gang bound at s",
        "bound after last pod s",
        "load average",
    ):
        table.add_column(column, justify="left" if column == "gangs from" else "right")
    for r in rows:
        created = r.created_seconds if r.created_seconds is not None else r.submitted_seconds
        table.add_row(
            r.scenario,
            f"{r.pods}",
            f"{r.submitted_seconds:.1f}",
            f"{created:.1f}",
            f"{r.bound_seconds:.1f}",
            f"{r.bound_seconds - created:.1f}",
            f"{r.load:.1f}",
        )
    print_table(console, table)
    console.print(
        "last pod created: for hand-labelled gangs, when the last create call returned; for "
        "JobSets, the newest pod's creationTimestamp (whole seconds), after the JobSet and "
        "Job controllers made them"
    )


def main(argv: list[str]) -> int:
    run(Console())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
