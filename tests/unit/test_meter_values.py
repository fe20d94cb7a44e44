"""Values no exporter of real hardware gives: the hour stays pending, and nothing of it is
stored (one infinite value stopped every report of its month)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from policies.loader import load_policy
from reports.ledger import Ledger
from reports.metering.coverage import NODE_COVERAGE_OUT
from reports.metering.meter import ChunkAnswers, Meter, _reclaim_lost, implausible
from reports.metering.prom_source import PromSource
from reports.metering.rows import (
    CAPACITY_OUT,
    HOURLY,
    RECLAIM_OUT,
    USAGE_OUT,
    HourRows,
    counter_increase,
)

HOUR = datetime(2026, 10, 5, 9, tzinfo=UTC)
H100 = "NVIDIA-H100-80GB-HBM3"


def rows(pod_seconds: float, node_seconds: float = 8 * 3600.0) -> HourRows:
    usage = pd.DataFrame(
        [
            {
                "namespace": "physics",
                "pod": "p",
                "pod_uid": "u1",
                "job_id": "",
                "member": "physics",
                "owner": "physics",
                "gpu_model": H100,
                "node": "gpu-a",
                "gpu_seconds": pod_seconds,
                "source": "fairpool",
                "coverage": 1.0,
                "utilization": None,
                "policy_version": 1,
            }
        ]
    ).reindex(columns=USAGE_OUT)
    capacity = pd.DataFrame(
        [
            {
                "node": "gpu-a",
                "owner": "physics",
                "gpu_model": H100,
                "gpu_seconds_available": node_seconds,
                "coverage": 1.0,
            }
        ]
    ).reindex(columns=CAPACITY_OUT)
    lost = pd.DataFrame(columns=RECLAIM_OUT)
    nodes = pd.DataFrame(columns=NODE_COVERAGE_OUT)
    return HourRows(usage, capacity, lost, 1.0, True, 120.0, 120.0, nodes)


@pytest.mark.parametrize(
    ("pod", "node", "named"),
    [
        (float("inf"), 8 * 3600.0, "a pod's allocation"),
        (3.6e303, 8 * 3600.0, "a pod's allocation"),
        (float("nan"), 8 * 3600.0, "a pod's allocation"),
        (3600.0, -28800.0, "a node's allocatable GPUs"),
    ],
)
def test_an_hour_with_a_value_no_hardware_gives_stays_pending(
    tmp_path: Path, pod: float, node: float, named: str
) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    meter = Meter(PromSource("http://127.0.0.1:1"), ledger, load_policy(None))
    built = rows(pod, node)
    assert (implausible(built) or "").startswith(f"{named} from Prometheus is not a GPU count")
    (outcome,) = meter._store([HOUR], {HOUR: built}, set())
    assert outcome.status == "pending" and "not a GPU count" in (outcome.error or "")
    assert ledger.usage_frame(HOUR, HOUR + timedelta(hours=1)).empty
    status = ledger.hour_status(HOUR, HOUR + timedelta(hours=1))
    assert list(status["status"]) == ["pending"]


def test_an_hour_of_plausible_values_is_stored(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    meter = Meter(PromSource("http://127.0.0.1:1"), ledger, load_policy(None))
    assert implausible(rows(8 * 3600.0)) is None
    (outcome,) = meter._store([HOUR], {HOUR: rows(8 * 3600.0)}, set())
    assert outcome.status == "metered"
    assert list(ledger.usage_frame(HOUR, HOUR + timedelta(hours=1))["gpu_seconds"]) == [28800.0]


# ---- NaN from Prometheus -------------------------------------------------------------
# One NaN sample makes the hour's `avg_over_time` NaN. Filled with 0 like a mean that is
# absent, the pod's hour was stored as nothing used, and the node's as no GPUs, both with
# full coverage: the report said every hour had data.

POD = {
    "namespace": "lab-bio",
    "pod": "train-1",
    "uid": "u-train",
    "member": "lab-bio",
    "owner": "uni-north",
    "gpu_model": H100,
    "node": "gpu-a",
}
GRID = 120.0  # live grid points of an hour scraped every 30 s


def hourly(rows: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame({"value": pd.Series([], dtype=float)})


def answers(
    hours: list[datetime],
    pod_mean: dict[datetime, float] | None = None,
    node_mean: dict[datetime, float] | None = None,
    pods: tuple[dict[str, str], ...] = (POD,),
) -> ChunkAnswers:
    """A pod holding 2 GPUs on an 8-GPU node for every hour of `hours`, every scrape
    present; `pod_mean` and `node_mean` replace the hour's mean Prometheus answers."""
    frames: dict[str, list[dict[str, object]]] = {
        name: [] for name in (*HOURLY, "node_labels_by_hour")
    }
    labels = {
        "node": "gpu-a",
        "label_fairpool_io_owner": "uni-north",
        "label_nvidia_com_gpu_product": H100,
        "value": 1.0,
    }
    for hour in hours:
        at = {"hour": pd.Timestamp(hour)}
        for pod in pods:
            mean = (pod_mean or {}).get(hour, 2.0)
            frames["fairpool_live"].append({**pod, **at, "value": GRID})
            frames["fairpool_present"].append({**pod, **at, "value": GRID})
            frames["fairpool_mean"].append({**pod, **at, "value": mean})
        node = {"node": "gpu-a", **at}
        frames["capacity_live"].append({**node, "value": GRID})
        frames["capacity_present"].append({**node, "value": GRID})
        frames["capacity_mean"].append({**node, "value": (node_mean or {}).get(hour, 8.0)})
        frames["node_labels_by_hour"].append({**labels, **at})
    constant = {
        "ksm_requests": hourly([]),
        "ksm_start": hourly([]),
        "ksm_completion": hourly([]),
        "ksm_info": hourly([]),
    }
    reported = {hour: {pod["uid"] for pod in pods} for hour in hours}
    return ChunkAnswers({n: hourly(r) for n, r in frames.items()}, constant, {}, reported)


