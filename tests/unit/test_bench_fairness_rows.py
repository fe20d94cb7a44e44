"""The fairness benchmark's rows over several draws: mean, standard error, range."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_fairness import (
    COLUMNS,
    FIGURES,
    _h,
    figures,
    mean,
    row,
    spread,
    standard_error,
)


def draws(uwp: list[float], worse: list[int]) -> list[tuple[Any, dict[str, float | None]]]:
    out: list[tuple[Any, dict[str, float | None]]] = []
    for u, w in zip(uwp, worse, strict=True):
        figures: dict[str, float | None] = dict.fromkeys(FIGURES, None)
        figures["uwp"] = u
        summary = {"members_worse_off_pooled": w, "members": ["a", "b", "c", "d"]}
        out.append((SimpleNamespace(summary=summary), figures))
    return out


def test_the_standard_error_is_the_sample_deviation_over_the_root_of_the_draws() -> None:
    # 0.70, 0.74, 0.78: mean 0.74, sample deviation 0.04, over sqrt(3): 0.0231.
    seen = draws([0.70, 0.74, 0.78], [1, 2, 0])
    assert mean(seen)["uwp"] == "0.740"
    assert standard_error(seen)["uwp"] == f"{0.04 / math.sqrt(3):.3f}" == "0.023"
    assert spread(seen, 0.0)["uwp"] == "0.700–0.780"
    # Worse off: 1, 2, 0 members: deviation 1, over sqrt(3).
    assert standard_error(seen)["worse"] == "0.6"
    # A figure no draw has stays unknown; identical draws have no spread.
    assert standard_error(seen)["jain"] == FIGURES["jain"](None)
    assert standard_error(draws([0.8, 0.8], [1, 1]))["uwp"] == "0.000"


class _Summary(dict[str, object]):
    """A replay's summary with only the figures a test sets (the others unknown)."""

    def __missing__(self, key: str) -> object:
        return None


def test_the_time_to_entitlement_p99_comes_with_how_many_episodes_it_is_over() -> None:
    # Over 31 episodes a p99 lies between the two longest: the row says how many there
    # were, so that it is not read as the 99th percentile of many.
    lengths = [60.0 * k for k in range(1, 32)]
    p99 = float(np.percentile(lengths, 99))
    assert lengths[-2] <= p99 <= lengths[-1]
    summary = _Summary(
        time_to_entitlement_p99_s=p99,
        time_to_entitlement_episodes=len(lengths),
        jobs_completed=3,
        jobs_submitted=3,
        members_worse_off_pooled=0,
        members=["a", "b"],
    )
    study = SimpleNamespace(summary=summary, result=SimpleNamespace(entitlement={}))
    study.jobs = pd.DataFrame(columns=["member", "gpu_model", "gpus", "wait_s"])
    assert figures(study, study)["episodes"] == 31  # type: ignore[arg-type]
    shown = row(study, study, 0.0)  # type: ignore[arg-type]
    assert shown["episodes"] == "31"
    assert shown["tte"] == _h(p99)
    assert ("episodes", "owed episodes") in COLUMNS
