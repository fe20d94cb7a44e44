"""A real Prometheus loaded with a known scenario, for metering and report tests.

Typical use::

    from tests.promtest import PrometheusServer, Scenario, create_blocks, utc

    s = Scenario(interval=30)                      # scrape grid: multiples of 30 s
    n = s.node("gpu-a", owner="uni-north", gpu_model="NVIDIA-H100-80GB-HBM3", gpus=8,
               start=utc(2026, 10, 24), end=utc(2026, 10, 27))
    s.pod("lab-bio", "train-1", n, gpus=4, start=utc(2026, 10, 25, 0, 30),
          end=utc(2026, 10, 26, 2))               # any range, e.g. across a DST change
    s.gap(utc(2026, 10, 25, 5), utc(2026, 10, 25, 5, 10))  # no scrape succeeds
    s.add_points("fairpool_reclaim_lost_gpu_seconds", {"member": "x", "gpu_model": "m"},
                 [(utc(2026, 10, 25, 1), 0), ...], kind="counter")
    s.write_openmetrics(tmp / "data.om")
    create_blocks(tmp / "data.om", tmp / "tsdb")   # promtool tsdb create-blocks-from
    with PrometheusServer(tmp / "tsdb") as prom:   # 127.0.0.1:<free port>, ready
        ...  prom.url ...

API
- ``Scenario(interval=30.0, offset=0.0, ksm_replicas=1)``: samples on the grid
  ``k * interval + offset``; ``ksm_replicas=2`` duplicates every kube-state-metrics
  series with another ``instance`` label (two exporter replicas).
- ``Scenario.node(name, owner, gpu_model, gpus, start, end) -> Node``:
  ``kube_node_labels`` (``label_fairpool_io_owner``, ``label_nvidia_com_gpu_product``)
  and ``kube_node_status_allocatable{resource="nvidia_com_gpu"}`` (no Ready series).
- ``Scenario.node_ready(node, not_ready=[(start, end)])``: the node's
  ``kube_node_status_condition{condition="Ready",status="true"|"false"}``, NotReady in
  each span.
- ``Scenario.pod(namespace, name, node, gpus, start, end, *, member=None, uid=None,
  fairpool=True, utilization=0.5, dcgm_metric="DCGM_FI_PROF_GR_ENGINE_ACTIVE",
  dcgm_host_label="Hostname", dcgm_exported=False) -> Pod``: fairpool's
  ``fairpool_pod_gpu_allocation`` (if ``fairpool``), kube-state-metrics' requests, info,
  phase, start and completion time, DCGM utilization per GPU (fraction; x100 for
  ``DCGM_FI_DEV_GPU_UTIL``; ``dcgm_exported`` puts the pod in ``exported_*`` labels).
- ``Scenario.gap(start, end)``: missing scrapes for every series.
- ``Scenario.add_series(family, labels, start, end, value, kind)`` /
  ``add_points(family, labels, [(time, value)], kind)``: anything else (``kind`` is
  ``"gauge"`` or ``"counter"``; counters get the ``_total`` suffix).
- Expectations from the truth, not from Prometheus: ``gpu_seconds(start, end)``,
  ``pod_gpu_seconds(start, end) -> {uid: seconds}``, ``capacity_gpu_seconds(start, end)``;
  ``scenario.pods`` / ``scenario.nodes`` hold member, owner, GPU model of each.
- ``create_blocks(openmetrics_file, data_dir) -> seconds``;
  ``PrometheusServer(data_dir, port=None)`` with ``start()``, ``stop()``, ``url``,
  ``rss_bytes()``; usable as a context manager; restartable on the same port.

All times are timezone-aware UTC; data must lie in the past (older than Prometheus' head
block), and queries must give explicit times.
"""

from tests.promtest.scenario import Node, Pod, Scenario, Series, utc, write_families
from tests.promtest.server import PrometheusMissing, PrometheusServer, create_blocks, free_port

__all__ = [
    "Node",
    "Pod",
    "PrometheusMissing",
    "PrometheusServer",
    "Scenario",
    "Series",
    "create_blocks",
    "free_port",
    "utc",
    "write_families",
]
