"""The simulated cluster keeps its pending GPUs per member and named model as jobs come
and go (`SimCluster.pending_gpus`); they must be what its pending shapes add up to,
whatever the order, with jobs naming no model and jobs that can never run among them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sim.cluster import SimCluster
from scheduler.sim.waiting import job_shape
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


_FEW_SHAPES = st.tuples(
    st.sampled_from(["a", "b"]),
    st.sampled_from(["G", None]),
    st.integers(1, 2),  # pods
    st.sampled_from([1, 16]),  # GPUs per pod: 16 never fits a node
)
"""Few shapes, so that jobs of one shape come and go while some of them are kept."""


@settings(max_examples=examples(150), deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["enqueue", "dequeue", "mark"]), _FEW_SHAPES, st.integers(0, 30)),
        max_size=40,
    ),
    marks=st.lists(st.frozensets(st.integers(0, 40), max_size=8), min_size=40, max_size=40),
)
def test_kept_off_wanted_shapes_are_those_whose_every_pending_job_the_last_cycle_kept(
    steps: list[tuple[str, tuple[str, str | None, int, int], int]], marks: list[frozenset[int]]
) -> None:
    cluster = SimCluster(NODES, POLICY)
    queued: list[str] = []
    marked: set[str] = set()  # kept by the last cycle and still pending
    for n, (step, (member, model, pods, per_pod), pick) in enumerate(steps):
        if step == "dequeue" and queued:
            gone = queued.pop(pick % len(queued))
            cluster.dequeue(gone)
            marked.discard(gone)
        elif step == "mark":
            # A cycle's kept jobs: pending ones, and ids no longer (or never) pending.
            ids = frozenset(f"j{k}" for k in marks[n])
            cluster.mark_kept_off_wanted(ids)
            marked = {j for j in ids if j in cluster.pending}
        else:
            traced = job(f"j{n}", member, float(n), 60.0, per_pod, pods=pods, model=model)
            cluster.enqueue(traced, 0, float(n), float(n))
            queued.append(traced.job_id)
        by_shape: dict[tuple[str, str | None, int, int], list[bool]] = {}
        for job_id, pending in cluster.pending.items():
            shape = job_shape(pending)
            if shape in cluster.pending_shapes:  # jobs that can never run are not work
                by_shape.setdefault(shape, []).append(job_id in marked)
        expected = {shape for shape, kept in by_shape.items() if all(kept)}
        assert cluster.kept_off_wanted_shapes() == expected


def test_a_job_named_again_once_queued_is_kept() -> None:
    """A cycle named j2 before it was queued (or after it left); named again by the next
    cycle once queued, it is kept: the same set of ids as the last cycle's was taken as
    nothing new, and j2's shape read as not kept once j0 left."""
    cluster = SimCluster(NODES, POLICY)
    shape = ("a", "G", 1, 1)
    cluster.enqueue(job("j0", "a", 0.0, 60.0, 1, pods=1, model="G"), 0, 0.0, 0.0)
    cluster.mark_kept_off_wanted(frozenset({"j2"}))
    cluster.enqueue(job("j2", "a", 2.0, 60.0, 1, pods=1, model="G"), 0, 2.0, 2.0)
    cluster.mark_kept_off_wanted(frozenset({"j2"}))
    cluster.dequeue("j0")
    assert cluster.kept_off_wanted_shapes() == {shape}
    # Kept, bound (it leaves the queue), queued again and named by the same set again.
    cluster.dequeue("j2")
    cluster.enqueue(job("j2", "a", 2.0, 60.0, 1, pods=1, model="G"), 1, 2.0, 3.0)
    cluster.mark_kept_off_wanted(frozenset({"j2"}))
    assert cluster.kept_off_wanted_shapes() == {shape}


def test_a_shape_is_kept_off_wanted_while_every_pending_job_of_it_is_kept() -> None:
    cluster = SimCluster(NODES, POLICY)
    shape = ("a", "G", 1, 2)
    for n in range(2):
        cluster.enqueue(job(f"k{n}", "a", 0.0, 60.0, 2), 0, 0.0, 0.0)
    cluster.mark_kept_off_wanted(frozenset({"k0"}))
    assert cluster.kept_off_wanted_shapes() == set()  # k1 is not kept
    cluster.dequeue("k1")
    assert cluster.kept_off_wanted_shapes() == {shape}  # now every one is
    cluster.enqueue(job("k2", "a", 1.0, 60.0, 2), 0, 1.0, 1.0)
    assert cluster.kept_off_wanted_shapes() == set()  # an arrival is not kept (yet)
    cluster.mark_kept_off_wanted(frozenset({"k0", "k2"}))
    assert cluster.kept_off_wanted_shapes() == {shape}
    cluster.dequeue("k0")  # bound: k2 is still kept
    assert cluster.kept_off_wanted_shapes() == {shape}
    cluster.mark_kept_off_wanted(frozenset())  # the next cycle placed or kept none
    assert cluster.kept_off_wanted_shapes() == set()
    # A job that can never run is not work: it is neither kept nor keeps a shape out.
    cluster.enqueue(job("big", "a", 2.0, 60.0, 16), 0, 2.0, 2.0)
    cluster.mark_kept_off_wanted(frozenset({"big", "k2"}))
    assert cluster.kept_off_wanted_shapes() == {shape}
