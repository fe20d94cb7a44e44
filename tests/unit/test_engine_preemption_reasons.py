"""A preemption's reason as the victim's member reads it (on its pod, in its namespace):
the other members and their jobs hidden as the API hides them from a member."""

from __future__ import annotations

import pytest

from scheduler.engine import schedule
from scheduler.engine.decisions import Decisions
from scheduler.engine.mentions import END, JOB, MENTION, plain
from scheduler.k8s.evictor import event_text, victim_annotations
from scheduler.k8s.objects import pod_info
from scheduler.k8s.redaction import redact_explanation
from tests.unit import test_engine_consolidation as consolidation
from tests.unit.engine_strategies import job, node, policy, running, snapshot


def _reclaim() -> Decisions:
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [
        running("b-own", "lab-b", "b1", gpus=8, started_at=0),
        running("b-x", "lab-b", "a1", gpus=4, started_at=100),
        running("b-y", "lab-b", "a1", gpus=4, started_at=200),
    ]
    pending = [job("a-1", "lab-a", gpus=8), job("a-2", "lab-a", gpus=8, submitted_at=1)]
    pol = policy(["lab-a", "lab-b", "lab-c"], reclaim_grace_period_seconds=45)
    return schedule(snapshot(nodes, pending, run), pol)


def _consolidation() -> Decisions:
    run = consolidation.scattered()
    return schedule(
        snapshot(consolidation.NODES, [job("a-1", "lab-a", gpus=8)], run), consolidation.POL
    )


def _sent_home() -> Decisions:
    nodes, run = consolidation._pushed_out()
    pol = policy(["lab-a", "lab-b", "lab-c"], min_runtime_seconds=600)
    return schedule(snapshot(nodes, [job("b-big", "lab-b", gpus=8)], run, now=2000.0), pol)


@pytest.mark.parametrize("decide", [_reclaim, _consolidation, _sent_home])
def test_the_victims_member_reads_no_other_member_nor_its_job(decide: object) -> None:
    d = decide()  # type: ignore[operator]
    assert d.preemptions
    for p in d.preemptions:
        read = redact_explanation(p.reason, p.victim_member)
        others = {"lab-a", "lab-b", "lab-c", "lab-o"} - {p.victim_member}
        assert not [m for m in others if m in read], read
        assert p.for_job not in read, read
        assert "another member" in read
        # The victim's own member and job stay named for it.
        assert p.victim_member in read


def test_an_operator_reads_the_reclaim_whole() -> None:
    reasons = {p.pod_uid: p.reason for p in _reclaim().preemptions}
    assert plain(reasons["b-x"]) == (
        "reclaim for member lab-a (holds 8 of its entitlement of 16 NVIDIA-H100, job a-2 of "
        "lab-a needs 8): member lab-b holds 12, above its fair share of 8, and job "
        "lab-b/b-x runs on borrowed GPUs"
    )
    assert redact_explanation(reasons["b-x"], "lab-b") == (
        "reclaim for another member (holds 8 of its entitlement of 16 NVIDIA-H100, a job of "
        "another member needs 8): member lab-b holds 12, above its fair share of 8, and "
        "job lab-b/b-x runs on borrowed GPUs"
    )


MARKS = (MENTION, JOB, END)


@pytest.mark.parametrize("decide", [_reclaim, _consolidation, _sent_home])
def test_the_evictor_writes_the_reason_as_the_victims_member_reads_it(decide: object) -> None:
    d = decide()  # type: ignore[operator]
    for p in d.preemptions:
        pod = pod_info({"metadata": {"name": p.pod_uid, "namespace": p.victim_member}})
        written = victim_annotations(p, pod, 1.8e9)
        _, _, event = event_text(p)
        read = redact_explanation(p.reason, p.victim_member)
        assert written["fairpool.io/preemption-reason"] == read
        assert f": {read} (grace period " in event
        others = {"lab-a", "lab-b", "lab-c", "lab-o"} - {p.victim_member}
        for text in (*written.values(), event):
            assert not [m for m in MARKS if m in text], repr(text)
            assert p.for_job not in text, text
        assert not [m for m in others if m in event or m in read], event
