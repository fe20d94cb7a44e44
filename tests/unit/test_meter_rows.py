"""The pure part of metering: rows from query answers, counters, chunks, PromQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from reports.metering import promql
from reports.metering.meter import _chunks, _phase_of, describe_gap_points, gap_points
from reports.metering.promql import MeteringQueries
from reports.metering.rows import HourInputs, build_hour, counter_increase, kube_state_uids

H = datetime(2026, 10, 5, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)


def frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame({"value": pd.Series([], dtype=float)})


def fp(value: float, uid: str = "u1", member: str = "", **extra: str) -> dict[str, object]:
    return {
        "namespace": extra.get("namespace", "lab-bio"),
        "pod": "p",
        "uid": uid,
        "member": member,
        "owner": "uni-north",
        "gpu_model": "H100",
        "node": "gpu-a",
        "value": value,
    }


def inputs(**frames: pd.DataFrame) -> HourInputs:
    names = [
        "fairpool_mean",
        "fairpool_live",
        "fairpool_present",
        "ksm_requests",
        "ksm_start",
        "ksm_completion",
        "ksm_info",
        "ksm_running_sum",
        "ksm_running_present",
        "node_labels",
        "capacity_mean",
        "capacity_live",
        "capacity_present",
        "capacity_not_ready",
        "dcgm_engine_active",
        "dcgm_gpu_util",
        "dcgm_engine_count",
        "dcgm_util_count",
    ]
    given = {n: frames.get(n, frame([])) for n in names}
    return HourInputs(hour=H, interval=30.0, fairpool_uids_around=set(), **given)


def test_fairpool_steps_become_gpu_seconds_and_member_falls_back_to_namespace() -> None:
    rows = build_hour(
        inputs(
            fairpool_mean=frame([fp(4.0)]),  # 4 GPUs at 120 live grid points
            fairpool_live=frame([fp(120.0)]),
            fairpool_present=frame([fp(114.0)]),
        ),
        lambda ns: {"lab-bio": "lab-bio"}.get(ns),
        7,
    )
    usage = rows.usage.set_index("pod_uid")
    assert usage.loc["u1", "gpu_seconds"] == 4 * 3600.0
    assert usage.loc["u1", "member"] == "lab-bio"
    assert usage.loc["u1", "coverage"] == pytest.approx(114 / 120)
    assert usage.loc["u1", "policy_version"] == 7
    assert pd.isna(usage.loc["u1", "utilization"])
    assert rows.has_data
    assert rows.coverage == pytest.approx(114 / 120)


def test_unknown_namespace_is_unattributed_not_dropped() -> None:
    rows = build_hour(
        inputs(fairpool_mean=frame([fp(1.0)]), fairpool_live=frame([fp(10.0)])),
        lambda ns: None,
        0,
    )
    assert rows.usage["member"].tolist() == ["unattributed"]


def test_short_pod_from_start_and_completion() -> None:
    ident = {"namespace": "misc", "pod": "s", "uid": "k1"}
    rows = build_hour(
        inputs(
            ksm_requests=frame([{**ident, "value": 2.0}]),
            ksm_start=frame([{**ident, "value": H.timestamp() + 605}]),
            ksm_completion=frame([{**ident, "value": H.timestamp() + 617}]),
            ksm_info=frame([{**ident, "node": "gpu-b", "value": 1.0}]),
            node_labels=frame(
                [
                    {
                        "node": "gpu-b",
                        "label_fairpool_io_owner": "lab-bio",
                        "label_nvidia_com_gpu_product": "A100",
                        "value": 1.0,
                    }
                ]
            ),
        ),
        lambda ns: None,
        0,
    )
    row = rows.usage.set_index("pod_uid").loc["k1"]
    assert row["gpu_seconds"] == pytest.approx(24.0)
    assert (row["owner"], row["gpu_model"], row["source"]) == (
        "lab-bio",
        "A100",
        "kube-state-metrics",
    )


def test_fairpool_pods_are_not_billed_again_from_kube_state_metrics() -> None:
    ident = {"namespace": "lab-bio", "pod": "p", "uid": "u1"}
    data = inputs(
        fairpool_mean=frame([fp(1.0)]),
        fairpool_live=frame([fp(120.0)]),
        ksm_requests=frame([{**ident, "value": 1.0}]),
        ksm_running_sum=frame([{**ident, "value": 120.0}]),
    )
    data.fairpool_uids_around = {"u1"}
    rows = build_hour(data, lambda ns: None, 0)
    assert rows.usage["source"].tolist() == ["fairpool"]


def test_no_series_means_no_data() -> None:
    rows = build_hour(inputs(), lambda ns: None, 0)
    assert not rows.has_data
    assert rows.usage.empty


def test_utilization_prefers_engine_active_and_reads_exported_labels() -> None:
    rows = build_hour(
        inputs(
            fairpool_mean=frame([fp(1.0)]),
            fairpool_live=frame([fp(120.0)]),
            dcgm_gpu_util=frame(
                [
                    {
                        "namespace": "gpu-operator",
                        "pod": "dcgm",
                        "exported_namespace": "lab-bio",
                        "exported_pod": "p",
                        "value": 40.0,
                    }
                ]
            ),
        ),
        lambda ns: None,
        0,
    )
    assert rows.usage["utilization"].tolist() == [pytest.approx(0.4)]


def test_counter_increase_handles_resets_and_hour_edges() -> None:
    t = H.timestamp()
    samples = [(t - 60, 100.0), (t + 60, 110.0), (t + 120, 5.0), (t + 3700, 25.0)]
    out = counter_increase(samples, [H, H + HOUR], baseline_before=t)
    assert out == {H: 15.0, H + HOUR: 20.0}
    # A counter born inside the range counts from zero.
    assert counter_increase([(t + 10, 7.0)], [H], baseline_before=t) == {H: 7.0}


def test_chunks_split_runs_and_cap_size() -> None:
    hours = [H + i * HOUR for i in (0, 1, 2, 5, 6)]
    assert _chunks(hours, 2) == [[hours[0], hours[1]], [hours[2]], [hours[3], hours[4]]]


def test_queries_reject_intervals_that_do_not_divide_an_hour() -> None:
    with pytest.raises(ValueError, match="divide an hour"):
        MeteringQueries(interval=7)
    q = MeteringQueries(interval=30, max_gap=300)
    expr = q.live_points("m", ("node",))
    assert "[1h:30000ms] offset 1ms" in expr
    assert "present_over_time(m[600000ms] offset -300000ms)" in expr
    assert "present_over_time(m[329999ms] offset -300000ms)" in expr


@pytest.mark.parametrize("interval", [7.2, 4.8, 0.9, 0.001])
def test_queries_take_intervals_that_divide_an_hour_in_decimal(interval: float) -> None:
    # Float `%` refused these: 3600 % 7.2 is 7.199999999999911.
    q = MeteringQueries(interval=interval, max_gap=300)
    assert f"[1h:{round(interval * 1000)}ms] offset 1ms" in q.live_points("m", ("node",))


@pytest.mark.parametrize(
    ("interval", "problem"),
    [(0.0009, "whole milliseconds"), (7.0, "divide an hour"), (0.0, "positive")],
)
def test_queries_refuse_a_step_off_the_millisecond_grid(interval: float, problem: str) -> None:
    # 0.9 ms divides an hour but PromQL durations and the grid are in whole milliseconds.
    with pytest.raises(ValueError, match=problem):
        MeteringQueries(interval=interval)


def test_fairpool_scraped_without_honor_labels_keeps_the_pods_own_labels() -> None:
    def exported(value: float) -> dict[str, object]:
        row = fp(value)
        return {
            **row,
            "namespace": "fairpool-system",
            "pod": "fairpool-0",
            "exported_namespace": "lab-bio",
            "exported_pod": "p",
        }

    rows = build_hour(
        inputs(fairpool_mean=frame([exported(2.0)]), fairpool_live=frame([exported(120.0)])),
        lambda ns: {"lab-bio": "lab-bio"}.get(ns),
        0,
    )
    row = rows.usage.iloc[0]
    assert (row["namespace"], row["pod"], row["gpu_seconds"]) == ("lab-bio", "p", 7200.0)


def test_an_hour_with_a_leader_change_bills_each_pod_once() -> None:
    # The leader moves from fairpool-0 to fairpool-1 at :30 (or a redeploy replaces it):
    # each replica's series of the pod is live half the hour. Scraped without honor
    # labels (as the chart does), the two differ in the scraped replica's `pod`.
    def exported(value: float, replica: str) -> dict[str, object]:
        return {
            **fp(value),
            "namespace": "fairpool-system",
            "pod": replica,
            "exported_namespace": "lab-bio",
            "exported_pod": "p",
        }

    def per_replica(value: float) -> pd.DataFrame:
        return frame([exported(value, "fairpool-0"), exported(value, "fairpool-1")])

    def each_live(points: float) -> pd.DataFrame:
        """The hour's usage rows when each replica's series is live `points` of 120."""
        live = per_replica(points)
        hour = inputs(fairpool_mean=per_replica(4.0), fairpool_live=live, fairpool_present=live)
        return build_hour(hour, lambda ns: {"lab-bio": "lab-bio"}.get(ns), 0).usage

    (row,) = each_live(60.0).itertuples()
    assert (row.pod, row.gpu_seconds, row.coverage) == ("p", 4 * 3600.0, 1.0)
    # Both replicas reporting it for the whole hour (an overlap) still count one hour.
    assert each_live(120.0)["gpu_seconds"].tolist() == [4 * 3600.0]


def _labels(node: str, owner: str, model: str) -> dict[str, object]:
    return {
        "node": node,
        "label_fairpool_io_owner": owner,
        "label_nvidia_com_gpu_product": model,
        "value": 1.0,
    }


def test_pod_without_pod_info_takes_its_node_from_its_gpu_request() -> None:
    ident = {"namespace": "misc", "pod": "x", "uid": "k9"}
    rows = build_hour(
        inputs(
            # One request series before scheduling (no node), one after.
            ksm_requests=frame(
                [{**ident, "node": "", "value": 1.0}, {**ident, "node": "gpu-b", "value": 1.0}]
            ),
            ksm_running_sum=frame([{**ident, "value": 120.0}]),
            ksm_running_present=frame([{**ident, "value": 120.0}]),
            node_labels=frame([_labels("gpu-b", "lab-bio", "A100")]),
        ),
        lambda ns: None,
        0,
    )
    row = rows.usage.set_index("pod_uid").loc["k9"]
    assert (row["node"], row["owner"], row["gpu_model"], row["member"]) == (
        "gpu-b",
        "lab-bio",
        "A100",
        "unattributed",
    )
    assert row["gpu_seconds"] == pytest.approx(3600.0)


def test_fairpool_gauge_without_owner_and_model_takes_them_from_node_labels() -> None:
    bare = {**fp(2.0), "owner": "", "gpu_model": ""}
    live = {**fp(120.0), "owner": "", "gpu_model": ""}
    rows = build_hour(
        inputs(
            fairpool_mean=frame([bare]),
            fairpool_live=frame([live]),
            node_labels=frame([_labels("gpu-a", "uni-north", "H100")]),
        ),
        lambda ns: "lab-bio",
        0,
    )
    row = rows.usage.iloc[0]
    assert (row["owner"], row["gpu_model"], row["member"]) == ("uni-north", "H100", "lab-bio")


def test_nothing_known_is_unattributed_in_one_spelling() -> None:
    ident = {"namespace": "misc", "pod": "x", "uid": "k9"}
    rows = build_hour(
        inputs(
            ksm_requests=frame([{**ident, "value": 1.0}]),
            ksm_running_sum=frame([{**ident, "value": 120.0}]),
            capacity_live=frame([{"node": "bare", "value": 120.0}]),
            capacity_mean=frame([{"node": "bare", "value": 8.0}]),
        ),
        lambda ns: None,
        0,
    )
    row = rows.usage.iloc[0]
    assert {row["node"], row["owner"], row["gpu_model"], row["member"]} == {"unattributed"}
    cap = rows.capacity.iloc[0]
    assert (cap["owner"], cap["gpu_model"]) == ("unattributed", "unattributed")


def test_a_node_not_ready_in_some_live_points_contributes_only_the_others() -> None:
    """Its NotReady points (`capacity_not_ready`) were capacity like the Ready ones."""
    nodes = ("gpu-a", "gpu-b", "gpu-c")
    rows = build_hour(
        inputs(
            capacity_live=frame([{"node": n, "value": 120.0} for n in nodes]),
            capacity_mean=frame([{"node": n, "value": 8.0} for n in nodes]),
            capacity_present=frame([{"node": n, "value": 120.0} for n in nodes]),
            # gpu-b: more NotReady points than live ones (its Ready series outlived its
            # allocatable one); gpu-c: no Ready series, counted whole.
            capacity_not_ready=frame(
                [{"node": "gpu-a", "value": 40.0}, {"node": "gpu-b", "value": 130.0}]
            ),
        ),
        lambda ns: None,
        0,
    )
    cap = rows.capacity.set_index("node")
    assert cap["gpu_seconds_available"].to_dict() == {
        "gpu-a": 8 * 80 * 30.0,
        "gpu-b": 0.0,
        "gpu-c": 8 * 3600.0,
    }
    # Not ready is not missing: every sample expected was there.
    assert rows.coverage == 1.0
    assert cap["coverage"].to_dict() == dict.fromkeys(nodes, 1.0)


def test_dcgm_gap_lowers_utilization_coverage_only() -> None:
    # 4 GPUs for the whole hour: 4 x 120 DCGM samples expected, 4 x 60 found.
    dcgm = [
        {"namespace": "lab-bio", "pod": "p", "gpu": str(g), "Hostname": "gpu-a", "value": 60.0}
        for g in range(4)
    ]
    rows = build_hour(
        inputs(
            fairpool_mean=frame([fp(4.0)]),
            fairpool_live=frame([fp(120.0)]),
            fairpool_present=frame([fp(120.0)]),
            capacity_live=frame([{"node": "gpu-a", "value": 120.0}]),
            capacity_mean=frame([{"node": "gpu-a", "value": 8.0}]),
            capacity_present=frame([{"node": "gpu-a", "value": 108.0}]),
            dcgm_engine_active=frame([{**d, "value": 0.5} for d in dcgm]),
            dcgm_engine_count=frame(dcgm),
        ),
        lambda ns: "lab-bio",
        0,
    )
    node = rows.node_coverage.set_index("node").loc["gpu-a"]
    assert node["allocation"] == pytest.approx(1.0)
    assert node["capacity"] == pytest.approx(108 / 120)
    assert node["utilization"] == pytest.approx(0.5)


def test_no_dcgm_at_all_is_zero_utilization_coverage_not_unknown() -> None:
    rows = build_hour(
        inputs(fairpool_mean=frame([fp(1.0)]), fairpool_live=frame([fp(120.0)])),
        lambda ns: "lab-bio",
        0,
    )
    node = rows.node_coverage.set_index("node").loc["gpu-a"]
    assert node["utilization"] == 0.0
    assert pd.isna(node["capacity"])


def test_phase_series_are_read_for_the_pods_kube_state_metrics_bills_only() -> None:
    requests = pd.DataFrame(
        {
            "namespace": ["a", "a", "a"],
            "pod": ["p1", "p2", "p3"],
            "uid": ["u-1.x", "u-2", "u-3"],
            "node": ["n", "n", "n"],
            "value": [1.0, 0.0, 2.0],
        }
    )
    # u-2 requests no GPU, u-3 was reported by fairpool.
    assert kube_state_uids(requests, {"u-3"}) == {"u-1.x"}
    assert _phase_of({"u-1.x", "b-2"}) == (
        'kube_pod_status_phase{phase="Running",uid=~`b-2|u-1\\.x`}'
    )
    # Not plain text, or too many to list: every pod's phase series, as before.
    assert _phase_of({"u 1"}) == promql.KSM_RUNNING
    assert _phase_of({f"u-{i}" for i in range(5000)}) == promql.KSM_RUNNING


def test_exact_sums_are_correctly_rounded_whole_or_not() -> None:
    import math
    import random

    from reports.metering.coverage import _exact_sums

    rng = random.Random(3)
    n = 400
    frame = pd.DataFrame(
        {
            "h0": [float(rng.choice([0, 3600, 7200])) for _ in range(n)],
            "node": [rng.choice(["a", "b", "c", None]) for _ in range(n)],
            "count": [float(rng.randint(0, 120)) for _ in range(n)],
            "seconds": [rng.uniform(0, 1e6) / 7.0 for _ in range(n)],
        }
    )
    got = _exact_sums(frame, ["h0", "node"], ["count", "seconds"])
    expected = frame.groupby(["h0", "node"])[["count", "seconds"]].agg(math.fsum)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_gap_points_are_the_points_between_samples_that_are_not_live() -> None:
    at = pd.Timestamp(H)

    def pod(name: str, value: float, **extra: str) -> dict[str, object]:
        return {
            "namespace": "lab-bio",
            "pod": name,
            "uid": f"u-{name}",
            "hour": at,
            **extra,
            "value": value,
        }

    between = frame(
        [
            pod("gap", 120.0),
            pod("whole", 120.0),
            pod("none", 120.0),
            pod("x", 100.0, exported_pod="train", exported_namespace="physics"),
        ]
    )
    # `whole`: the hour lies inside a gap, no live point at all; `x` lacks a label `gap` has.
    live = frame(
        [
            pod("gap", 80.0),
            pod("none", 120.0),
            pod("x", 60.0, exported_pod="train", exported_namespace="physics"),
        ]
    )
    gaps = gap_points(between, live).set_index("pod")["value"]
    assert gaps.to_dict() == {"gap": 40.0, "whole": 120.0, "x": 40.0}
    lines = describe_gap_points(gap_points(between, live), 30.0, 300.0)
    assert lines[0].startswith(
        "pod lab-bio/gap (uid u-gap): at least 1200 s of the hour 2026-10-05 10:00 UTC fall in "
        "gaps longer than max_gap (300 s)"
    )
    assert lines[2].startswith("pod physics/train (uid u-x): at least 1200 s")