def meter_in(tmp_path: Path) -> Meter:
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    return Meter(PromSource("http://127.0.0.1:1"), ledger, load_policy(None))


CHUNK = [HOUR, HOUR + timedelta(hours=1), HOUR + timedelta(hours=2)]
NAN = float("nan")


@pytest.mark.parametrize(
    ("series", "named"),
    [
        ("pod", "fairpool_pod_gpu_allocation of pod lab-bio/train-1"),
        ("node", 'kube_node_status_allocatable{resource="nvidia_com_gpu"} of node gpu-a'),
    ],
)
def test_an_hour_prometheus_answers_nan_for_stays_pending_naming_the_series(
    tmp_path: Path, series: str, named: str
) -> None:
    meter = meter_in(tmp_path)
    nan_in = {CHUNK[1]: NAN}
    given = answers(CHUNK, pod_mean=nan_in if series == "pod" else None)
    if series == "node":
        given = answers(CHUNK, node_mean=nan_in)
    built = meter.build(CHUNK, given)
    outcomes = meter._store(CHUNK, built, set())
    assert [o.status for o in outcomes] == ["metered", "pending", "metered"]
    reason = outcomes[1].error or ""
    assert reason.startswith(f"Prometheus returned NaN for {named} in the hour 2026-10-05T10:00Z")
    assert reason.endswith("the hour stays pending")
    ledger = meter.ledger
    status = ledger.hour_status(CHUNK[0], CHUNK[-1] + timedelta(hours=1)).set_index("hour")
    assert list(status["status"]) == ["metered", "pending", "metered"]
    assert status.loc[pd.Timestamp(CHUNK[1]), "last_error"] == reason
    # Nothing of the hour is stored; its neighbours are whole.
    usage = ledger.usage_frame(CHUNK[0], CHUNK[-1] + timedelta(hours=1))
    assert sorted(usage["hour"]) == [pd.Timestamp(CHUNK[0]), pd.Timestamp(CHUNK[2])]
    assert list(usage["gpu_seconds"]) == [2 * 3600.0, 2 * 3600.0]
    capacity = ledger.capacity_frame(CHUNK[0], CHUNK[-1] + timedelta(hours=1))
    assert list(capacity["gpu_seconds_available"]) == [8 * 3600.0, 8 * 3600.0]


