"""Every waiting job gets one exact, human sentence."""

from __future__ import annotations

import copy
import pickle
import threading

from scheduler.engine import schedule
from scheduler.engine.decisions import Explanations
from scheduler.engine.explain import whole_minutes
from scheduler.engine.mentions import plain
from scheduler.engine.snapshot import Taint
from scheduler.sim.never import never_runs
from scheduler.traces.model import TraceJob
from tests.unit.engine_strategies import (
    A100,
    H100,
    decided_alike,
    job,
    node,
    policy,
    running,
    snapshot,
    without_consolidation,
)

POL = policy(["lab-a", "lab-b"])


def test_gang_too_big_for_what_is_idle() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b")]
    run = [running("a", "lab-a", "a1", gpus=8), running("b", "lab-b", "b1", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-b", pods=4, gpus=4)], run), POL)
    assert {job_id: plain(text) for job_id, text in d.explanations.items()} == {
        "g": f"member lab-b is below its fair share of 16 {H100} (holds 8); 8 idle {H100} "
        "exist but the gang needs 16 (4 pods); nothing can be reclaimed: no member above "
        f"its fair share holds borrowed {H100} GPUs it could use"
    }


def test_fragmented_idle_gpus() -> None:
    nodes = [node("a1", "lab-a"), node("a2", "lab-a")]
    run = [running("x", "lab-a", "a1", gpus=4), running("y", "lab-a", "a2", gpus=4)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=8)], run), POL)
    assert plain(d.explanations["j"]) == (
        f"member lab-a is below its fair share of 16 {H100} (holds 8); 8 idle {H100} exist "
        "but no node has 8 free (at most 4); nothing can be reclaimed: no member above its "
        f"fair share holds borrowed {H100} GPUs it could use; consolidation found no move: "
        "opening a1 and a2 would throw away at least 11.1 GPU-h of work, more than the 8 "
        "GPU-h a move may (maxConsolidationLossSeconds 3600 s for each of its 8 GPUs)"
    )


def test_cpu_is_what_is_missing() -> None:
    nodes = [node("a1", "lab-a", cpu=8)]
    run = [running("x", "lab-a", "a1", gpus=1, cpu_milli=6000)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=1, cpu_milli=4000)], run), POL)
    assert plain(d.explanations["j"]) == (
        f"member lab-a is below its fair share of 2 {H100} (holds 1); 7 idle {H100} exist "
        "but no node with 1 free GPU also has room for 1 GPU, 4 CPU; nothing can be "
        f"reclaimed: no member above its fair share holds borrowed {H100} GPUs it could "
        "use; consolidation found no move: opening a1 would throw away at least 2.8 GPU-h "
        "of work, more than the 1 GPU-h a move may (maxConsolidationLossSeconds 3600 s for "
        "its 1 GPU)"
    )


def test_no_node_can_ever_run_it() -> None:
    nodes = [
        node("a1", "lab-a", model=A100),
        node("a2", "lab-a", taints=(Taint("maintenance", "", "NoSchedule"),)),
        node("a3", "lab-a", gpus=4),
    ]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=8, gpu_model=H100)]), POL)
    assert plain(d.explanations["j"]) == (
        # A job that can never run is not in its member's demand: its fair share is 0.
        f"member lab-a is at its fair share of 0 {H100} (holds 0); no node can ever "
        "run its pods: of 3 nodes, 1 another GPU model, 1 fewer than 8 GPUs, "
        "1 untolerated taints"
    )


def test_a_gang_kept_off_idle_nodes_by_their_owners_lending_limit_says_so() -> None:
    # lab-b's two nodes are idle, but it lends at most 8 GPUs: the sentence once said
    # the idle GPUs were scattered over nodes too small for the gang.
    pol = policy({"lab-a": {}, "lab-b": {"lending_limit": 8}})
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b")]
    run = [running("a", "lab-a", "a1", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=8)], run), pol)
    assert d.binds == ()
    assert plain(d.explanations["g"]).startswith(
        f"member lab-a is below its fair share of 16 {H100} (holds 8); 16 idle {H100} exist "
        "but the gang may use only 8 of them and needs 16, as lab-b may lend only 8 more "
        "GPUs under its lendingLimit; "
    )
    # lab-b's limit does not apply to lab-b's own gang: the idle GPUs are scattered.
    run = [running("b", "lab-b", "b1", gpus=4), running("c", "lab-b", "b2", gpus=4)]
    quiet = without_consolidation(pol)
    d = schedule(snapshot(nodes, [job("h", "lab-b", pods=2, gpus=8)], run), quiet)
    assert (
        f"16 idle {H100} exist but they are scattered over nodes too small for the gang's 2 "
        "pods of 8 GPUs"
    ) in plain(d.explanations["h"])


