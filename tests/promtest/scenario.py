"""Known metering scenarios written as OpenMetrics text (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

# A value per sample time (unix seconds), or a constant.
Value = float | Callable[[float], float]


def ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"{value.isoformat()} has no time zone")
    return value.timestamp()


@dataclass
class Series:
    """One time series: metric family, sample name, labels and (time, value) samples."""

    family: str
    kind: str  # "gauge" | "counter"
    labels: dict[str, str]
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def sample_name(self) -> str:
        return f"{self.family}_total" if self.kind == "counter" else self.family


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str
    node: str
    gpus: int
    start: datetime
    end: datetime
    member: str
    owner: str
    gpu_model: str
    fairpool: bool
    utilization: float | None

    def gpu_seconds_in(self, start: datetime, end: datetime) -> float:
        """True allocated GPU-seconds of this pod within [start, end)."""
        lo, hi = max(self.start, start), min(self.end, end)
        return max(0.0, (hi - lo).total_seconds()) * self.gpus


@dataclass(frozen=True)
class Node:
    name: str
    owner: str
    gpu_model: str
    gpus: int
    start: datetime
    end: datetime


class Scenario:
    """A cluster's metrics over time, sampled every `interval` seconds on a grid aligned
    to multiples of `interval` since the epoch (shifted by `offset` seconds)."""

    def __init__(self, interval: float = 30.0, offset: float = 0.0, ksm_replicas: int = 1) -> None:
        self.interval = interval
        self.offset = offset
        self.ksm_replicas = ksm_replicas
        self.pods: list[Pod] = []
        self.nodes: list[Node] = []
        self.series: list[Series] = []
        self.gaps: list[tuple[float, float]] = []
        self.retain_after_end = 120.0
        """Seconds kube-state-metrics keeps reporting a finished pod before it is deleted."""

    # ---- building ------------------------------------------------------------------

    def grid(self, start: datetime, end: datetime) -> Iterator[float]:
        """Scrape times t with start <= t < end."""
        lo, hi = ts(start), ts(end)
        k = math.ceil((lo - self.offset) / self.interval)
        t = k * self.interval + self.offset
        while t < hi:
            yield t
            k += 1
            t = k * self.interval + self.offset

    def gap(self, start: datetime, end: datetime) -> None:
        """No scrape at all succeeds in [start, end): applies to every series, including
        those added later, when the scenario is written."""
        self.gaps.append((ts(start), ts(end)))

    def add_series(
        self,
        family: str,
        labels: dict[str, str],
        start: datetime,
        end: datetime,
        value: Value,
        kind: str = "gauge",
    ) -> Series:
        series = Series(family, kind, dict(labels))
        for t in self.grid(start, end):
            series.samples.append((t, value(t) if callable(value) else float(value)))
        self.series.append(series)
        return series

    def add_points(
        self,
        family: str,
        labels: dict[str, str],
        points: Iterable[tuple[datetime, float]],
        kind: str = "gauge",
    ) -> Series:
        series = Series(family, kind, dict(labels), [(ts(t), v) for t, v in points])
        self.series.append(series)
        return series

    def node(
        self,
        name: str,
        owner: str,
        gpu_model: str,
        gpus: int,
        start: datetime,
        end: datetime,
    ) -> Node:
        """A GPU node: kube_node_labels and kube_node_status_allocatable over [start, end)."""
        node = Node(name, owner, gpu_model, gpus, start, end)
        self.nodes.append(node)
        for replica in range(self.ksm_replicas):
            exporter = self._ksm_labels(replica)
            self.add_series(
                "kube_node_labels",
                {
                    **exporter,
                    "node": name,
                    "label_fairpool_io_owner": owner,
                    "label_nvidia_com_gpu_product": gpu_model,
                },
                start,
                end,
                1,
            )
            self.add_series(
                "kube_node_status_allocatable",
                {**exporter, "node": name, "resource": "nvidia_com_gpu", "unit": "integer"},
                start,
                end,
                gpus,
            )
        return node

    def node_ready(self, node: Node, not_ready: Iterable[tuple[datetime, datetime]] = ()) -> None:
        """kube-state-metrics' Ready condition of `node` over its life: NotReady (status
        "true" 0, "false" 1) in each [start, end) of `not_ready`, Ready elsewhere."""
        spans = [(ts(lo), ts(hi)) for lo, hi in not_ready]

        def ready(t: float) -> float:
            return 0.0 if any(lo <= t < hi for lo, hi in spans) else 1.0

        for replica in range(self.ksm_replicas):
            for status, value in (("true", ready), ("false", lambda t: 1.0 - ready(t))):
                self.add_series(
                    "kube_node_status_condition",
                    {
                        **self._ksm_labels(replica),
                        "node": node.name,
                        "condition": "Ready",
                        "status": status,
                    },
                    node.start,
                    node.end,
                    value,
                )

    def pod(
        self,
        namespace: str,
        name: str,
        node: Node,
        gpus: int,
        start: datetime,
        end: datetime,
        *,
        member: str | None = None,
        uid: str | None = None,
        fairpool: bool = True,
        utilization: float | None = 0.5,
        dcgm_metric: str = "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        dcgm_host_label: str = "Hostname",
        dcgm_exported: bool = False,
        pod_info: bool = True,
    ) -> Pod:
        """A GPU pod running on `node` over [start, end): fairpool's allocation gauge (when
        `fairpool`), kube-state-metrics' pod series (always) and DCGM utilization per GPU
        (when `utilization` is not None; fraction 0..1). Without `pod_info`, no
        ``kube_pod_info`` series (the requests' `node` label is then the only one)."""
        pod = Pod(
            namespace,
            name,
            uid or f"uid-{namespace}-{name}",
            node.name,
            gpus,
            start,
            end,
            member or namespace,
            node.owner,
            node.gpu_model,
            fairpool,
            utilization,
        )
        self.pods.append(pod)
        ident = {"namespace": namespace, "pod": name, "uid": pod.uid}
        if fairpool:
            self.add_series(
                "fairpool_pod_gpu_allocation",
                {
                    **ident,
                    "member": pod.member,
                    "owner": node.owner,
                    "gpu_model": node.gpu_model,
                    "node": node.name,
                },
                start,
                end,
                gpus,
            )
        gone = end + timedelta(seconds=self.retain_after_end)
        for replica in range(self.ksm_replicas):
            exporter = self._ksm_labels(replica)
            # Exporter labels clash with the pod's: kube-state-metrics is scraped with
            # honor_labels, so the pod's own namespace/pod labels win.
            self.add_series(
                "kube_pod_container_resource_requests",
                {
                    **exporter,
                    **ident,
                    "container": "main",
                    "node": node.name,
                    "resource": "nvidia_com_gpu",
                    "unit": "integer",
                },
                start,
                gone,
                gpus,
            )
            if pod_info:
                self.add_series(
                    "kube_pod_info", {**exporter, **ident, "node": node.name}, start, gone, 1
                )
            self.add_series(
                "kube_pod_status_phase",
                {**exporter, **ident, "phase": "Running"},
                start,
                gone,
                lambda t: 1.0 if t < ts(end) else 0.0,
            )
            self.add_series("kube_pod_start_time", {**exporter, **ident}, start, gone, ts(start))
            # The completion time appears once the pod has finished.
            self.add_series(
                "kube_pod_completion_time",
                {**exporter, **ident},
                end,
                gone,
                ts(end),
            )
        if utilization is not None:
            for gpu in range(gpus):
                labels = {
                    "gpu": str(gpu),
                    dcgm_host_label: node.name,
                    "modelName": node.gpu_model,
                    "instance": f"{node.name}:9400",
                }
                if dcgm_exported:
                    labels |= {
                        "namespace": "gpu-operator",
                        "pod": f"dcgm-exporter-{node.name}",
                        "exported_namespace": namespace,
                        "exported_pod": name,
                    }
                else:
                    labels |= {"namespace": namespace, "pod": name}
                scale = 100.0 if dcgm_metric == "DCGM_FI_DEV_GPU_UTIL" else 1.0
                self.add_series(dcgm_metric, labels, start, end, utilization * scale)
        return pod

    def _ksm_labels(self, replica: int) -> dict[str, str]:
        return {
            "job": "kube-state-metrics",
            "instance": f"10.0.0.{10 + replica}:8080",
        }

    # ---- expectations --------------------------------------------------------------

    def gpu_seconds(self, start: datetime, end: datetime) -> float:
        return sum(p.gpu_seconds_in(start, end) for p in self.pods)

    def pod_gpu_seconds(self, start: datetime, end: datetime) -> dict[str, float]:
        out = {p.uid: p.gpu_seconds_in(start, end) for p in self.pods}
        return {uid: s for uid, s in out.items() if s > 0}

    def capacity_gpu_seconds(self, start: datetime, end: datetime) -> float:
        total = 0.0
        for n in self.nodes:
            lo, hi = max(n.start, start), min(n.end, end)
            total += max(0.0, (hi - lo).total_seconds()) * n.gpus
        return total

    # ---- output --------------------------------------------------------------------

    def write_openmetrics(self, path: Path) -> Path:
        """Write every series as OpenMetrics text (families grouped, samples in time
        order, `# EOF` last), the input of `promtool tsdb create-blocks-from openmetrics`."""
        tmp = path.with_suffix(path.suffix + ".tmp")
        with tmp.open("w", encoding="utf-8") as out:
            write_families(out, self.series, self.gaps)
        tmp.replace(path)
        return path


def write_families(
    out: TextIO, series: Iterable[Series], gaps: Iterable[tuple[float, float]] = ()
) -> None:
    gaps = list(gaps)
    families: dict[str, list[Series]] = {}
    kinds: dict[str, str] = {}
    for s in series:
        families.setdefault(s.family, []).append(s)
        kinds[s.family] = s.kind
    for family, members in families.items():
        out.write(f"# TYPE {family} {kinds[family]}\n")
        for s in members:
            prefix = s.sample_name + format_labels(s.labels)
            out.write(
                "".join(
                    f"{prefix} {_num(v)} {_num(t)}\n"
                    for t, v in sorted(s.samples)
                    if not any(a <= t < b for a, b in gaps)
                )
            )
    out.write("# EOF\n")


def format_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    body = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in sorted(labels.items())
    )
    return "{" + body + "}"


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"  # OpenMetrics' spelling (Python's repr is "nan")
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc,arg-type]