def test_a_chunk_names_the_nan_series_of_each_hour_as_the_hour_alone(tmp_path: Path) -> None:
    meter = meter_in(tmp_path)
    other = {**POD, "pod": "infer-2", "uid": "u-infer"}
    given = answers(CHUNK, node_mean={CHUNK[0]: NAN}, pods=(POD, other))
    pods = given.hourly["fairpool_mean"]
    pods.loc[pods["hour"] == pd.Timestamp(CHUNK[1]), "value"] = NAN  # both pods at 10:00
    chunked = meter.build(CHUNK, given)
    reasons = [implausible(chunked[hour]) or "" for hour in CHUNK]
    assert "of node gpu-a in the hour 2026-10-05T09:00Z" in reasons[0]
    assert "of pod lab-bio/infer-2 in the hour 2026-10-05T10:00Z" in reasons[1]
    assert "and 1 more series" in reasons[1]
    assert reasons[2] == ""
    for hour, reason in zip(CHUNK, reasons, strict=True):
        alone = ChunkAnswers(
            {
                name: frame[frame["hour"] == pd.Timestamp(hour)].reset_index(drop=True)
                if "hour" in frame
                else frame
                for name, frame in given.hourly.items()
            },
            given.constant,
            {},
            {hour: given.fairpool_uids_by_hour[hour]},
        )
        assert (implausible(meter.build([hour], alone)[hour]) or "") == reason


def test_a_pod_with_no_sample_in_the_hour_is_not_a_nan(tmp_path: Path) -> None:
    """A pod's live points reach a few scrapes past its last sample: in the hour after it
    ended it may have one without any sample, and no mean. That hour is metered."""
    meter = meter_in(tmp_path)
    given = answers([HOUR])
    given.hourly["fairpool_mean"] = given.hourly["fairpool_mean"].iloc[0:0]
    given.hourly["fairpool_live"].loc[0, "value"] = 1.0
    given.hourly["fairpool_present"] = given.hourly["fairpool_present"].iloc[0:0]
    (outcome,) = meter._store([HOUR], meter.build([HOUR], given), set())
    assert outcome.status == "metered" and outcome.error is None


def test_a_metered_hour_keeps_its_rows_when_prometheus_later_answers_nan(
    tmp_path: Path,
) -> None:
    meter = meter_in(tmp_path)
    meter._store([HOUR], meter.build([HOUR], answers([HOUR])), set())
    nan = answers([HOUR], pod_mean={HOUR: NAN})
    (outcome,) = meter._store([HOUR], meter.build([HOUR], nan), set())
    assert outcome.status == "pending"
    status = meter.ledger.hour_status(HOUR, HOUR + timedelta(hours=1))
    assert list(status["status"]) == ["metered"]
    assert (status["last_error"].iloc[0] or "").startswith("Prometheus returned NaN")
    usage = meter.ledger.usage_frame(HOUR, HOUR + timedelta(hours=1))
    assert list(usage["gpu_seconds"]) == [2 * 3600.0]


# ---- NaN for a pod kube-state-metrics bills ------------------------------------------
# A pod fairpool never reported is billed its GPU request x its Running samples. A NaN
# Running sum was filled with 0 (the hour billed as not run, at full coverage: its samples
# are present), and a NaN request failed `gpus > 0` (the pod was never billed at all).

EXT = {"namespace": "physics", "pod": "ext-1", "uid": "u-ext"}
RUNNING = 'kube_pod_status_phase{phase="Running"} of pod physics/ext-1'
REQUEST = 'kube_pod_container_resource_requests{resource="nvidia_com_gpu"} of pod physics/ext-1'


