"""A synthetic trace shaped like published GPU-cluster traces.

The shape follows what the Philly (Jeon et al., ATC'19), Helios (Hu et al., SC'21) and
PAI (Weng et al., NSDI'22) studies report: most jobs ask for one GPU, fewer for 2/4/8
GPUs on one node, and a thin tail of multi-node gangs of full nodes; run times are
heavy-tailed (minutes to days, bigger jobs run longer); submissions are bursty, with a
daily and weekly rhythm and per-member bursts (a deadline, a sweep).

Pure and deterministic: the same arguments give the same trace."""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from policies.errors import InputError
from policies.inventory import ClusterInventory, keeps_off_untolerating_pods
from policies.model import MAX_MEMBERS
from scheduler.traces.model import Trace, TraceJob

DAY_S = 86_400.0
MIN_DURATION_S = 60.0
MAX_DURATION_S = 3 * DAY_S
BIN_S = 600.0
"""Arrival intensity is piecewise constant over 10-minute bins."""
MAX_DAYS = 366.0
"""A year: longer studies are a sequence of months, and a slip of the finger (a number
of seconds given as days) would otherwise generate for hours."""
MAX_JOBS = 1_000_000
"""The most jobs a synthetic trace holds: far beyond what a replay answers quickly, well
within memory. A load or length that asks for more is refused before it is generated."""

# Share of jobs by shape: one pod of 1/2/4/8 GPUs, or a gang of 2/4/8 full-node pods
# (16-64 GPUs with 8-GPU nodes). Shapes that do not fit the cluster are left out and
# the rest renormalized (see `_shape_menu`).
SINGLE_POD_MIX: dict[int, float] = {1: 0.70, 2: 0.10, 4: 0.09, 8: 0.07}
GANG_PODS_MIX: dict[int, float] = {2: 0.020, 4: 0.012, 8: 0.008}


@dataclass(frozen=True, slots=True)
class _DurationLaw:
    median_s: float
    sigma: float


# Log-normal run time by job size: a sigma near 1.5-2 gives p99/p50 of 30-100.
SINGLE_GPU_LAW = _DurationLaw(median_s=20 * 60, sigma=1.9)
SINGLE_NODE_LAW = _DurationLaw(median_s=90 * 60, sigma=1.7)
GANG_LAW = _DurationLaw(median_s=4 * 3600, sigma=1.4)


