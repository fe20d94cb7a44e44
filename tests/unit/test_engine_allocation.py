"""`allocation.classify` works a classification out from the last one when a few pods
came or went; it must give exactly what classifying the pods afresh gives, tables in the
same order."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engine import allocation
from scheduler.engine.allocation import Allocation, classify
from scheduler.engine.entitlement import MemberModel
from scheduler.engine.shares import _static
from scheduler.engine.snapshot import RunningPod
from tests.examples import examples
from tests.unit.engine_strategies import H100, node, policy, running, scenarios


def _tables(found: Allocation) -> tuple[object, ...]:
    return (
        list(found.used.items()),
        list(found.allocated.items()),
        list(found.lent.items()),
        list(found.borrowed.items()),
        list(found.reclaimable.items()),
        sorted(found.reclaimable_pods),
        sorted(found.late.items()),
    )


def _afresh(
    pods: tuple[RunningPod, ...],
    node_of: Mapping[str, tuple[str, str | None]],
    entitlement: Mapping[MemberModel, int],
) -> Allocation:
    """Classified from nothing, leaving what `classify` keeps alone."""
    return allocation._classify(pods, node_of, entitlement).out


@st.composite
def _changes(draw: st.DrawFn, pods: list[RunningPod], nodes: list[str]) -> list[RunningPod]:
    """The pods after a cycle: some gone, some marked terminating in place, new ones
    bound at the end or (a daemon's cache need not keep bind order) anywhere."""
    out: list[RunningPod] = []
    for pod in pods:
        fate = draw(st.integers(0, 9))
        if fate == 0:
            continue
        out.append(dataclasses.replace(pod, terminating=True) if fate == 1 else pod)
    for k in range(draw(st.integers(0, 3))):
        pod = running(
            f"n{len(pods)}-{k}",
            draw(st.sampled_from(["lab-a", "lab-b", None])),
            draw(st.sampled_from(nodes)),
            gpus=draw(st.integers(0, 4)),
            started_at=draw(st.sampled_from([0.0, 9_000.0, 20_000.0])),
        )
        out.insert(draw(st.integers(0, len(out))), pod)
    return out


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_classifying_from_the_last_pods_gives_what_classifying_afresh_gives(
    data: st.DataObject,
) -> None:
    pol, snap = data.draw(scenarios())
    static = _static(snap.nodes, pol)
    names = [n.name for n in snap.nodes]
    pods = list(snap.running)
    allocation._LAST.clear()
    for _ in range(5):
        # Each cycle's pods classified from the last cycle's classification.
        kept = classify(tuple(pods), static.node_of, static.entitlement)
        assert _tables(kept) == _tables(_afresh(tuple(pods), static.node_of, static.entitlement))
        pods = data.draw(_changes(pods, names))


def test_a_pod_gone_and_an_equal_one_left_take_one_entry_out() -> None:
    # Two pods alike in every field the fill order reads (a snapshot should not hold
    # them, but one could): one goes, the other is still counted.
    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    static = _static(tuple(nodes), pol)
    twin = running("same", "lab-a", "b1", gpus=2, started_at=5.0)
    other = dataclasses.replace(twin, name="other")
    allocation._LAST.clear()
    classify((twin, other), static.node_of, static.entitlement)
    left = classify((other,), static.node_of, static.entitlement)
    assert sum(left.allocated.values()) == 2
    assert _tables(left) == _tables(_afresh((other,), static.node_of, static.entitlement))


def test_a_few_pods_changed_are_worked_out_from_the_last_classification() -> None:
    # lab-b borrows lab-a's node beyond its entitlement of 8. Then one of its borrowed
    # pods ends, one is preempted (terminating), one starts on lab-a's node and one on
    # its own, which fills the entitlement before the borrowed ones: only lab-b's group
    # is filled again, and the tables are what classifying afresh gives.
    pol = policy(["lab-a", "lab-b"])
    nodes = [node("a1", "lab-a"), node("b1", "lab-b")]
    static = _static(tuple(nodes), pol)
    pods = [running(f"a{k}", "lab-a", "a1", gpus=1, started_at=k) for k in range(2)]
    pods += [running(f"b{k}", "lab-b", "b1", gpus=2, started_at=k) for k in range(2)]
    pods += [running(f"x{k}", "lab-b", "a1", gpus=1, started_at=10 + k) for k in range(6)]
    allocation._LAST.clear()
    first = classify(tuple(pods), static.node_of, static.entitlement)
    assert first.reclaimable_pods == {"x4", "x5"}
    before = allocation._LAST[0]
    later = [p for p in pods if p.uid != "x1"]
    later[-1] = dataclasses.replace(later[-1], terminating=True)  # x5
    later.append(running("x9", "lab-b", "a1", gpus=1, started_at=50))
    later.append(running("b9", "lab-b", "b1", gpus=2, started_at=50))
    found = classify(tuple(later), static.node_of, static.entitlement)
    after = allocation._LAST[0]
    assert after.groups[("lab-a", H100)] is before.groups[("lab-a", H100)]
    assert after.groups[("lab-b", H100)] is not before.groups[("lab-b", H100)]
    assert _tables(found) == _tables(_afresh(tuple(later), static.node_of, static.entitlement))
    # Own pods b0, b1, b9 (6 GPUs), then x0 and x2 fill the 8; x3, x4 and x9 are beyond.
    assert found.reclaimable_pods == {"x3", "x4", "x9"}