def with_kube_state_pod(
    given: ChunkAnswers,
    hours: list[datetime],
    gpus: float = 1.0,
    running: dict[datetime, float] | None = None,
    completed: bool = False,
) -> ChunkAnswers:
    """`given` and a pod only kube-state-metrics reports, on gpu-a, Running at every
    scrape of `hours` (from the first one's start, its completion at the last one's end
    when `completed`); `running` replaces the hour's sum of its Running samples."""
    constant = dict(given.constant)
    constant["ksm_requests"] = hourly([{**EXT, "node": "gpu-a", "value": gpus}])
    constant["ksm_start"] = hourly([{**EXT, "value": hours[0].timestamp()}])
    if completed:
        end = (hours[-1] + timedelta(hours=1)).timestamp()
        constant["ksm_completion"] = hourly([{**EXT, "value": end}])
    hourly_frames = dict(given.hourly)
    for name, per_hour in (("ksm_running_sum", running or {}), ("ksm_running_present", {})):
        rows = [{**EXT, "hour": pd.Timestamp(h), "value": per_hour.get(h, GRID)} for h in hours]
        hourly_frames[name] = hourly(rows)
    return ChunkAnswers(hourly_frames, constant, given.reclaim_lost, given.fairpool_uids_by_hour)


@pytest.mark.parametrize(
    ("nan_in", "named", "pending"),
    [
        ("running", RUNNING, [False, True, False]),
        # The request is one figure for the whole chunk: every hour the pod ran.
        ("request", REQUEST, [True, True, True]),
    ],
)
def test_a_kube_state_metrics_pod_prometheus_answers_nan_for_keeps_its_hours_pending(
    tmp_path: Path, nan_in: str, named: str, pending: list[bool]
) -> None:
    meter = meter_in(tmp_path)
    given = with_kube_state_pod(
        answers(CHUNK),
        CHUNK,
        gpus=NAN if nan_in == "request" else 1.0,
        running={CHUNK[1]: NAN} if nan_in == "running" else None,
    )
    outcomes = meter._store(CHUNK, meter.build(CHUNK, given), set())
    assert [o.status == "pending" for o in outcomes] == pending
    for hour, outcome in zip(CHUNK, outcomes, strict=True):
        if outcome.status == "pending":
            assert (outcome.error or "").startswith(
                f"Prometheus returned NaN for {named} in the hour {hour:%Y-%m-%dT%H:%MZ}"
            )
        else:
            # The other hours bill the pod's GPU as well as fairpool's pod.
            usage = meter.ledger.usage_frame(hour, hour + timedelta(hours=1))
            assert sorted(usage["gpu_seconds"]) == [3600.0, 2 * 3600.0]


def test_a_nan_running_sum_of_a_pod_billed_from_its_start_and_completion_is_no_matter(
    tmp_path: Path,
) -> None:
    """Its start and completion times give its GPU-seconds: the Running samples are not
    read for them, and their NaN changes nothing."""
    meter = meter_in(tmp_path)
    given = with_kube_state_pod(answers(CHUNK), CHUNK, running={CHUNK[1]: NAN}, completed=True)
    outcomes = meter._store(CHUNK, meter.build(CHUNK, given), set())
    assert [o.status for o in outcomes] == ["metered"] * 3
    usage = meter.ledger.usage_frame(CHUNK[0], CHUNK[-1] + timedelta(hours=1))
    assert usage.groupby("hour")["gpu_seconds"].sum().tolist() == [3 * 3600.0] * 3


def test_a_pod_whose_request_is_nan_is_pending_only_in_the_hours_it_ran(tmp_path: Path) -> None:
    meter = meter_in(tmp_path)
    given = with_kube_state_pod(answers(CHUNK), CHUNK[1:], gpus=NAN, completed=True)
    outcomes = meter._store(CHUNK, meter.build(CHUNK, given), set())
    assert [o.status for o in outcomes] == ["metered", "pending", "pending"]
    assert REQUEST in (outcomes[2].error or "")


# ---- NaN in the reclaim-lost counter -------------------------------------------------
# A counter carries its increase: a NaN sample is no reading, and the next number holds
# all that was added since the last one, as after a missed scrape. Taken as a reading,
# the NaN made its hour's increase NaN (dropped with the hours that lost nothing) and,
# the next sample being "below" it, a reset: that sample's whole total was counted.

LOST_KEY = ("physics", H100, "entitlement")
COUNTER = {"member": "physics", "gpu_model": H100, "cause": "entitlement", "pod": "fp-0"}


