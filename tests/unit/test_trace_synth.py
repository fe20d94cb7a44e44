"""The synthetic trace: deterministic per seed, the requested load, a Philly/Helios-like
size mix and heavy-tailed run times, bounded gangs, bursty arrivals."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from policies.errors import InputError
from policies.inventory import load_inventory
from scheduler.traces import node_gpus_of, synth, synthesize
from scheduler.traces.model import Trace

MEMBERS = ["uni-north", "ai-startup", "lab-bio", "physics"]
MODELS = {"NVIDIA-H100-80GB-HBM3": 32, "NVIDIA-A100-SXM4-80GB": 32}


def offered(trace: Trace, gpus: int, days: float) -> float:
    return sum(j.gpus * j.duration_s for j in trace.jobs) / (gpus * days * 86_400)


@pytest.fixture(scope="module")
def demo() -> Trace:
    return synthesize(MEMBERS, gpus=64, days=30, load=1.1, seed=11, gpu_models=MODELS)


def test_same_seed_same_trace_other_seed_other_trace() -> None:
    a = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5)
    b = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5)
    c = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=6)
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("gpus", "days", "load", "seed"),
    [(64, 30, 1.1, 1), (64, 30, 0.6, 2), (500, 30, 1.0, 3), (16, 3, 1.5, 4), (8, 1, 0.5, 5)],
)
def test_offered_load_within_15_percent(gpus: int, days: float, load: float, seed: int) -> None:
    trace = synthesize(MEMBERS, gpus=gpus, days=days, load=load, seed=seed)
    assert offered(trace, gpus, days) == pytest.approx(load, rel=0.15)


def test_jobs_sorted_with_unique_ids_inside_the_window(demo: Trace) -> None:
    times = [j.submit_time for j in demo.jobs]
    assert times == sorted(times)
    assert len({j.job_id for j in demo.jobs}) == len(demo.jobs)
    assert times[0] >= 0 and times[-1] < 30 * 86_400
    assert set(demo.members()) == set(MEMBERS)


def test_size_mix_mostly_single_gpu_with_a_gang_tail(demo: Trace) -> None:
    sizes = Counter(j.gpus for j in demo.jobs)
    n = len(demo.jobs)
    assert 0.6 <= sizes[1] / n <= 0.8
    assert all(sizes[s] > 0 for s in (2, 4, 8, 16, 32))
    gangs = [j for j in demo.jobs if j.is_gang]
    assert 0.005 <= len(gangs) / n <= 0.08
    assert all(j.gpus_per_pod == 8 for j in gangs)  # gangs of whole 8-GPU nodes


def test_gangs_never_exceed_the_largest_model_or_their_models_capacity(demo: Trace) -> None:
    assert max(j.gpus for j in demo.jobs) == 32
    small = {"big": 64, "small": 4}
    trace = synthesize(MEMBERS, gpus=68, days=10, load=1.0, seed=3, gpu_models=small)
    assert max(j.gpus for j in trace.jobs) == 64
    assert all(j.gpus <= small[j.gpu_model or ""] for j in trace.jobs)
    assert any(j.gpus == 64 for j in trace.jobs)
    assert max(j.gpus for j in trace.jobs if j.gpu_model == "small") == 4


def test_without_models_gangs_reach_64_gpus_within_the_cluster() -> None:
    trace = synthesize(MEMBERS, gpus=128, days=30, load=1.0, seed=9)
    assert max(j.gpus for j in trace.jobs) == 64
    assert all(j.gpu_model is None for j in trace.jobs)
    tiny = synthesize(MEMBERS, gpus=6, days=5, load=1.0, seed=9)
    assert max(j.gpus for j in tiny.jobs) <= 6


def test_models_drawn_in_proportion_to_capacity() -> None:
    trace = synthesize(MEMBERS, 64, 30, 1.0, seed=2, gpu_models={"a": 48, "b": 16})
    share = Counter(j.gpu_model for j in trace.jobs)["a"] / len(trace.jobs)
    assert share == pytest.approx(0.75, abs=0.05)


def test_durations_heavy_tailed_from_minutes_to_days(demo: Trace) -> None:
    durations = np.array([j.duration_s for j in demo.jobs])
    p50, p99 = np.percentile(durations, [50, 99])
    assert p99 / p50 > 20
    assert durations.min() >= 60
    assert durations.max() <= 3 * 86_400
    assert durations.max() > 86_400  # some jobs run for days
    single = np.median([j.duration_s for j in demo.jobs if j.gpus == 1])
    gang = np.median([j.duration_s for j in demo.jobs if j.is_gang])
    assert gang > 3 * single  # bigger jobs run longer


def test_arrivals_are_bursty(demo: Trace) -> None:
    # Hourly submission counts of one member: a Poisson process would have a
    # variance-to-mean ratio near 1; bursts and the daily rhythm make it much larger.
    for member in MEMBERS:
        times = np.array([j.submit_time for j in demo.jobs if j.org == member])
        counts = np.bincount((times // 3600).astype(int), minlength=30 * 24)
        assert counts.var() / counts.mean() > 2, member


def test_member_weights_split_the_load() -> None:
    weights = {"uni-north": 3.0, "ai-startup": 1.0, "lab-bio": 0.0, "physics": 1.0}
    trace = synthesize(MEMBERS, 64, 30, 1.0, seed=4, member_weights=weights)
    work = Counter[str]()
    for j in trace.jobs:
        work[j.org] += j.gpus * j.duration_s
    assert "lab-bio" not in work
    assert work["uni-north"] / work["ai-startup"] == pytest.approx(3.0, rel=0.25)


def test_weights_near_the_float_maximum_split_the_load_as_their_ratio() -> None:
    """Their sum overflowed: every share came out 0 or NaN, and `fairpool trace synth`
    wrote a trace of no job (exit 0), which `fairpool trace check` refuses."""
    huge = {"uni-north": 1e308, "ai-startup": 1e308, "lab-bio": 0.0, "physics": 1e308}
    plain = {"uni-north": 1.0, "ai-startup": 1.0, "lab-bio": 0.0, "physics": 1.0}
    trace = synthesize(MEMBERS, 64, 2, 1.0, seed=4, member_weights=huge)
    assert trace.jobs
    assert trace == synthesize(MEMBERS, 64, 2, 1.0, seed=4, member_weights=plain)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"members": []},
        {"gpus": 0},
        {"days": 0},
        {"days": 366.5},
        {"seed": -1},
        {"members": [f"m{i}" for i in range(20_001)]},
        {"load": -1},
        {"gpu_models": {"a": 0}},
        {"member_weights": {"nobody": 1.0}},
        {"member_weights": {"uni-north": 0.0}},
        {"member_weights": {"uni-north": float("inf"), "physics": 1.0}},
        {"member_weights": {"uni-north": float("nan"), "physics": 1.0}},
        {"checkpointable_share": 1.5},
        {"checkpointable_share": -0.1},
    ],
)
def test_bad_arguments_are_input_errors(kwargs: dict[str, object]) -> None:
    arguments: dict[str, object] = {
        "members": MEMBERS,
        "gpus": 64,
        "days": 1,
        "load": 1.0,
        "seed": 0,
    }
    arguments.update(kwargs)
    with pytest.raises(InputError):
        synthesize(**arguments)  # type: ignore[arg-type]


def test_the_job_cap_refuses_exactly_the_traces_above_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The cap is checked while the jobs are drawn, before anything big is built: a trace
    # of exactly MAX_JOBS jobs is made (and is the uncapped trace), one more is refused.
    whole = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5)
    n = len(whole.jobs)
    monkeypatch.setattr(synth, "MAX_JOBS", n)
    assert synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5) == whole
    monkeypatch.setattr(synth, "MAX_JOBS", n - 1)
    with pytest.raises(InputError, match=f"more than {n - 1:,} jobs"):
        synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5)


def test_a_huge_load_is_refused_before_its_jobs_are_drawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `--load 1000` once generated for minutes: drawing stops once the cap is passed
    # short of the member's offered work, a few batches in, not at the end.
    batches = []
    draw = synth._pod_shapes

    def counted(*args: object) -> object:
        batches.append(1)
        return draw(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(synth, "_pod_shapes", counted)
    monkeypatch.setattr(synth, "MAX_JOBS", 1000)
    with pytest.raises(InputError, match="a load of 10000 over 30 days on 64 GPUs"):
        synthesize(MEMBERS, gpus=64, days=30, load=1e4, seed=0)
    assert len(batches) <= 3


def fits_empty_cluster(pods: int, per_pod: int, nodes: list[int]) -> bool:
    """Whether `pods` pods of `per_pod` GPUs fit on an idle cluster of these nodes."""
    return sum(n // per_pod for n in nodes) >= pods


def test_with_node_shapes_every_job_fits_its_model() -> None:
    inventory = load_inventory()  # H100: 4 nodes of 8; A100: 2 of 4 and 3 of 8
    nodes = node_gpus_of(inventory)
    assert sorted(nodes["NVIDIA-A100-SXM4-80GB"]) == [4, 4, 8, 8, 8]
    trace = synthesize(inventory.owners(), 64, 30, 1.1, seed=8, node_gpus=nodes)
    assert {j.gpu_model for j in trace.jobs} == set(nodes)
    assert all(
        fits_empty_cluster(j.num_pods, j.gpus_per_pod, nodes[j.gpu_model or ""]) for j in trace.jobs
    )
    largest = Counter[str]()
    for j in trace.jobs:
        largest[j.gpu_model or ""] = max(largest[j.gpu_model or ""], j.gpus)
    # 32 A100s exist but only three nodes hold an 8-GPU pod: gangs stop at 2 x 8.
    assert largest == {"NVIDIA-H100-80GB-HBM3": 32, "NVIDIA-A100-SXM4-80GB": 16}
    assert offered(trace, 64, 30) == pytest.approx(1.1, rel=0.15)


def test_members_ask_mostly_for_the_models_they_own() -> None:
    owned = {"a": {"H100": 16}, "b": {"A100": 16}}
    trace = synthesize(
        members=["a", "b"],
        gpus=32,
        days=5,
        load=1.0,
        seed=7,
        gpu_models={"H100": 16, "A100": 16},
        member_models=owned,
        home_affinity=0.9,
    )
    for member, models in owned.items():
        jobs = [j for j in trace.jobs if j.org == member]
        home = sum(j.gpu_model in models for j in jobs) / len(jobs)
        # 0.9 of the jobs plus half of the rest land on the home model: ~0.95.
        assert 0.88 <= home <= 0.99, (member, home)


def test_a_share_of_the_jobs_marked_checkpointable_leaves_the_jobs_alone() -> None:
    plain = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5)
    assert all(j.checkpointable is None for j in plain.jobs)
    for share in (0.0, 0.3, 1.0):
        marked = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5, checkpointable_share=share)
        assert [replace(j, checkpointable=None) for j in marked.jobs] == list(plain.jobs)
        said = [j.checkpointable for j in marked.jobs]
        assert None not in said
        assert sum(said) / len(said) == pytest.approx(share, abs=0.05)
    again = synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5, checkpointable_share=0.3)
    assert again == synthesize(MEMBERS, gpus=64, days=7, load=1.0, seed=5, checkpointable_share=0.3)
