"""`fairpool policy simulate`'s comparison of the current policy and a draft: the figures a
draft is judged by on a contended pool, as the API's `SimulationSummary` carries them
from each replay's `summary.json` (the command itself, against a served API, is
tests/integration/test_api_cli.py's)."""

from __future__ import annotations

import json

import pytest

from scheduler.api.share_service import convert_summary
from scheduler.cli.policy import (
    CONTENDED_ROWS,
    MEMBER_FIGURES,
    contended_rows,
    member_rows,
    pool_utilization,
)

CURRENT: dict[str, object] = {
    "utilization_while_pending": 0.7371,
    "makespan_s": 2_700_000.0,
    "reclaim_lost_fraction": 0.0782,
    "gpu_hours_lost_to_reclaim": 4176.7,
    "reclaim_lost_entitlement_gpu_h": 3798.06,
    "reclaim_lost_fair_share_gpu_h": 199.4,
    "reclaim_lost_consolidation_gpu_h": 179.2,
    "preemptions_per_job_max": 3,
    "time_to_entitlement_p99_s": 23886.3,
    "mean_jct_s": 61920.0,
    "p95_wait_s": 175680.0,
    "members": {
        "lab-bio": {
            "gpu_hours_lost_to_reclaim": 1798.7,
            "reclaim_lost_entitlement_gpu_h": 1704.4,
            "reclaim_lost_fair_share_gpu_h": 48.2,
            "reclaim_lost_consolidation_gpu_h": 46.1,
            "preemptions": 212,
            "time_to_entitlement_p99_s": None,
        }
    },
}


def test_the_summary_carries_the_contended_figures_typed() -> None:
    s = convert_summary("current", 3, CURRENT)
    assert s.reclaim_lost_fraction == 0.0782
    assert dict(s.gpu_hours_lost_by_cause) == {
        "entitlement": 3798.06,
        "fair_share": 199.4,
        "consolidation": 179.2,
        "queue": 0.0,
    }
    assert s.preemptions_per_job_max == 3
    assert s.HasField("time_to_entitlement_p99_s") and s.p95_wait_s == 175680.0
    (m,) = s.members
    assert m.preemptions == 212
    assert sum(m.gpu_hours_lost_by_cause.values()) == pytest.approx(m.gpu_hours_lost_to_reclaim)
    # null in summary.json: absent, not 0 (a member that never waited for its entitlement).
    assert not m.HasField("time_to_entitlement_p99_s")
    assert json.loads(s.summary_json) == CURRENT


def test_the_contended_figures_of_both_replays_side_by_side() -> None:
    draft = {
        **CURRENT,
        "reclaim_lost_fraction": 0.01,
        "time_to_entitlement_p99_s": None,
        # A lower lendingLimit in the draft strands two gangs for good.
        "simulation": {"jobs_unfinished": 2, "jobs_never_runnable": 2},
    }
    current = {**CURRENT, "simulation": {"jobs_unfinished": 0, "jobs_never_runnable": 0}}
    rows = {
        label.strip(): (a, b)
        for label, a, b in contended_rows(
            convert_summary("current", 3, current), convert_summary("draft", 4, draft)
        )
    }
    assert len(rows) == len(CONTENDED_ROWS)
    assert rows["utilization while work waits"] == ("0.737", "0.737")
    assert rows["lost to reclaim (share of GPU-hours used)"] == ("7.82%", "1.00%")
    assert rows["lost: owners' reclaims GPU-h"] == ("3,798.1", "3,798.1")
    assert rows["lost: moves (consolidation) GPU-h"] == ("179.2", "179.2")
    assert rows["most preemptions of one job"] == ("3", "3")
    # No figure (nothing waited in that replay): a dash, not 0.
    assert rows["owners' time to entitlement p99 s"] == ("23,886", "—")
    assert rows["jobs that can never run"] == ("0", "2")


def test_a_summary_without_the_figures_shows_dashes() -> None:
    empty = convert_summary("current", 1, {})
    for label, a, b in contended_rows(empty, empty):
        if label == "most preemptions of one job":
            assert (a, b) == ("0", "0")
        elif "lost:" in label:
            # Every cause is present: none lost is 0 GPU-hours, not unknown.
            assert (a, b) == ("0.0", "0.0"), label
        else:
            assert (a, b) == ("—", "—"), label


def test_members_of_one_replay_only_are_shown_with_dashes() -> None:
    # A draft that adds a member (or removes one) had that member's row left out: the
    # table paired the current replay's members with the draft's and skipped the rest.
    outcome = {"gpu_hours_used": 2.5, "jobs_completed": 1, "mean_jct_s": 600.0}
    current = convert_summary("current", 3, {"members": {"lab-bio": outcome, "gone": outcome}})
    draft = convert_summary("draft", 4, {"members": {"lab-bio": outcome, "newlab": outcome}})
    rows = {row[0]: row[1:] for row in member_rows(current, draft)}
    assert list(rows) == ["gone", "lab-bio", "newlab"]
    assert rows["lab-bio"][0] == "2.5 → 2.5"
    assert rows["gone"][0] == "2.5 → —" and rows["gone"][6] == "1 → —"
    assert rows["newlab"][0] == "— → 2.5" and rows["newlab"][8] == "— → 600"
    assert all(len(row) == len(MEMBER_FIGURES) for row in rows.values())


def test_figures_over_no_job_or_no_window_show_dashes_not_zero() -> None:
    """A member that completed no job has no mean wait or JCT (null in summary.json), and
    a replay whose jobs were all submitted at one instant no utilization: the message's
    plain doubles carry them as 0, and the tables showed "0 → 60" mean JCT and a
    utilization of 0.000, as if the jobs never waited and the GPUs idled."""
    idle = {"jobs_submitted": 3, "jobs_completed": 0, "mean_wait_s": None, "mean_jct_s": None}
    ran = {"jobs_submitted": 3, "jobs_completed": 1, "mean_wait_s": 0.0, "mean_jct_s": 60.0}
    current = convert_summary("current", 1, {"utilization": None, "members": {"lab-bio": idle}})
    draft = convert_summary("draft", 2, {"utilization": 0.0, "members": {"lab-bio": ran}})
    (row,) = member_rows(current, draft)
    assert row[7:] == ("0 → 1", "— → 0", "— → 60")
    assert (pool_utilization(current), pool_utilization(draft)) == (None, 0.0)