def synthesize(
    members: Sequence[str],
    gpus: int,
    days: float,
    load: float,
    seed: int,
    gpu_models: Mapping[str, int] | None = None,
    member_weights: Mapping[str, float] | None = None,
    max_gpus_per_pod: int | Mapping[str, int] = 8,
    node_gpus: Mapping[str, Sequence[int]] | None = None,
    member_models: Mapping[str, Mapping[str, int]] | None = None,
    home_affinity: float = 0.8,
    checkpointable_share: float | None = None,
) -> Trace:
    """A trace of `days` days whose offered GPU-seconds are about
    `load * gpus * days * 86400` (load > 1 means contention).

    `gpu_models` (model -> GPUs of that model in the cluster) gives each job a model with
    probability proportional to capacity and keeps every job within that model's
    capacity; without it jobs carry no model and stay within `gpus`. `member_weights`
    splits the load between members (default: seeded random, unequal, intensities).
    `max_gpus_per_pod` (per model, or one number) is the largest pod; gangs are made of
    such full pods. `node_gpus` (model -> GPUs of each node, see `node_gpus_of`) makes
    every job placeable: pods no bigger than the biggest node, gangs no bigger than the
    nodes that can hold a full pod; it also stands in for `gpu_models` when that is
    not given. Without it, gangs only stay within each model's total GPUs.

    `member_models` (member -> model -> GPUs it contributes) makes members ask mostly for
    the hardware they own: a job picks one of its member's own models with probability
    `home_affinity` (weighted by what it owns), else any model by cluster capacity. Real
    groups tune their code for their own GPUs; without this, half of every member's jobs
    would want a model it does not own and could never run on its own hardware, which
    makes the standalone counterfactual meaningless.

    `checkpointable_share` marks about that share of the jobs checkpointable and the
    rest not (each job's `checkpointable`, over its member's setting), drawn from a
    generator of its own so the jobs are the same as without it; None leaves every job
    to its member's setting."""
    if not 0.0 <= home_affinity <= 1.0:
        raise InputError(f"synthesize: home_affinity must be within [0, 1], not {home_affinity}")
    if gpu_models is None and node_gpus is not None:
        gpu_models = {m: sum(n) for m, n in node_gpus.items() if sum(n) > 0}
    _check_arguments(members, gpus, days, load, seed, gpu_models, member_weights)
    if checkpointable_share is not None and not 0.0 <= checkpointable_share <= 1.0:
        raise InputError(
            f"synthesize: checkpointable_share must be within [0, 1], not {checkpointable_share}"
        )
    rng = np.random.default_rng(seed)
    names = list(dict.fromkeys(members))
    weights = _weights(names, member_weights, rng)
    horizon = days * DAY_S
    target = load * gpus * horizon
    models = dict(gpu_models) if gpu_models else None

    jobs: list[TraceJob] = []
    for name, weight in zip(names, weights, strict=True):
        member_rng = np.random.default_rng([seed, _stable_hash(name)])
        found = _member_jobs(
            name,
            weight * target,
            horizon,
            gpus,
            models,
            max_gpus_per_pod,
            node_gpus,
            member_rng,
            (member_models or {}).get(name),
            home_affinity,
            most=MAX_JOBS - len(jobs),
        )
        if found is None:
            raise InputError(
                f"synthesize: a load of {load:g} over {days:g} days on {gpus} GPUs asks for "
                f"more than {MAX_JOBS:,} jobs, the most a synthetic trace holds: lower the "
                "load, the days or the GPUs"
            )
        jobs.extend(found)
    jobs.sort(key=lambda j: (j.submit_time, j.org))
    width = max(6, len(str(len(jobs))))
    resumes: list[bool | None] = [None] * len(jobs)
    if checkpointable_share is not None:
        # Three numbers: never the seed of a member's own generator (two).
        draws = np.random.default_rng([seed, 0, _stable_hash("checkpointable")]).random(len(jobs))
        resumes = [bool(d < checkpointable_share) for d in draws]
    numbered = tuple(
        TraceJob(
            job_id=f"job-{i:0{width}d}",
            org=j.org,
            submit_time=j.submit_time,
            duration_s=j.duration_s,
            num_pods=j.num_pods,
            gpus_per_pod=j.gpus_per_pod,
            gpu_model=j.gpu_model,
            priority=j.priority,
            checkpointable=resumes[i - 1],
        )
        for i, j in enumerate(jobs, start=1)
    )
    return Trace(jobs=numbered)


@dataclass(frozen=True)
class ClusterShape:
    """What `synthesize` needs to know of a cluster for its jobs to fit it and follow
    its owners: GPUs per model, the widest node per model, each owner's GPUs (its share
    of the load) and models (what its jobs ask for), and every node's GPUs."""

    gpu_models: dict[str, int]
    max_gpus_per_pod: dict[str, int]
    member_weights: dict[str, float]
    member_models: dict[str, dict[str, int]]
    node_gpus: dict[str, list[int]]

    @property
    def gpus(self) -> int:
        return sum(self.gpu_models.values())


def cluster_shape(inventory: ClusterInventory) -> ClusterShape:
    """The shape of `inventory`'s GPU nodes (groups without GPUs left out)."""
    capacity: dict[str, int] = defaultdict(int)
    widest: dict[str, int] = defaultdict(int)
    weights: dict[str, float] = defaultdict(float)
    owned: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for group in inventory.node_groups:
        gpus = group.count * group.gpus_per_node
        if gpus <= 0:
            continue
        capacity[group.gpu_model] += gpus
        widest[group.gpu_model] = max(widest[group.gpu_model], group.gpus_per_node)
        weights[group.owner] += gpus
        owned[group.owner][group.gpu_model] += gpus
    return ClusterShape(
        gpu_models=dict(capacity),
        max_gpus_per_pod=dict(widest),
        member_weights=dict(weights),
        member_models={member: dict(models) for member, models in owned.items()},
        node_gpus=node_gpus_of(inventory),
    )


