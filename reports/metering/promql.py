"""PromQL for metering: per-hour figures evaluated by Prometheus at the scrape resolution.

Every hourly quantity is an instant expression evaluated at the END of its hour with
``offset 1ms``, so its range covers exactly [hour, hour + 1h). A range query with a
one-hour step then yields one point per hour and series.

Allocation is integrated on the scrape grid (subqueries with the scrape interval as
resolution). A series is *live* at a grid point t when its last sample is younger than
one interval (F: fresh), or when a gap of missing scrapes is bridged: a sample in
[t - max_gap, t] (A) and one in (t, t + max_gap] (B). A series that disappears stops
accruing after one interval. The live count |F u (A n B)| is computed as
|A| - |A u B| + |F u B|, each a count of a plain range function over the grid: set
operators and aggregations inside a subquery cost Prometheus 10-20x more (measured).
Duplicate series from exporter replicas, which differ only in exporter labels,
collapse with ``max by`` over the identifying labels, once per hour.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

# exported_*: the pod's own labels when Prometheus scrapes the daemon without
# honor_labels (its target labels then keep `namespace` and `pod`).
FAIRPOOL_LABELS = (
    "namespace",
    "pod",
    "uid",
    "member",
    "owner",
    "gpu_model",
    "node",
    "exported_namespace",
    "exported_pod",
)
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
KSM_READY = 'kube_node_status_condition{condition="Ready",status="true"}'
"""1 while the node is Ready, 0 while NotReady or Unknown (a kubelet that stopped
reporting)."""
NODE_SERIES = ("kube_node_status_allocatable", "kube_node_labels")
"""Series that exist once the cluster has a node (an hour before all of them is empty)."""
DCGM_ENGINE_ACTIVE = "DCGM_FI_PROF_GR_ENGINE_ACTIVE"
DCGM_GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"


COUNTER_LOOKBACK_S = 31 * 24 * 3600.0
"""How far back a counter's last value is looked for before a chunk: a series silent
longer than that (a month, no scrape of a live exporter) counts from zero again."""


HOUR_MS = 3_600_000

GAP_REACH_S = 3600.0
"""How far apart two samples may be for `MeteringQueries.between_points` to see the gap
between them (twice this): its windows cost Prometheus more the longer they are (with
an hour, about what `live_points` costs)."""


def interval_problem(seconds: float) -> str | None:
    """Why `seconds` cannot be the scrape grid's step, or None. Checked in decimal on the
    shortest text of the float (what was typed): float `%` refused 7.2, 4.8, 0.9, ...
    which divide an hour. The step must be whole milliseconds, the unit of PromQL
    durations and of `grid`, so a grid point falls on each hour's start."""
    exact = Decimal(repr(float(seconds)))
    if not exact.is_finite() or exact <= 0:
        return "must be a positive number of seconds"
    step_ms = exact * 1000
    if step_ms != step_ms.to_integral_value():
        return "must be whole milliseconds"
    if HOUR_MS % int(step_ms):
        return "must divide an hour (3600 s)"
    return None


def duration(seconds: float) -> str:
    """A PromQL duration in whole milliseconds."""
    return f"{round(seconds * 1000)}ms"


