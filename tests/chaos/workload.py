"""The chaos run's workload: jobs of several shapes (single pods, gangs) from several
members, and a small controller that recreates a job's pods when they are removed before
they finish, as a Job or a training operator would (fairpool deletes pods on a reclaim
and when it undoes a gang; whatever created them recreates them).

Every pod the controller creates is remembered, so at the end each one is accounted for:
bound, finished, pending with fairpool's reason, or removed by fairpool.
"""

from __future__ import annotations

import logging
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

JOB_LABEL = "fairpool.io/chaos-job"
GANG_LABEL = "fairpool.io/gang"
GANG_SIZE = "fairpool.io/gang-size"
DURATION = "fairpool.io/duration-seconds"

SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (1, 4), (2, 4), (4, 2), (3, 8), (8, 1))
"""(pods, GPUs per pod): single pods of 1, 2 and 4 GPUs; gangs of 2x4, 4x2, 3x8, 8x1."""


@dataclass
class Slot:
    """One pod of a job, through its recreations."""

    job: str
    index: int
    namespace: str
    gpus: int
    gang_size: int
    duration: float
    generation: int = 0
    created: bool = False
    finished: bool = False
    names: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.job}-{self.index}-g{self.generation}"


def pod_body(slot: Slot) -> dict[str, Any]:
    labels = {JOB_LABEL: slot.job}
    annotations = {DURATION: f"{slot.duration:g}"}
    if slot.gang_size > 1:
        labels[GANG_LABEL] = slot.job
        annotations[GANG_SIZE] = str(slot.gang_size)
    return {
        "metadata": {"name": slot.name, "labels": labels, "annotations": annotations},
        "spec": {
            "schedulerName": "fairpool",
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "train",
                    "image": "example.invalid/train:1",
                    "resources": {"limits": {"nvidia.com/gpu": str(slot.gpus)}},
                }
            ],
        },
    }


class Controller:
    """Submits jobs at random (seeded) and keeps their pods there until they finish."""

    def __init__(
        self,
        admin: k8s.ApiClient,
        namespaces: dict[str, str],
        seed: int,
        jobs_per_second: float = 0.5,
        durations: tuple[float, float] = (20.0, 90.0),
    ) -> None:
        self.core = k8s.CoreV1Api(admin)
        self.namespaces = namespaces
        self.random = random.Random(seed)
        self.jobs_per_second = jobs_per_second
        self.durations = durations
        self.slots: list[Slot] = []
        self.recreated = 0
        self.submitting = threading.Event()
        self.submitting.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="chaos-controller", daemon=True)

    def start(self) -> Controller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def submit(self, member: str, pods: int, gpus: int) -> None:
        job = f"j{len({s.job for s in self.slots}):04d}-{member}"
        duration = round(self.random.uniform(*self.durations), 1)
        with self._lock:
            for index in range(pods):
                self.slots.append(Slot(job, index, self.namespaces[member], gpus, pods, duration))

    def submit_random(self) -> None:
        member = self.random.choice(sorted(self.namespaces))
        pods, gpus = self.random.choice(SHAPES)
        self.submit(member, pods, gpus)

    def _run(self) -> None:
        due = 0.0
        while not self._stop.wait(0.5):
            if self.submitting.is_set():
                due += 0.5 * self.jobs_per_second
                while due >= 1.0:
                    self.submit_random()
                    due -= 1.0
            try:
                self.reconcile()
            except Exception as exc:  # the API server or etcd is down: next round
                log.debug("reconcile: %s", exc)

    def reconcile(self) -> None:
        """Create the pods not created yet; recreate those removed before finishing."""
        existing: dict[str, Any] = {}
        for namespace in sorted(set(self.namespaces.values())):
            for pod in self.core.list_namespaced_pod(namespace, _request_timeout=10).items:
                existing[f"{namespace}/{pod.metadata.name}"] = pod
        with self._lock:
            slots = [s for s in self.slots if not s.finished]
        for slot in slots:
            pod = existing.get(f"{slot.namespace}/{slot.name}")
            if slot.created and pod is not None:
                if pod.status and pod.status.phase == "Succeeded":
                    slot.finished = True
                continue
            if slot.created:  # removed before it finished: a new pod in its place
                slot.generation += 1
                slot.created = False
                self.recreated += 1
            try:
                self.core.create_namespaced_pod(
                    slot.namespace,
                    pod_body(slot),  # type: ignore[arg-type]
                    _request_timeout=10,
                )
            except ApiException as exc:
                if exc.status != 409:  # 409: created, the answer was lost in a restart
                    raise
            slot.created = True
            slot.names.append(slot.name)

    def created_pods(self) -> set[str]:
        with self._lock:
            return {f"{s.namespace}/{n}" for s in self.slots for n in s.names}

    def current_pods(self) -> dict[str, Slot]:
        """namespace/name of each slot's latest pod -> its slot."""
        with self._lock:
            return {f"{s.namespace}/{s.name}": s for s in self.slots if s.created}