def node_gpus_of(inventory: ClusterInventory) -> dict[str, list[int]]:
    """GPU model -> the GPUs of each node of that model that takes a simulated pod (no
    NoSchedule or NoExecute taint), for `synthesize(node_gpus=...)` and the trace's
    checks: what `simulate` can place on."""
    nodes: dict[str, list[int]] = {}
    for group in inventory.node_groups:
        if group.gpus_per_node > 0 and not keeps_off_untolerating_pods(
            t.effect for t in group.taints
        ):
            nodes.setdefault(group.gpu_model, []).extend([group.gpus_per_node] * group.count)
    return nodes


def _check_arguments(
    members: Sequence[str],
    gpus: int,
    days: float,
    load: float,
    seed: int,
    gpu_models: Mapping[str, int] | None,
    member_weights: Mapping[str, float] | None,
) -> None:
    if not members or any(not m for m in members):
        raise InputError("synthesize: members must be a non-empty list of names")
    if len(members) > MAX_MEMBERS:
        raise InputError(
            f"synthesize: at most {MAX_MEMBERS:,} members (as in a policy), got {len(members):,}"
        )
    if gpus < 1:
        raise InputError(f"synthesize: gpus must be at least 1, got {gpus}")
    if not 0 < days <= MAX_DAYS:
        raise InputError(f"synthesize: days must be > 0 and at most {MAX_DAYS:g}, got {days}")
    if not load > 0:
        raise InputError(f"synthesize: load must be > 0, got {load}")
    if seed < 0:
        raise InputError(f"synthesize: seed must be >= 0, got {seed}")
    if gpu_models is not None:
        bad = [m for m, n in gpu_models.items() if n < 1]
        if not gpu_models or bad:
            raise InputError(f"synthesize: gpu_models need at least 1 GPU each: {bad}")
    if member_weights is not None:
        unknown = sorted(set(member_weights) - set(members))
        if unknown or any(not (math.isfinite(w) and w >= 0) for w in member_weights.values()):
            raise InputError(
                "synthesize: member_weights must be finite, >= 0 and name members "
                f"(unknown: {unknown})"
            )
        if not any(member_weights.get(m, 0) > 0 for m in members):
            raise InputError("synthesize: member_weights give every member zero load")


def _stable_hash(text: str) -> int:
    """A per-member seed part that does not depend on PYTHONHASHSEED."""
    value = 0
    for byte in text.encode():
        value = (value * 131 + byte) % (2**61 - 1)
    return value


def _weights(
    names: list[str], given: Mapping[str, float] | None, rng: np.random.Generator
) -> list[float]:
    if given is not None:
        raw = np.array([float(given.get(n, 0.0)) for n in names])
    else:
        # Members differ: some submit several times more than others.
        raw = rng.lognormal(mean=0.0, sigma=0.35, size=len(names))
    if raw.max() > sys.float_info.max / len(raw):
        # Weights near the float maximum overflowed their sum, and every share came out
        # 0 or NaN: a trace of no job. Only these are scaled, so others stay as they were.
        raw = raw / raw.max()
    return [float(w) for w in raw / raw.sum()]


@dataclass(frozen=True, slots=True)
class _ModelShape:
    """What jobs of one GPU model may look like."""

    model: str | None
    probability: float
    pod: int
    """GPUs of the largest pod: the biggest node's GPUs (capped by max_gpus_per_pod)."""
    max_pods: int
    """Pods of that size the cluster holds at once: the largest gang that can run."""