def test_past_three_owners_at_their_lending_limit_the_rest_are_counted() -> None:
    owners = ["lab-b", "lab-c", "lab-d", "lab-e"]
    pol = policy({"lab-a": {}, **{o: {"lending_limit": 4} for o in owners}})
    # lab-a's own two nodes could hold the gang once free: it waits, and may run one day.
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), *(node(f"{o}-1", o) for o in owners)]
    run = [running("a", "lab-a", "a1", gpus=8), running("b", "lab-a", "a2", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=2, gpus=8)], run), pol)
    assert d.binds == ()
    assert (
        f"32 idle {H100} exist but the gang may use only 0 of them and needs 16, as lab-b "
        "may lend only 4 more GPUs, lab-c may lend only 4 more GPUs, lab-d may lend only 4 "
        "more GPUs and 1 more owner under their lendingLimit"
    ) in plain(d.explanations["g"])


def test_a_pod_kept_off_an_owner_that_lends_no_more_says_so() -> None:
    pol = policy({"lab-a": {}, "lab-b": {"lending_limit": 8}})
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b")]
    # lab-a borrows 8 of lab-b's GPUs already: lab-b's other idle node is closed to it.
    run = [running("a", "lab-a", "a1", gpus=8), running("x", "lab-a", "b1", gpus=8)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=2)], run), pol)
    assert d.binds == ()
    assert (
        f"8 idle {H100} exist but it may use only 0 of them and needs 2, as lab-b may lend "
        "only 0 more GPUs under its lendingLimit"
    ) in plain(d.explanations["j"])
    # Only the nodes it may use are looked at for the biggest room.
    nodes.append(node("a2", "lab-a"))
    run = [
        running("a", "lab-a", "a1", gpus=7),
        running("x", "lab-a", "b1", gpus=8),
        running("y", "lab-a", "a2", gpus=7),
    ]
    d = schedule(snapshot(nodes, [job("k", "lab-a", gpus=2, pods=1)], run), pol)
    assert (
        f"10 idle {H100} exist but no node it may use has 2 free (at most 1), as lab-b may "
        "lend only 0 more GPUs under its lendingLimit"
    ) in plain(d.explanations["k"])


def test_waits_are_said_in_whole_minutes() -> None:
    assert [whole_minutes(s) for s in (0.5, 59, 61, 3600, 3601, 42_496)] == [
        "1 min",
        "1 min",
        "2 min",
        "1 h",
        "1 h 1 min",
        "11 h 49 min",
    ]


def test_every_waiting_job_is_explained_and_no_bound_job_is() -> None:
    nodes = [node("a1", "lab-a", gpus=2)]
    pending = [job(f"j{k}", "lab-a", submitted_at=k) for k in range(4)]
    d = schedule(snapshot(nodes, pending), POL)
    assert {b.job_id for b in d.binds} == {"j0", "j1"}
    assert set(d.explanations) == {"j2", "j3"}
    assert plain(d.explanations["j2"]) == (
        f"member lab-a is at its fair share of 2 {H100} (holds 2); all {H100} on nodes it "
        "may use are taken"
    )


def test_sentences_are_written_on_first_read_and_travel_as_a_plain_mapping() -> None:
    nodes = [node("a1", "lab-a")]
    run = [running("x", "lab-a", "a1", gpus=4)]
    d = schedule(snapshot(nodes, [job("j", "lab-a", gpus=8), job("k", "lab-a", gpus=6)], run), POL)
    first = dict(d.explanations)
    assert sorted(first) == ["j", "k"] and first["j"] == d.explanations["j"]
    # Read again, copied or pickled: the same sentences, as a plain dict.
    assert d.explanations == first and first == d.explanations
    assert copy.deepcopy(d.explanations) == first
    again = pickle.loads(pickle.dumps(d))
    assert type(again.explanations) is dict and again.explanations == first