def test_a_nan_counter_sample_is_no_reading_and_loses_nothing() -> None:
    t = HOUR.timestamp()
    two = [HOUR, HOUR + timedelta(hours=1)]
    inside = [(t + 10, 100.0), (t + 40, NAN), (t + 70, 110.0)]
    assert counter_increase(inside, [HOUR], t - 300, 90.0) == {HOUR: 20.0}
    # At an hour's edge the increase goes to the hour of the next number.
    edge = [(t + 3570, 100.0), (t + 3600 - 1, NAN), (t + 3630, 110.0)]
    assert counter_increase(edge, two, t - 300, 90.0) == {two[0]: 10.0, two[1]: 10.0}
    # Only NaN until a reset: the increase before it is unknown, as over a missed
    # scrape; the reset's value counts.
    reset = [(t + 10, 100.0), (t + 40, NAN), (t + 70, 4.0)]
    assert counter_increase(reset, [HOUR], t - 300, 90.0) == {HOUR: 14.0}
    lost = _reclaim_lost([(COUNTER, edge)], two, {frozenset(COUNTER.items()): 90.0})
    assert lost == {two[0]: {LOST_KEY: 10.0}, two[1]: {LOST_KEY: 10.0}}


def test_a_counter_whose_last_number_is_unknown_gives_its_hour_nan() -> None:
    """The series' value before the chunk is NaN and no number of it precedes the hour's
    first sample (a scrape gap longer than `max_gap` after the NaN): what it added since
    is unknown. Counted from zero, as a series born in the hour, its whole total was."""
    t = HOUR.timestamp()
    after_gap = [(t + 600, 150.0), (t + 630, 160.0)]
    out = counter_increase(after_gap, [HOUR], t - 300, NAN)
    assert math.isnan(out[HOUR])
    # A NaN sample before any number: the series existed, its value unknown.
    out = counter_increase([(t - 30, NAN), *after_gap], [HOUR], t - 300)
    assert math.isnan(out[HOUR])
    # A number before the chunk (in its `max_gap` before): known again.
    assert counter_increase([(t - 30, 140.0), *after_gap], [HOUR], t - 300, NAN) == {HOUR: 20.0}


def test_an_hour_whose_reclaim_loss_is_unknown_stays_pending_naming_the_series(
    tmp_path: Path,
) -> None:
    meter = meter_in(tmp_path)
    t = CHUNK[1].timestamp()
    series = [(COUNTER, [(t - 30, NAN), (t + 600, 150.0)])]
    lost = _reclaim_lost(series, CHUNK, {frozenset(COUNTER.items()): NAN})
    assert math.isnan(lost[CHUNK[1]][LOST_KEY])
    given = answers(CHUNK)
    given = ChunkAnswers(given.hourly, given.constant, lost, given.fairpool_uids_by_hour)
    outcomes = meter._store(CHUNK, meter.build(CHUNK, given), set())
    assert [o.status for o in outcomes] == ["metered", "pending", "metered"]
    assert (outcomes[1].error or "").startswith(
        "Prometheus returned NaN for fairpool_reclaim_lost_gpu_seconds_total"
        f'{{member="physics",gpu_model="{H100}",cause="entitlement"}} '
        "in the hour 2026-10-05T10:00Z"
    )


@pytest.mark.parametrize("broken", [math.inf, -math.inf])
def test_an_infinite_counter_sample_is_no_reading_either(broken: float) -> None:
    """Stored, the hour's infinite loss stopped every report of its month (money cannot
    hold it), and the sample after it was a reset counted whole."""
    t = HOUR.timestamp()
    two = [HOUR, HOUR + timedelta(hours=1)]
    edge = [(t + 3570, 100.0), (t + 3600 - 1, broken), (t + 3630, 110.0)]
    assert counter_increase(edge, two, t - 300, 90.0) == {two[0]: 10.0, two[1]: 10.0}
    # Its value before the chunk infinite: as unknown as NaN.
    assert math.isnan(counter_increase([(t + 600, 150.0)], [HOUR], t - 300, broken)[HOUR])