@dataclass(frozen=True)
class MeteringQueries:
    """The expressions for one scrape interval and bridged-gap limit (seconds)."""

    interval: float = 30.0
    max_gap: float = 300.0

    def __post_init__(self) -> None:
        problem = interval_problem(self.interval)
        if problem is not None:
            raise ValueError(f"scrape interval {self.interval}s {problem}")
        if self.max_gap < self.interval:
            raise ValueError("max_gap must be at least one scrape interval")

    @property
    def expected_per_hour(self) -> float:
        return 3600.0 / self.interval

    def _grid(self, inner: str) -> str:
        return f"count_over_time(({inner})[1h:{duration(self.interval)}] offset 1ms)"

    def live_points(self, selector: str, by: tuple[str, ...]) -> str:
        """Grid points in the hour where the identity is live (see module docstring)."""
        b = ", ".join(by)
        g = duration(self.max_gap)
        either = duration(2 * self.max_gap)
        fresh_or_ahead = duration(self.max_gap + self.interval - 0.001)
        # One millisecond short of an interval: Prometheus 2 range selectors include
        # their left bound, and a sample must be fresh at one grid point only.
        behind = self._grid(f"last_over_time({selector}[{g}])")
        around = self._grid(f"present_over_time({selector}[{either}] offset -{g})")
        ahead = self._grid(f"present_over_time({selector}[{fresh_or_ahead}] offset -{g})")
        return (
            f"max by ({b}) ({behind}) - on ({b}) max by ({b}) ({around})"
            f" + on ({b}) max by ({b}) ({ahead})"
        )

    def zero_points(self, selector: str, by: tuple[str, ...]) -> str:
        """Grid points in the hour where the identity is live (as in `live_points`) and its
        last sample at or before the point is 0: a NotReady node's. live is F u (A n B)
        = A n (F u B), and the last sample within max_gap exists exactly where A holds,
        so the product of its `== bool 0` with the presence in F u B is 1 exactly at
        those points. The product matches each series with itself; node series are few,
        so the vector match inside the subquery costs little (unlike the pods')."""
        g = duration(self.max_gap)
        fresh_or_ahead = duration(self.max_gap + self.interval - 0.001)
        zero = f"(last_over_time({selector}[{g}]) == bool 0)"
        live = f"present_over_time({selector}[{fresh_or_ahead}] offset -{g})"
        counted = f"sum_over_time(({zero} * {live})[1h:{duration(self.interval)}] offset 1ms)"
        return f"max by ({', '.join(by)}) ({counted})"

    def between_points(self, selector: str, by: tuple[str, ...], reach: float = GAP_REACH_S) -> str:
        """Grid points in the hour where the identity has a sample at most `reach` before
        and one at most `reach` after: less its live points (`live_points`), the
        unbilled points of its gaps longer than `max_gap` (shorter ones are bridged),
        those within `reach` of both ends. |before n after| = |before| + |after| -
        |before u after|: plain range functions, as in `live_points`."""
        b = ", ".join(by)
        r, both = duration(reach), duration(2 * reach)
        before = self._grid(f"present_over_time({selector}[{r}])")
        after = self._grid(f"present_over_time({selector}[{r}] offset -{r})")
        either = self._grid(f"present_over_time({selector}[{both}] offset -{r})")
        return (
            f"max by ({b}) ({before}) + on ({b}) max by ({b}) ({after})"
            f" - on ({b}) max by ({b}) ({either})"
        )

    def mean(self, selector: str, by: tuple[str, ...]) -> str:
        """Mean of the samples in the hour. Allocation gauges are constant per pod (pod
        resources are immutable) and allocatable per node, so live points x interval
        x mean is the integral."""
        return f"max by ({', '.join(by)}) (avg_over_time({selector}[1h] offset 1ms))"

    def sample_sum(self, selector: str, by: tuple[str, ...]) -> str:
        """Σ of the samples in the hour (a 0/1 phase gives the scrapes that saw it)."""
        return f"max by ({', '.join(by)}) (sum_over_time({selector}[1h] offset 1ms))"

    def present(self, selector: str, by: tuple[str, ...]) -> str:
        """Samples actually scraped in the hour (per identity, replicas collapsed)."""
        return f"max by ({', '.join(by)}) (count_over_time({selector}[1h] offset 1ms))"

    def around(self, selector: str, by: tuple[str, ...], span_seconds: float) -> str:
        """The last value of each identity seen in (start - max_gap, end + max_gap] of a
        span of hours, evaluated once at the span's end: pod and node attributes, and
        start/completion times of pods that ran briefly near an hour's edge."""
        g = duration(self.max_gap)
        window = duration(span_seconds + 2 * self.max_gap)
        return f"max by ({', '.join(by)}) (last_over_time({selector}[{window}] offset -{g}))"

    def around_each_hour(
        self, selector: str, by: tuple[str, ...], function: str = "last_over_time"
    ) -> str:
        """Per hour, the identities with a sample in (hour - max_gap, hour end + max_gap]
        (as a range query, one point per hour): `around` of that hour alone, so that an
        hour's attributes do not depend on the chunk it is metered in."""
        g = duration(self.max_gap)
        window = duration(3600.0 + 2 * self.max_gap)
        return f"max by ({', '.join(by)}) ({function}({selector}[{window}] offset -{g}))"

    def pod_gpu_requests(self, span_seconds: float) -> str:
        """GPUs requested per pod, keeping the `node` label (the pod's node when it has
        no ``kube_pod_info`` series)."""
        by = (*POD_LABELS, "node")
        per_container = self.around(KSM_REQUESTS, (*by, "container"), span_seconds)
        return f"sum by ({', '.join(by)}) ({per_container})"

    def dcgm_mean(self, metric: str) -> str:
        """Mean of each GPU series over its samples in the hour (labels kept)."""
        return f"avg_over_time({metric}[1h] offset 1ms)"

    def dcgm_count(self, metric: str) -> str:
        """DCGM samples of each GPU series in the hour (labels kept): utilization coverage."""
        return f"count_over_time({metric}[1h] offset 1ms)"

    def counter_samples(self, metric: str, span_seconds: float) -> str:
        """Raw samples over `span_seconds` plus `max_gap` before, for reset-aware increase."""
        return f"{metric}[{duration(span_seconds + self.max_gap)}]"

    def counter_before(self, metric: str) -> str:
        """Each counter series' last value within `COUNTER_LOOKBACK_S`, evaluated just
        before `counter_samples`' window: what a series' first sample there counts from
        after a scrape gap longer than `max_gap` (counters are few series: cheap)."""
        return f"last_over_time({metric}[{duration(COUNTER_LOOKBACK_S)}])"
