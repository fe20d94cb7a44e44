"""The fairness benchmark's rows over several draws: mean, standard error, range."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

from bench.bench_fairness import FIGURES, mean, spread, standard_error


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
