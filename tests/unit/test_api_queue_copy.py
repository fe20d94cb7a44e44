"""The read front's copy of the pending queue, kept from the changes the daemon's process
sends: after any run of publications it holds what the latest one holds, and it is sent
only what changed."""

from __future__ import annotations

import pickle
import random

from scheduler.api import messages
from scheduler.api.pending_queue import QueueIndex
from scheduler.api.queue_copy import QueueCopy, QueueSender, to_wire
from scheduler.engine.decisions import Bind, Decisions, Explanations
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, Snapshot
from scheduler.k8s.published import NOTHING_PUBLISHED, Published, Rejected

MEMBERS = ("uni-north", "lab-bio", "physics")


def job(i: int, version: int = 0, pods: int = 1) -> PendingJob:
    member = MEMBERS[i % len(MEMBERS)]
    job_id = f"{member}/job/train-{i}" if pods > 1 else f"uid-{i}"
    return PendingJob(
        job_id,
        member,
        tuple(
            PendingPod(
                f"uid-{i}-{k}",
                f"train-{i}-{k}",
                member,
                PodSpec(
                    gpus=1 + version,
                    cpu_milli=500,
                    gpu_model="NVIDIA-H100-80GB-HBM3" if i % 2 else None,
                    node_selector={"zone": "a"},
                ),
            )
            for k in range(pods)
        ),
        min_member=pods,
        submitted_at=float(i % 7),
    )


def publish(
    last: Published,
    pending: tuple[PendingJob, ...],
    sentences: dict[str, str],
    standby: bool = False,
    rejected: tuple[Rejected, ...] = (),
    binds: tuple[Bind, ...] = (),
) -> Published:
    snapshot = Snapshot(now=100.0, nodes=(), running=(), pending=pending)
    decisions = Decisions(binds=binds, explanations=Explanations(lambda: dict(sentences)))
    return last.next(
        snapshot,
        None,  # type: ignore[arg-type]
        decisions,
        rejected=rejected,
        sentences_on_request=standby,
    )


def sent(copy: QueueCopy, sender: QueueSender, published: Published) -> QueueCopy:
    change = sender.change(published)
    assert change is not None
    # As it crosses the pipe to the front's process.
    return copy.apply(pickle.loads(pickle.dumps(change)))


def same_queue(copy: QueueCopy, published: Published) -> None:
    mine, theirs = copy.index, QueueIndex.of(published.snapshot.pending)

    def answered(jobs: tuple[PendingJob, ...]) -> list[object]:
        return [messages.pending_job(j, 100.0) for j in jobs]

    assert answered(mine.oldest_first) == answered(theirs.oldest_first)
    assert mine.by_member.keys() == theirs.by_member.keys()
    for member, jobs in mine.by_member.items():
        assert answered(jobs) == answered(theirs.by_member[member])
    assert {k: sorted(j.job_id for j in v) for k, v in mine.by_pod.items()} == {
        k: sorted(j.job_id for j in v) for k, v in theirs.by_pod.items()
    }
    assert {k: sorted(j.job_id for j in v) for k, v in mine.by_gang.items()} == {
        k: sorted(j.job_id for j in v) for k, v in theirs.by_gang.items()
    }
    if published.sentences_on_request:
        assert copy.sentences is None
    else:
        assert copy.sentences == dict(published.decisions.explanations)
    assert copy.rejected == published.rejected
    for bind in published.decisions.binds:
        assert bind.node in copy.bound(bind.job_id)


def test_the_copy_holds_the_latest_queue_after_any_run_of_changes() -> None:
    rng = random.Random(7)
    for _ in range(20):
        sender, copy = QueueSender(), QueueCopy()
        jobs = {i: job(i, pods=1 + (i % 4 == 0) * 3) for i in range(60)}
        sentences = {j.job_id: f"waits {i}" for i, j in jobs.items()}
        published = NOTHING_PUBLISHED
        rejected: tuple[Rejected, ...] = ()
        for step in range(25):
            for i in rng.sample(range(90), 8):
                roll = rng.random()
                if roll < 0.4:
                    jobs.pop(i, None)
                elif roll < 0.7:
                    jobs[i] = job(i, version=step, pods=1 + (i % 4 == 0) * 3)
                # else: the same object, kept as the cache keeps an unchanged job
            sentences = {
                j.job_id: sentences.get(j.job_id, "new") if rng.random() < 0.8 else f"s{step}"
                for j in jobs.values()
            }
            if rng.random() < 0.3:
                rejected = (
                    Rejected(f"uid-r{step}", "physics", "physics", ("r",), "unreadable", 1.0),
                )
            pending = tuple(sorted(jobs.values(), key=lambda j: j.job_id))
            first = next(iter(jobs.values()), None)
            binds = (
                (Bind(first.pods[0].uid, "node-1", first.job_id, first.member, None, False),)
                if first is not None
                else ()
            )
            published = publish(published, pending, sentences, rng.random() < 0.2, rejected, binds)
            copy = sent(copy, sender, published)
            same_queue(copy, published)


def test_only_what_changed_is_sent() -> None:
    sender = QueueSender()
    jobs = tuple(job(i) for i in range(1000))
    sentences = {j.job_id: "waits" for j in jobs}
    first = publish(NOTHING_PUBLISHED, jobs, sentences)
    change = sender.change(first)
    assert change is not None and change.full and len(change.jobs) == 1000
    assert sender.change(first) is None, "the same publication (a new policy) sends nothing"
    changed = job(5, version=1)
    later = (*jobs[:5], changed, *jobs[6:999])
    said = {j.job_id: sentences[j.job_id] for j in later}
    second = publish(first, later, {**said, changed.job_id: "moved"})
    change = sender.change(second)
    assert change is not None and not change.full
    assert change.jobs == (to_wire(changed),)
    assert change.gone == (jobs[999].job_id,)
    assert change.sentences == {changed.job_id: "moved"}
    assert change.unsaid == (jobs[999].job_id,)
    assert change.rejected is None


def test_a_standby_sends_no_sentences_and_its_copy_says_so() -> None:
    sender, copy = QueueSender(), QueueCopy()
    jobs = tuple(job(i) for i in range(10))
    asked: list[int] = []

    def work_out() -> dict[str, str]:
        asked.append(1)
        return {j.job_id: "waits" for j in jobs}

    snapshot = Snapshot(now=1.0, nodes=(), running=(), pending=jobs)
    standby = NOTHING_PUBLISHED.next(
        snapshot,
        None,  # type: ignore[arg-type]
        Decisions(explanations=Explanations(work_out)),
        sentences_on_request=True,
    )
    copy = sent(copy, sender, standby)
    assert asked == [], "a standby's sentences were worked out for the front"
    assert copy.sentences is None and len(copy.index.jobs) == 10
    # Leading now: its sentences come whole.
    leader = publish(standby, jobs, {j.job_id: "leads" for j in jobs})
    copy = sent(copy, sender, leader)
    assert copy.sentences == {j.job_id: "leads" for j in jobs}