def test_sentences_are_written_once_when_two_threads_read_them_first() -> None:
    """The daemon's loop and an API thread may both be first to read a cycle's
    explanations: the second waits for the first's sentences instead of writing them
    again from the same cycle state (or finding it already let go)."""
    entered, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def make() -> dict[str, str]:
        calls.append(1)
        entered.set()
        release.wait(5)
        return {"j": "waits"}

    explanations = Explanations(make)
    seen: list[dict[str, str]] = []
    first = threading.Thread(target=lambda: seen.append(dict(explanations)))
    first.start()
    assert entered.wait(5)
    second = threading.Thread(target=lambda: seen.append(dict(explanations)))
    second.start()
    second.join(0.2)  # the second reader is waiting, not writing
    release.set()
    first.join(5)
    second.join(5)
    assert calls == [1] and seen == [{"j": "waits"}, {"j": "waits"}]


def test_a_gang_its_member_may_never_hold_says_it_can_never_run() -> None:
    """lab-b lends at most 8 GPUs: lab-a's own 8 and one 8-GPU pod on lab-b's nodes make
    16, and its gang asks for 32. However idle the pool, and with borrowed work of
    lab-c's that reclaim could take, the gang never starts, and nothing is preempted or
    held for it; lab-b's own gang of the same shape is not limited on lab-b's nodes."""
    pol = policy({"lab-a": {}, "lab-b": {"lending_limit": 8}, "lab-c": {}})
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b"), node("c1", "lab-c")]
    borrowed = [running("x", "lab-c", "b1", gpus=8)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=4, gpus=8)], borrowed), pol)
    assert d.binds == () and d.preemptions == () and d.nominations == ()
    assert plain(d.explanations["g"]).endswith(
        "; it can never run as the cluster and policy stand: it needs 32 GPUs of one model "
        f"at once, and lab-a can hold at most 24 {H100} in pods of 8: 8 on its own nodes, 8 "
        "that lab-b may lend (lendingLimit 8) and 8 on lab-c's nodes"
    )
    d = schedule(snapshot(nodes, [job("h", "lab-b", pods=4, gpus=8)], borrowed), pol)
    assert "never" not in plain(d.explanations.get("h", ""))


def test_a_gang_bigger_than_the_nodes_of_any_model_says_it_can_never_run() -> None:
    nodes = [node("a1", "lab-a"), node("b1", "lab-b"), node("b2", "lab-b", model=A100)]
    d = schedule(snapshot(nodes, [job("g", "lab-a", pods=3, gpus=8)], []), POL)
    assert d.binds == ()
    assert plain(d.explanations["g"]).endswith(
        "; it can never run as the cluster and policy stand: it needs 24 GPUs of one model "
        f"at once, and lab-a can hold at most 16 {H100} in pods of 8: 8 on its own nodes and "
        "8 on lab-b's nodes"
    )


def test_a_job_over_its_members_limits_says_so_in_the_policys_words() -> None:
    """The sentence names the policy's field (`maxGpus`, as `lendingLimit` and
    `maxReclaimsPerJob` are named), and a job bigger than the limit itself says it can
    never run, in the words `fairpool simulate` names it with (it read "it needs 16 more
    GPUs but its limit is 12 (max_gpus) and it holds 0", as if it waited its turn)."""
    nodes = [node("a1", "lab-a"), node("a2", "lab-a"), node("b1", "lab-b")]
    run = [running("x", "lab-a", "a1", gpus=8)]
    capped = policy({"lab-a": {"max_gpus": 12}, "lab-b": {}})
    closed = policy(["lab-a", "lab-b"], borrowing=False)
    pending = [job("big", "lab-a", pods=2, gpus=8), job("more", "lab-a", gpus=6, submitted_at=1)]
    d = decided_alike(snapshot(nodes, pending, run), capped)
    assert plain(d.explanations["more"]).endswith(
        "; it needs 6 more GPUs but its limit is 12 (maxGpus) and it holds 8"
    )
    wide = job("wide", "lab-a", gpus=8, pods=3, gpu_model=H100)
    closed_d = decided_alike(snapshot(nodes, [wide], run), closed)
    simulated = {
        **never_runs([TraceJob("big", "lab-a", 0.0, 60.0, 2, 8)], nodes, capped),
        **never_runs([TraceJob("wide", "lab-a", 0.0, 60.0, 3, 8, H100)], nodes, closed),
    }
    assert simulated == {
        "big": "it needs 16 GPUs at once, more than lab-a's maxGpus 12",
        "wide": f"it needs 24 {H100} GPUs at once, more than lab-a's entitlement of 16 {H100} "
        "GPUs, and borrowing is off",
    }
    never = "; it can never run as the cluster and policy stand: "
    assert plain(d.explanations["big"]).endswith(never + simulated["big"])
    assert plain(closed_d.explanations["wide"]).endswith(never + simulated["wide"])


