"""The simulated cluster keeps its pending GPUs per member and named model as jobs come
and go (`SimCluster.pending_gpus`); they must be what its pending shapes add up to,
whatever the order, with jobs naming no model and jobs that can never run among them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sim.cluster import SimCluster
from tests.examples import examples
from tests.unit.test_sim_helpers import job, node, policy

NODES = (node("a-0", "a", 8), node("a-1", "a", 4, model="H"), node("b-0", "b", 8))
POLICY = policy(models=("G", "H"))


def _from_shapes(cluster: SimCluster) -> dict[tuple[str, str | None], int]:
    out: dict[tuple[str, str | None], int] = {}
    for (member, model, pods, per_pod), jobs in cluster.pending_shapes.items():
        out[(member, model)] = out.get((member, model), 0) + pods * per_pod * jobs
    return out


_JOB = st.tuples(
    st.sampled_from(["a", "b"]),
    st.sampled_from(["G", "H", None]),
    st.integers(1, 3),  # pods
    st.integers(0, 16),  # GPUs per pod: 16 never fits a node
)


@settings(max_examples=examples(150), deadline=None)
@given(steps=st.lists(st.tuples(st.booleans(), _JOB, st.integers(0, 30)), max_size=40))
def test_pending_gpus_add_up_the_pending_shapes(
    steps: list[tuple[bool, tuple[str, str | None, int, int], int]],
) -> None:
    cluster = SimCluster(NODES, POLICY)
    queued: list[str] = []
    for n, (leaves, (member, model, pods, per_pod), pick) in enumerate(steps):
        if leaves and queued:
            cluster.dequeue(queued.pop(pick % len(queued)))
        else:
            traced = job(f"j{n}", member, float(n), 60.0, per_pod, pods=pods, model=model)
            cluster.enqueue(traced, 0, float(n), float(n))
            queued.append(traced.job_id)
        kept = {k: v for k, v in cluster.pending_gpus.items() if v}
        assert kept == {k: v for k, v in _from_shapes(cluster).items() if v}


def test_a_job_that_never_runs_is_not_pending_work() -> None:
    cluster = SimCluster(NODES, POLICY)
    cluster.enqueue(job("big", "a", 0.0, 60.0, 16), 0, 0.0, 0.0)
    cluster.enqueue(job("one", "a", 0.0, 60.0, 2, pods=2), 0, 0.0, 0.0)
    assert {k: v for k, v in cluster.pending_gpus.items() if v} == {("a", "G"): 4}
    cluster.dequeue("big")
    cluster.dequeue("one")
    assert not any(cluster.pending_gpus.values())
