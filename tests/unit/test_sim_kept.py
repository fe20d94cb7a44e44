"""The simulator moves `waiting.Kept` pod by pod (`KeptBook`); it must say what working it
out from every running pod says, whatever the order pods come, go and turn terminating."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.engine.snapshot import PodSpec, RunningPod
from scheduler.sim.waiting import Kept, KeptBook
from tests.examples import examples

OWNER = {"a-0": "lab-a", "a-1": "lab-a", "b-0": "lab-b", "u-0": ""}
MODEL = {"a-0": "H100", "a-1": "A100", "b-0": "H100", "u-0": "H100"}
ENTITLEMENT = {("lab-a", "H100"): 4, ("lab-a", "A100"): 2, ("lab-b", "H100"): 3}


def _afresh(pods: list[RunningPod]) -> Kept:
    """Every running pod looked at, as the simulator once did at each change."""
    everyone: dict[str, int] = {}
    own: dict[str, dict[str, int]] = {}
    home: dict[tuple[str, str], list[tuple[float, str, str, int]]] = {}
    for pod in pods:
        if pod.spec.gpus <= 0 or pod.terminating:
            continue
        if pod.member is None:
            everyone[pod.node] = everyone.get(pod.node, 0) + pod.spec.gpus
        elif OWNER[pod.node] == pod.member:
            key = (pod.member, MODEL[pod.node])
            home.setdefault(key, []).append((pod.started_at, pod.uid, pod.node, pod.spec.gpus))
        else:
            mine = own.setdefault(pod.member, {})
            mine[pod.node] = mine.get(pod.node, 0) + pod.spec.gpus
    for (member, model), entries in home.items():
        room = ENTITLEMENT.get((member, model), 0)
        for _, _, node, gpus in sorted(entries):
            if gpus <= room:
                room -= gpus
                everyone[node] = everyone.get(node, 0) + gpus
            else:
                room = -1
                mine = own.setdefault(member, {})
                mine[node] = mine.get(node, 0) + gpus
    return Kept(everyone, own)


def _plain(kept: Kept) -> tuple[object, ...]:
    """The tables without their zero entries (a count moved back to 0 stays)."""
    own = {m: {n: g for n, g in d.items() if g} for m, d in kept.own.items()}
    return (
        {n: g for n, g in kept.everyone.items() if g},
        {m: d for m, d in own.items() if d},
    )


@settings(max_examples=examples(300), deadline=None)
@given(st.data())
def test_moving_kept_pod_by_pod_gives_what_every_pod_gives(data: st.DataObject) -> None:
    book = KeptBook(OWNER, MODEL, ENTITLEMENT)
    running: dict[str, RunningPod] = {}
    for k in range(data.draw(st.integers(1, 40))):
        action = data.draw(st.sampled_from(["bind", "bind", "terminate", "free"]))
        live = sorted(running)
        if action == "bind" or not live:
            node = data.draw(st.sampled_from(sorted(OWNER)))
            pod = RunningPod(
                uid=f"p{k:02d}",
                name=f"p{k:02d}",
                namespace="ns",
                member=data.draw(st.sampled_from(["lab-a", "lab-b", "lab-c", None])),
                job_id=f"p{k:02d}",
                node=node,
                spec=PodSpec(gpus=data.draw(st.integers(0, 3))),
                # Equal start times: the uid orders them, as the allocation does.
                started_at=float(data.draw(st.integers(0, 3))),
            )
            running[pod.uid] = pod
            book.change(pod, 1)
        else:
            uid = data.draw(st.sampled_from(live))
            pod = running[uid]
            if action == "terminate":
                if pod.terminating:
                    continue
                book.change(pod, -1)
                running[uid] = dataclasses.replace(pod, terminating=True)
            else:
                del running[uid]
                if not pod.terminating:
                    book.change(pod, -1)
        assert _plain(book.kept()) == _plain(_afresh(list(running.values())))


@settings(max_examples=examples(200), deadline=None)
@given(st.data())
def test_all_pods_at_once_gives_what_every_pod_gives(data: st.DataObject) -> None:
    # `extend` (the daemon's reading of a whole cluster, `after_cycle`) fills each
    # member's own-node group once, after every pod is in.
    pods = [
        RunningPod(
            uid=f"p{k:02d}",
            name=f"p{k:02d}",
            namespace="ns",
            member=data.draw(st.sampled_from(["lab-a", "lab-b", "lab-c", None])),
            job_id=f"p{k:02d}",
            node=data.draw(st.sampled_from(sorted(OWNER))),
            spec=PodSpec(gpus=data.draw(st.integers(0, 3))),
            started_at=float(data.draw(st.integers(0, 3))),
        )
        for k in range(data.draw(st.integers(0, 40)))
    ]
    book = KeptBook(OWNER, MODEL, ENTITLEMENT)
    book.extend(pods)
    assert _plain(book.kept()) == _plain(_afresh(pods))
