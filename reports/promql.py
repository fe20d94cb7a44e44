"""PromQL for metering: per-hour sums evaluated by Prometheus at the scrape resolution.

Every hourly quantity is an instant expression evaluated at the END of its hour with
``offset 1ms``, so its range covers exactly [hour, hour + 1h). A range query with a
one-hour step then yields one point per hour and series.

Allocation is integrated on the scrape grid (a subquery with the scrape interval as
resolution): a series counts at a grid point when its last sample is younger than one
scrape interval (a series that disappears stops accruing after one interval), or when
a gap of missing scrapes shorter than ``max_gap`` is bridged by a later sample
(``offset -max_gap`` looks ahead). Duplicate series from exporter replicas, which differ
only in exporter labels, collapse with ``max by`` over the identifying labels.
"""

from __future__ import annotations

from dataclasses import dataclass

FAIRPOOL_LABELS = ("namespace", "pod", "uid", "member", "owner", "gpu_model", "node")
POD_LABELS = ("namespace", "pod", "uid")
NODE_LABEL_KEYS = ("node", "label_fairpool_io_owner", "label_nvidia_com_gpu_product")

FAIRPOOL_ALLOCATION = "fairpool_pod_gpu_allocation"
RECLAIM_LOST = "fairpool_reclaim_lost_gpu_seconds_total"
KSM_REQUESTS = 'kube_pod_container_resource_requests{resource="nvidia_com_gpu"}'
KSM_RUNNING = 'kube_pod_status_phase{phase="Running"}'
KSM_START = "kube_pod_start_time"
KSM_COMPLETION = "kube_pod_completion_time"
KSM_POD_INFO = "kube_pod_info"
KSM_NODE_LABELS = "kube_node_labels"
KSM_ALLOCATABLE = 'kube_node_status_allocatable{resource="nvidia_com_gpu"}'
DCGM_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"


def duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds."""
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class MeteringQueries:
    """The expressions for one scrape interval and bridged-gap limit (seconds)."""

    interval: float = 30.0
    max_gap: float = 300.0

    def __post_init__(self) -> None:
        if self.interval <= 0 or 3600 % self.interval:
            raise ValueError(f"scrape interval {self.interval}s must divide an hour")
        if self.max_gap < self.interval:
            raise ValueError("max_gap must be at least one scrape interval")

    @property
    def expected_per_hour(self) -> float:
        return 3600.0 / self.interval

    def live(self, selector: str, by: tuple[str, ...]) -> str:
        """The identity's last value at each grid point while it is live (see module)."""
        b = ", ".join(by)
        # One millisecond short of an interval: Prometheus 2 range selectors include
        # their left bound, and a sample must count at one grid point only.
        i, g = duration(self.interval - 0.001), duration(self.max_gap)
        return (
            f"max by ({b}) (last_over_time({selector}[{g}]))"
            f" and on ({b}) ("
            f"max by ({b}) (present_over_time({selector}[{i}]))"
            f" or max by ({b}) (present_over_time({selector}[{g}] offset -{g}))"
            ")"
        )

    def live_sum(self, selector: str, by: tuple[str, ...]) -> str:
        """Σ value over the hour's live grid points (x interval = value-seconds)."""
        return (
            f"sum_over_time(({self.live(selector, by)})[1h:{duration(self.interval)}] offset 1ms)"
        )

    def live_count(self, selector: str, by: tuple[str, ...]) -> str:
        """Live grid points in the hour: the samples expected of the identity."""
        return (
            f"count_over_time(({self.live(selector, by)})[1h:{duration(self.interval)}] offset 1ms)"
        )

    def present(self, selector: str, by: tuple[str, ...]) -> str:
        """Samples actually scraped in the hour (per identity, replicas collapsed)."""
        return f"max by ({', '.join(by)}) (count_over_time({selector}[1h] offset 1ms))"

    def around(self, selector: str, by: tuple[str, ...], agg: str = "max") -> str:
        """The last value of an identity seen in (hour - max_gap, hour end + max_gap]:
        pod and node attributes, and start/completion times of pods that ran briefly."""
        g = duration(self.max_gap)
        window = duration(3600 + 2 * self.max_gap)
        return f"{agg} by ({', '.join(by)}) (last_over_time({selector}[{window}] offset -{g}))"

    def pod_gpu_requests(self) -> str:
        per_container = self.around(KSM_REQUESTS, (*POD_LABELS, "container"))
        return f"sum by ({', '.join(POD_LABELS)}) ({per_container})"

    def dcgm_mean(self, metric: str) -> str:
        """Mean of each GPU series over its samples in the hour (labels kept)."""
        return f"avg_over_time({metric}[1h] offset 1ms)"

    def counter_samples(self, metric: str, span_seconds: float) -> str:
        """Raw samples over `span_seconds` plus `max_gap` before, for reset-aware increase."""
        return f"{metric}[{duration(span_seconds + self.max_gap)}]"