def test_a_pod_that_asks_for_no_gpu_is_told_what_it_waits_for() -> None:
    """A pod without GPUs waits for CPU, memory or a pod slot: its sentence says so (it
    read "14 idle … exist but no node with 0 free GPUs also has room for 0 GPUs, 4 CPU")."""
    nodes = [node("a1", "lab-a", cpu=8), node("b1", "lab-b", cpu=8)]
    run = [
        running("x", "lab-a", "a1", gpus=1, cpu_milli=6000, memory_bytes=300 * 2**30),
        running("y", "lab-b", "b1", gpus=1, cpu_milli=6000, memory_bytes=300 * 2**30),
    ]
    pending = [
        job("c", "lab-a", gpus=0, cpu_milli=4000),
        job("g", "lab-a", gpus=0, pods=2, memory_bytes=300 * 2**30, submitted_at=1),
    ]
    d = decided_alike(snapshot(nodes, pending, run), POL)
    assert d.binds == ()
    assert plain(d.explanations["c"]).endswith("; no node it may use has room for 4 CPU")
    assert plain(d.explanations["g"]).endswith(
        "; no node it may use has room for the gang's 2 pods of 300 GiB"
    )


def test_a_single_pod_is_named_by_namespace_and_name_not_its_uid() -> None:
    """In the daemon a pod alone is a job whose id is the pod's uid (`job_id_of`): the
    sentences and the reclaim reasons said "job 3f2a…", which no user can map to
    anything. They name it namespace/name; the ids the decisions carry stay the uids."""
    from policies.inventory import load_inventory
    from policies.loader import DEFAULT_POLICY, load_policy
    from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
    from scheduler.sim.cluster import build_nodes

    model = "NVIDIA-H100-80GB-HBM3"
    pol = load_policy(DEFAULT_POLICY)
    nodes = build_nodes(load_inventory())
    h100 = [n for n in nodes if n.gpu_model == model]
    uid = "3f2a9c4e-0b1d-4e5f-9a8b-{:012d}"
    runs = tuple(
        RunningPod(
            uid=uid.format(i),
            name=f"train-{i}",
            namespace="ai-startup-lab",
            member="ai-startup",
            job_id=uid.format(i),  # as the daemon makes it
            node=n.name,
            spec=PodSpec(gpus=8, gpu_model=model),
            started_at=0.0,
        )
        for i, n in enumerate(h100)
    )
    wanted_uid = "9c1e7d2a-5b3c-4d6e-8f90-000000000abc"
    wanted = PendingJob(
        wanted_uid,
        "uni-north",
        (PendingPod(wanted_uid, "eval", "uni-north", PodSpec(gpus=8, gpu_model=model)),),
    )
    decisions = schedule(Snapshot(100_000.0, nodes, runs, (wanted,)), pol)
    sentence = plain(decisions.explanations[wanted_uid])
    (preemption,) = decisions.preemptions
    victim = next(r for r in runs if r.uid == preemption.pod_uid)
    assert f"({victim.namespace}/{victim.name} of ai-startup)" in sentence, sentence
    assert "3f2a" not in sentence
    reason = plain(preemption.reason)
    assert "job uni-north/eval of uni-north needs" in reason, reason
    assert f"job {victim.namespace}/{victim.name} runs" in reason
    assert "3f2a" not in preemption.reason and "9c1e" not in preemption.reason
    assert (preemption.job_id, preemption.for_job) == (victim.uid, wanted_uid)