def _model_shapes(
    models: dict[str, int] | None,
    gpus: int,
    max_gpus_per_pod: int | Mapping[str, int],
    node_gpus: Mapping[str, Sequence[int]] | None,
) -> list[_ModelShape]:
    def pod_limit(model: str | None) -> int:
        if isinstance(max_gpus_per_pod, int):
            return max_gpus_per_pod
        if model is None:
            return max(max_gpus_per_pod.values(), default=8)
        return max_gpus_per_pod.get(model, 8)

    if models is None:
        pod = max(1, min(pod_limit(None), gpus))
        return [_ModelShape(None, 1.0, pod, gpus // pod)]
    total = sum(models.values())
    shapes: list[_ModelShape] = []
    for model, count in sorted(models.items()):
        nodes = [n for n in (node_gpus or {}).get(model, []) if n > 0]
        if nodes:
            pod = max(1, min(pod_limit(model), max(nodes)))
            max_pods = sum(n // pod for n in nodes)
        else:
            pod = max(1, min(pod_limit(model), count))
            max_pods = count // pod
        shapes.append(_ModelShape(model, count / total, pod, max_pods))
    return shapes


def _shape_menu(pod: int, max_pods: int) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Possible (num_pods, gpus_per_pod) that fit and their probabilities."""
    shapes: list[tuple[int, int]] = []
    weights: list[float] = []
    for size, share in SINGLE_POD_MIX.items():
        if size <= pod:
            shapes.append((1, size))
            weights.append(share)
    if pod not in SINGLE_POD_MIX:
        # A node size off the usual powers of two: its full-node jobs take the 8-GPU share.
        shapes.append((1, pod))
        weights.append(SINGLE_POD_MIX[8])
    for pods, share in GANG_PODS_MIX.items():
        if pods <= max_pods:
            shapes.append((pods, pod))
            weights.append(share)
    p = np.array(weights)
    return shapes, p / p.sum()


def _durations(
    rng: np.random.Generator, num_pods: np.ndarray, gpus_per_pod: np.ndarray, cap: float
) -> np.ndarray:
    gang = num_pods > 1
    single_gpu = (~gang) & (gpus_per_pod == 1)
    median = np.where(
        gang,
        GANG_LAW.median_s,
        np.where(single_gpu, SINGLE_GPU_LAW.median_s, SINGLE_NODE_LAW.median_s),
    )
    sigma = np.where(
        gang, GANG_LAW.sigma, np.where(single_gpu, SINGLE_GPU_LAW.sigma, SINGLE_NODE_LAW.sigma)
    )
    raw = median * np.exp(sigma * rng.standard_normal(len(num_pods)))
    return np.clip(np.round(raw), MIN_DURATION_S, cap)


def _member_jobs(
    member: str,
    target_gpu_s: float,
    horizon: float,
    gpus: int,
    models: dict[str, int] | None,
    max_gpus_per_pod: int | Mapping[str, int],
    node_gpus: Mapping[str, Sequence[int]] | None,
    rng: np.random.Generator,
    owned: Mapping[str, int] | None = None,
    home_affinity: float = 0.0,
    most: int = MAX_JOBS,
) -> list[TraceJob] | None:
    """The member's jobs, or None when reaching its offered work takes more than `most`."""
    if target_gpu_s <= 0:
        return []
    caps = _model_shapes(models, gpus, max_gpus_per_pod, node_gpus)
    # One job may not exceed a tenth of the member's offered work, or a short trace
    # would be dominated (and its load missed) by a single multi-day gang.
    duration_cap = min(MAX_DURATION_S, max(horizon, MIN_DURATION_S))
    model_p = np.array([c.probability for c in caps])
    home = np.array([float((owned or {}).get(c.model or "", 0)) for c in caps])
    if home.sum() > 0:
        model_p = home_affinity * home / home.sum() + (1.0 - home_affinity) * model_p
    menus = [_shape_menu(c.pod, c.max_pods) for c in caps]
    # Members differ in how much distributed training they do.
    gang_taste = float(rng.lognormal(0.0, 0.6))

    model_idx: list[np.ndarray] = []
    pods_all: list[np.ndarray] = []
    per_pod_all: list[np.ndarray] = []
    durations_all: list[np.ndarray] = []
    offered = 0.0
    drawn = 0
    batch = 256
    while offered < target_gpu_s:
        if drawn > most:
            return None  # every job drawn so far is short of the target: more are needed
        chosen = rng.choice(len(caps), size=batch, p=model_p)
        pods, per_pod = _pod_shapes(rng, chosen, menus, gang_taste)
        durations = _durations(rng, pods, per_pod, duration_cap)
        job_gpus = pods * per_pod
        durations = np.maximum(
            MIN_DURATION_S, np.minimum(durations, np.floor(0.1 * target_gpu_s / job_gpus))
        )
        model_idx.append(chosen)
        pods_all.append(pods)
        per_pod_all.append(per_pod)
        durations_all.append(durations)
        offered += float((durations * job_gpus).sum())
        drawn += batch
        batch = min(batch * 2, 65_536)

    chosen = np.concatenate(model_idx)
    pods = np.concatenate(pods_all)
    per_pod = np.concatenate(per_pod_all)
    durations = np.concatenate(durations_all)
    count = _closest_prefix(np.cumsum(durations * pods * per_pod), target_gpu_s)
    if count > most:
        return None
    submits = _arrivals(count, horizon, rng)
    return [
        TraceJob(
            job_id="",
            org=member,
            submit_time=float(submits[i]),
            duration_s=float(durations[i]),
            num_pods=int(pods[i]),
            gpus_per_pod=int(per_pod[i]),
            gpu_model=caps[int(chosen[i])].model,
        )
        for i in range(count)
    ]


def _pod_shapes(
    rng: np.random.Generator,
    chosen: np.ndarray,
    menus: list[tuple[list[tuple[int, int]], np.ndarray]],
    gang_taste: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(pods, GPUs per pod) of each job, drawn from its GPU model's menu of shapes with
    gangs weighted by the member's taste for them."""
    pods = np.empty(len(chosen), dtype=np.int64)
    per_pod = np.empty(len(chosen), dtype=np.int64)
    for k, (shapes, p) in enumerate(menus):
        mask = chosen == k
        if not mask.any():
            continue
        tilted = p * np.array([gang_taste if n > 1 else 1.0 for n, _ in shapes])
        picks = rng.choice(len(shapes), size=int(mask.sum()), p=tilted / tilted.sum())
        pods[mask] = np.array([shapes[i][0] for i in picks])
        per_pod[mask] = np.array([shapes[i][1] for i in picks])
    return pods, per_pod


def _closest_prefix(cumulative: np.ndarray, target_gpu_s: float) -> int:
    """How many jobs to keep: the prefix whose offered work comes closest to the target."""
    n = int(np.searchsorted(cumulative, target_gpu_s))
    if n > 0 and abs(cumulative[n - 1] - target_gpu_s) < abs(cumulative[n] - target_gpu_s):
        return n
    return n + 1


def _arrivals(count: int, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """`count` submit times of a bursty process over [0, horizon): an inhomogeneous
    Poisson process conditioned on its count, whose intensity is a daily and weekly
    rhythm times an on/off burst state (a Markov-modulated process)."""
    bins = max(1, int(np.ceil(horizon / BIN_S)))
    starts = np.arange(bins) * BIN_S
    hour = (starts % DAY_S) / 3600.0
    # Busy working hours around a member-specific peak (members sit in different zones).
    peak = rng.uniform(11.0, 17.0)
    daily = 1.0 + 0.7 * np.cos(2 * np.pi * (hour - peak) / 24.0)
    weekday = (starts // DAY_S) % 7
    weekly = np.where(weekday >= 5, 0.5, 1.0)
    burst = _on_off(bins, rng)
    intensity = daily * weekly * burst
    p = intensity / intensity.sum()
    picked = rng.choice(bins, size=count, p=p)
    times = starts[picked] + rng.uniform(0.0, BIN_S, size=count)
    return np.round(np.minimum(times, np.nextafter(horizon, 0.0)), 3)


def _on_off(bins: int, rng: np.random.Generator) -> np.ndarray:
    """Per-bin burst multiplier: quiet spells (x0.3) and bursts (x4) of random length."""
    level = np.empty(bins)
    position = 0
    on = bool(rng.random() < 0.2)
    while position < bins:
        mean_hours = 8.0 if on else 36.0
        length = max(1, int(rng.exponential(mean_hours * 3600.0 / BIN_S)))
        level[position : position + length] = 4.0 if on else 0.3
        position += length
        on = not on
    return level
