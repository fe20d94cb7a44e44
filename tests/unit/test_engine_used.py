"""`ClusterState` starts from what the last snapshot's running pods left free, moved by
the pods gone and come (`placement._used`); it must start exactly where counting every
pod afresh starts."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engine import placement
from scheduler.engine.placement import ClusterState
from scheduler.engine.snapshot import Snapshot, changed_pods
from tests.examples import examples
from tests.unit.engine_strategies import node, running, scenarios, snapshot
from tests.unit.test_engine_allocation import _changes


def _start(state: ClusterState) -> tuple[object, ...]:
    return (
        state.free_gpu,
        state.free_cpu,
        state.free_mem,
        state.free_pods,
        state.term,
        state.term_pods,
    )


def _afresh(snap: Snapshot) -> ClusterState:
    placement._LAST_USED.clear()
    return ClusterState(snap)


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_the_free_capacity_moved_from_the_last_pods_is_what_counting_them_gives(
    data: st.DataObject,
) -> None:
    _, snap = data.draw(scenarios())
    names = [n.name for n in snap.nodes]
    pods = list(snap.running)
    placement._LAST_USED.clear()
    for _ in range(5):
        snap = dataclasses.replace(snap, running=tuple(pods))
        moved = ClusterState(snap)
        assert _start(moved) == _start(_afresh(snap))
        # The next cycle's state starts from this snapshot's, whatever the cycle did.
        ClusterState(snap).take(0, (1, 0, 0, 0))
        pods = data.draw(_changes(pods, names))


def test_a_pod_gone_one_marked_terminating_and_one_come_move_the_last_count() -> None:
    nodes = [node("a-0", "lab-a"), node("b-0", "lab-b", gpus=4)]
    pods = [
        running(f"p{k}", "lab-a", f"{'a' if k % 2 else 'b'}-0", gpus=1 + k % 3) for k in range(8)
    ]
    snap = snapshot(nodes, run=pods)
    placement._LAST_USED.clear()
    ClusterState(snap)
    after = (
        *pods[1:5],
        dataclasses.replace(pods[5], terminating=True),
        *pods[6:],
        running("p9", "lab-b", "a-0", gpus=2),
    )
    assert changed_pods(snap.running, after) is not None
    later = dataclasses.replace(snap, running=after)
    moved = ClusterState(later)
    assert moved.term_pods == 1 and moved.term[moved.index["a-0"]] == [3, 0, 0, 1]
    assert _start(moved) == _start(_afresh(later))
