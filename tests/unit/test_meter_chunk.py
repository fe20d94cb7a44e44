"""Building a chunk of hours at once gives exactly the rows of each hour built alone."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from reports.metering.rows import HOURLY, ChunkInputs, HourInputs, build_chunk, build_hour
from tests.examples import examples

START = datetime(2026, 10, 5, 10, tzinfo=UTC)
HOUR = timedelta(hours=1)
INTERVAL = 30.0
CHUNK_WIDE = ("ksm_requests", "ksm_start", "ksm_completion", "ksm_info")


def member_for_namespace(namespace: str) -> str | None:
    return {"lab-bio": "lab-bio", "physics": "physics"}.get(namespace)


def random_answers(rng: random.Random, hours: list[datetime]) -> dict[str, pd.DataFrame]:
    """Prometheus-shaped answers for `hours`: fairpool pods, pods only kube-state-metrics
    saw, nodes with gaps and with labels that change from hour to hour, DCGM samples,
    exported labels; random presence per hour."""
    names = (*HOURLY, *CHUNK_WIDE, "node_labels_by_hour")
    rows: dict[str, list[dict[str, object]]] = {name: [] for name in names}
    nodes = [f"gpu-{i}" for i in range(4)]
    for node in nodes:
        for hour in hours:
            if rng.random() < 0.1:
                continue
            labels = {"node": node, "label_fairpool_io_owner": rng.choice(["uni-north", ""])}
            labels["label_nvidia_com_gpu_product"] = rng.choice(["H100", "A100", ""])
            rows["node_labels_by_hour"].append({**labels, "hour": pd.Timestamp(hour), "value": 1.0})
    t0, t1 = hours[0].timestamp(), hours[-1].timestamp() + 3600
    for n in range(12):
        uid, pod = f"uid-{n:02d}", f"pod-{n}"
        namespace = rng.choice(["lab-bio", "physics", "other"])
        node = rng.choice([*nodes, ""])
        fairpool = rng.random() < 0.6
        gpus = float(rng.choice([1, 2, 4, 8]))
        start = t0 + rng.randrange(-3600, int(t1 - t0)) + rng.choice([0.0, 7.5])
        end = start + rng.choice([10.0, 600.0, 5400.0, 20000.0])
        pod_labels = {"namespace": namespace, "pod": pod, "uid": uid}
        rows["ksm_start"].append({**pod_labels, "value": start})
        if rng.random() < 0.7:
            rows["ksm_completion"].append({**pod_labels, "value": end})
        rows["ksm_requests"].append({**pod_labels, "node": node, "value": gpus})
        rows["ksm_info"].append({**pod_labels, "node": node, "value": 1.0})
        for hour in hours:
            h0 = hour.timestamp()
            if end <= h0 or start >= h0 + 3600 or rng.random() < 0.1:
                continue
            live = float(rng.randint(1, 120))
            present = float(min(live, rng.randint(0, 125)))
            at = {"hour": pd.Timestamp(hour)}
            if fairpool:
                labels = {
                    **pod_labels,
                    "member": rng.choice(["", "physics"]),
                    "owner": rng.choice(["", "uni-north"]),
                    "gpu_model": rng.choice(["", "H100"]),
                    "node": node,
                    **at,
                }
                rows["fairpool_live"].append({**labels, "value": live})
                rows["fairpool_mean"].append({**labels, "value": gpus * rng.random()})
                rows["fairpool_present"].append({**labels, "value": present})
            else:
                rows["ksm_running_sum"].append({"uid": uid, **at, "value": live})
                rows["ksm_running_present"].append({"uid": uid, **at, "value": present})
            dcgm = {"exported_namespace": namespace, "exported_pod": pod, **at}
            rows["dcgm_engine_active"].append({**dcgm, "value": rng.random()})
            rows["dcgm_gpu_util"].append({**dcgm, "value": 100 * rng.random()})
            rows["dcgm_engine_count"].append({**dcgm, "value": float(rng.randint(0, 130))})
    for node in nodes:
        for hour in hours:
            if rng.random() < 0.2:
                continue
            at = {"node": node, "hour": pd.Timestamp(hour)}
            rows["capacity_live"].append({**at, "value": float(rng.randint(100, 120))})
            rows["capacity_mean"].append({**at, "value": 8.0})
            rows["capacity_present"].append({**at, "value": float(rng.randint(90, 125))})
            if rng.random() < 0.3:
                rows["capacity_not_ready"].append({**at, "value": float(rng.randint(0, 125))})
    return {
        name: pd.DataFrame(found) if found else pd.DataFrame({"value": pd.Series([], dtype=float)})
        for name, found in rows.items()
    }


def fairpool_reported(rng: random.Random, hours: list[datetime]) -> dict[datetime, set[str]]:
    """The pods fairpool reported around each hour: some in most hours, some in a few."""
    return {
        hour: {f"uid-{n:02d}" for n in range(12) if rng.random() < (0.8 if n % 5 == 0 else 0.2)}
        for hour in hours
    }


def one_hour(frame: pd.DataFrame, hour: datetime) -> pd.DataFrame:
    if "hour" not in frame:
        return frame
    return frame[frame["hour"] == pd.Timestamp(hour)].drop(columns="hour").reset_index(drop=True)


def assert_same(chunked: pd.DataFrame, alone: pd.DataFrame) -> None:
    assert list(chunked.columns) == list(alone.columns)
    if len(alone) or len(chunked):
        pd.testing.assert_frame_equal(chunked, alone, check_exact=True)


@pytest.mark.parametrize("seed", range(examples(12)))
def test_a_chunk_gives_each_hour_the_rows_it_gives_alone(seed: int) -> None:
    rng = random.Random(seed)
    hours = [START + i * HOUR for i in range(6)]
    answers = random_answers(rng, hours)
    reported = fairpool_reported(rng, hours)
    lost = {hours[1]: {("physics", "H100", "entitlement"): 120.0, ("physics", "H100", ""): 5.0}}
    chunked = build_chunk(
        ChunkInputs(
            hours=hours,
            interval=INTERVAL,
            fairpool_uids_by_hour=reported,
            reclaim_lost=lost,
            **answers,
        ),
        lambda hour: (member_for_namespace, 3 if hour < hours[3] else 4),
    )
    assert sorted(chunked) == hours
    billed = 0
    for hour in hours:
        per_hour = {name: one_hour(frame, hour) for name, frame in answers.items()}
        alone = build_hour(
            HourInputs(
                hour=hour,
                interval=INTERVAL,
                fairpool_uids_around=reported[hour],
                node_labels=per_hour.pop("node_labels_by_hour"),
                reclaim_lost=lost.get(hour, {}),
                **per_hour,
            ),
            member_for_namespace,
            3 if hour < hours[3] else 4,
        )
        got = chunked[hour]
        for name in ("usage", "capacity", "reclaim_lost", "node_coverage"):
            assert_same(getattr(got, name), getattr(alone, name))
        assert (got.coverage, got.has_data, got.present, got.expected) == (
            alone.coverage,
            alone.has_data,
            alone.present,
            alone.expected,
        )
        billed += len(alone.usage)
    # The sample set is not trivial: pods are billed from both sources.
    assert billed > 0
