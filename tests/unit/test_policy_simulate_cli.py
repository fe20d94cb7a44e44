"""`fairpool policy simulate`'s comparison of the current policy and a draft: the figures a
draft is judged by on a contended pool, read from each replay's `summary.json` (the
command itself, against a served API, is tests/integration/test_api_cli.py's)."""

from __future__ import annotations

import json

from scheduler.cli.policy import CONTENDED_ROWS, contended_rows


def test_the_contended_figures_of_both_replays_side_by_side() -> None:
    current = {
        "utilization_while_pending": 0.7371,
        "reclaim_lost_fraction": 0.0782,
        "reclaim_lost_entitlement_gpu_h": 3798.06,
        "reclaim_lost_fair_share_gpu_h": 199.4,
        "reclaim_lost_consolidation_gpu_h": 179.2,
        "preemptions_per_job_max": 3,
        "time_to_entitlement_p99_s": 23886.3,
        "mean_jct_s": 61920.0,
        "p95_wait_s": 175680.0,
    }
    draft = {**current, "reclaim_lost_fraction": 0.01, "time_to_entitlement_p99_s": None}
    rows = {
        label.strip(): (a, b)
        for label, a, b in contended_rows(json.dumps(current), json.dumps(draft))
    }
    assert len(rows) == len(CONTENDED_ROWS)
    assert rows["utilization while work waits"] == ("0.737", "0.737")
    assert rows["lost to reclaim (share of GPU-hours used)"] == ("7.82%", "1.00%")
    assert rows["lost: owners' reclaims GPU-h"] == ("3,798.1", "3,798.1")
    assert rows["most preemptions of one job"] == ("3", "3")
    # No figure (nothing waited in that replay): a dash, not 0.
    assert rows["owners' time to entitlement p99 s"] == ("23,886", "—")


def test_a_summary_that_is_missing_or_not_json_shows_dashes() -> None:
    for label, a, b in contended_rows("", "{not json"):
        assert (a, b) == ("—", "—"), label
