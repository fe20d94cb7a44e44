"""ExplainPending gives a member the engine's sentence without other members' names or
jobs (a reclaim names its victims)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest

from policies.inventory import load_inventory
from policies.loader import DEFAULT_POLICY, load_policy
from proto.fairpool.v1 import share_pb2, share_pb2_grpc
from scheduler.api import messages
from scheduler.api.frozen_view import FrozenClusterView
from scheduler.api.server import ApiServer
from scheduler.engine.mentions import job_of, mention, plain
from scheduler.engine.snapshot import PendingJob, PendingPod, PodSpec, RunningPod, Snapshot
from scheduler.k8s.redaction import redact_explanation
from scheduler.sim.cluster import build_nodes
from tests.unit.test_api_front import code_of
from tests.unit.test_api_support import make_config, metadata

H100 = "NVIDIA-H100-80GB-HBM3"
MEMBERS = ["uni-north", "lab-bio", "ai-startup", "physics"]


def test_redaction_keeps_the_sentence_and_hides_others() -> None:
    text = (
        f"member {mention('uni-north')} is below its fair share of 16 H100 (holds 8); "
        f"preempting 2 borrowed pods ({job_of('train-7', 'ai-startup')}, "
        f"{job_of('ns/gang-2', 'lab-bio')}) with a grace period of 30 s; their GPUs are held "
        "for this job"
    )
    out = redact_explanation(text, "uni-north")
    assert out.startswith("member uni-north is below its fair share")
    assert "(a job of another member, a job of another member)" in out
    for hidden in ("ai-startup", "lab-bio", "train-7", "gang-2"):
        assert hidden not in out
    assert redact_explanation("held by lab-bio-x", "uni-north") == ("held by lab-bio-x"), (
        "a longer name that merely starts with a member's name is not a member"
    )


def test_redaction_names_another_member_once() -> None:
    """ "of member lab-bio" read "of member another member"."""
    text = (
        f"job train-7 runs on borrowed GPUs of member {mention('lab-bio')}; member "
        f"{mention('ai-startup')} is above"
    )
    assert redact_explanation(text, "uni-north") == (
        "job train-7 runs on borrowed GPUs of another member; another member is above"
    )


def test_redaction_hides_a_job_whose_namespace_is_called_as_its_member() -> None:
    """A namespace named after its member (physics/train of physics, the daemon's name
    for a gang or a pod alone): the member's name was replaced first, and the sentence
    read "another a job of another member"."""
    text = (
        f"preempting 2 borrowed pods ({job_of('physics/gang-2', 'physics')}, "
        f"{job_of('ns/train', 'physics')}) now"
    )
    assert redact_explanation(text, "lab-a") == (
        "preempting 2 borrowed pods (a job of another member, a job of another member) now"
    )


def test_redaction_keeps_counts_of_other_members_nodes() -> None:
    """A refused consolidation counts the nodes each owner's own work holds ("30 of
    vc-01"): redacted, the count stays and only the owner is hidden (the counts read "a
    job of another member")."""
    text = (
        f"consolidation found no move: 39 nodes (30 of {mention('vc-01')}, 5 of "
        f"{mention('vc-03')}, 3 of {mention('vc-07')} and 1 of 1 other member) hold their "
        "owners' own work within their entitlement"
    )
    out = redact_explanation(text, "vc-02")
    assert out == (
        "consolidation found no move: 39 nodes (30 of another member, 5 of another member, "
        "3 of another member and 1 of 1 other member) hold their owners' own work within "
        "their entitlement"
    )


def reclaim_view() -> FrozenClusterView:
    """ai-startup runs on every H100 node (half of them uni-north's) since long ago;
    uni-north now wants one node back: the engine reclaims and names its victim."""
    policy = load_policy(DEFAULT_POLICY)
    nodes = build_nodes(load_inventory())
    h100 = [n for n in nodes if n.gpu_model == H100]
    running = tuple(
        RunningPod(
            uid=f"run-{n.name}",
            name=f"train-{i}",
            namespace="ai-startup-lab",
            member="ai-startup",
            job_id=f"train-{i}",
            node=n.name,
            spec=PodSpec(gpus=8, gpu_model=H100),
            started_at=0.0,
        )
        for i, n in enumerate(h100)
    )
    wanted = PendingJob(
        "uni-north-eval",
        "uni-north",
        (PendingPod("p-eval", "eval", "uni-north", PodSpec(gpus=8, gpu_model=H100)),),
    )
    return FrozenClusterView(policy, Snapshot(100_000.0, nodes, running, (wanted,)))


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_a_member_never_reads_who_its_job_preempts(tmp_path: Path, read_front: bool) -> None:
    view = reclaim_view()
    assert "of ai-startup" in plain(view.last_decisions().explanations["uni-north-eval"])
    server = ApiServer(view, make_config(tmp_path, read_front=read_front)).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = share_pb2_grpc.ShareServiceStub(channel)
            request = share_pb2.ExplainPendingRequest(name="eval")
            as_member = stub.ExplainPending(request, metadata=metadata("member:uni-north"))
            as_admin = stub.ExplainPending(request, metadata=metadata("admin"))
    finally:
        server.stop(grace=0.5)
    assert "ai-startup" in as_admin.explanation and "train-" in as_admin.explanation
    assert "ai-startup" not in as_member.explanation and "train-" not in as_member.explanation
    assert "a job of another member" in as_member.explanation


def test_share_book_answers_from_the_last_cycle_while_rebuilding() -> None:
    from dataclasses import replace

    from scheduler.api.share_service import PublishedShares
    from scheduler.engine import compute_shares

    view = reclaim_view()
    book = PublishedShares(view, compute_shares)
    first = book.current()
    assert book.current() is first, "one build per snapshot and policy"
    view.publish(replace(view.snapshot(), now=view.snapshot().now + 1))
    with book._lock:  # another reader is rebuilding for the new cycle
        assert book.current() is first
    fresh = book.current()
    assert fresh is not first and fresh.snapshot is view.snapshot()
    assert fresh.published is view.published() and book.builds == 2
    policy = view.policy()
    weights = policy.spec.model_copy(
        update={"members": [m.model_copy(update={"weight": 5.0}) for m in policy.members]}
    )
    view.set_policy(policy.model_copy(update={"spec": weights}))
    book._lock.acquire()  # released by a timer: the reader below must wait for it
    threading.Timer(0.3, book._lock.release).start()
    assert book.current().policy is view.policy(), "a new policy is never served stale"


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_a_job_is_found_by_the_names_its_events_and_the_cli_give(
    tmp_path: Path, read_front: bool
) -> None:
    """A cut FailedScheduling event ends "… (the whole sentence: fairpool explain
    <namespace>/<pod>)", and `fairpool explain` takes a pod or gang NAME: each of these
    finds the job (they answered NOT_FOUND)."""
    policy = load_policy(DEFAULT_POLICY)
    nodes = build_nodes(load_inventory())
    spec = PodSpec(gpus=8, gpu_model=H100)
    gang = PendingJob(
        "physics-lab/job/train",
        "physics",
        tuple(PendingPod(f"u{i}", f"train-{i}-x", "physics-lab", spec) for i in range(2)),
        min_member=3,
    )
    pod = PendingJob("uid-1", "physics", (PendingPod("uid-1", "eval", "physics-lab", spec),))
    other = PendingJob("uid-2", "lab-bio", (PendingPod("uid-2", "eval", "lab-bio-ns", spec),))
    view = FrozenClusterView(policy, Snapshot(100_000.0, nodes, (), (gang, pod, other)))
    server = ApiServer(view, make_config(tmp_path, read_front=read_front)).start()
    found: dict[tuple[str, str], str] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = share_pb2_grpc.ShareServiceStub(channel)
            for name, namespace in (
                ("physics-lab/eval", ""),
                ("eval", "physics-lab"),
                ("physics-lab/train-0-x", ""),
                ("train", "physics-lab"),
                ("train", ""),
                ("job/train", "physics-lab"),
                ("physics-lab/train", ""),
                ("physics-lab/job/train", ""),
            ):
                request = share_pb2.ExplainPendingRequest(name=name, namespace=namespace)
                answer = stub.ExplainPending(request, metadata=metadata("admin"))
                found[name, namespace] = answer.job.job_id
            with pytest.raises(grpc.RpcError) as missing:
                stub.ExplainPending(
                    share_pb2.ExplainPendingRequest(name="lab-bio-ns/train"),
                    metadata=metadata("admin"),
                )
    finally:
        server.stop(grace=0.5)
    assert found == {
        ("physics-lab/eval", ""): "uid-1",
        ("eval", "physics-lab"): "uid-1",
        ("physics-lab/train-0-x", ""): "physics-lab/job/train",
        ("train", "physics-lab"): "physics-lab/job/train",
        ("train", ""): "physics-lab/job/train",
        ("job/train", "physics-lab"): "physics-lab/job/train",
        ("physics-lab/train", ""): "physics-lab/job/train",
        ("physics-lab/job/train", ""): "physics-lab/job/train",
    }
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_a_pod_the_engine_is_not_given_is_explained_to_whom_may_see_it(
    tmp_path: Path, read_front: bool
) -> None:
    """A pod the cycle cannot hand to the engine (unreadable, or in no member's
    namespace) is explained with its FailedScheduling event's reason, to an admin and
    its own member only (it answered NOT_FOUND to everyone)."""
    from dataclasses import replace

    from scheduler.k8s.published import Rejected

    view = reclaim_view()
    odd = Rejected("u-odd", "physics", "physics-lab", ("odd",), "annotation x: bad", 99_000.0)
    stray = Rejected("u-stray", "", "nobody", ("stray",), "namespace 'nobody' …", 99_000.0)
    server = ApiServer(view, make_config(tmp_path, read_front=read_front)).start()
    published = view.published()  # the server's start publishes a cycle of its own
    view._published = replace(published, version=published.version + 1, rejected=(odd, stray))
    answers: dict[tuple[str, str], str] = {}
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = share_pb2_grpc.ShareServiceStub(channel)
            # The front has the new publication once it answers for the pod in it.
            deadline = time.monotonic() + 10
            while (
                code_of(
                    lambda: stub.ExplainPending(
                        share_pb2.ExplainPendingRequest(name="odd"), metadata=metadata("admin")
                    )
                )
                != grpc.StatusCode.OK
            ):
                assert time.monotonic() < deadline, "the publication never reached the front"
                time.sleep(0.05)
            for token in ("admin", "member:physics", "member:uni-north"):
                for name in ("odd", "physics-lab/odd", "stray"):
                    request = share_pb2.ExplainPendingRequest(name=name)
                    try:
                        answer = stub.ExplainPending(request, metadata=metadata(token))
                    except grpc.RpcError as error:
                        answers[token, name] = error.code().name
                    else:
                        assert answer.job.pod_names == [name.rpartition("/")[2]]
                        answers[token, name] = answer.explanation
    finally:
        server.stop(grace=0.5)
    assert answers == {
        ("admin", "odd"): "annotation x: bad",
        ("admin", "physics-lab/odd"): "annotation x: bad",
        ("admin", "stray"): "namespace 'nobody' …",
        ("member:physics", "odd"): "annotation x: bad",
        ("member:physics", "physics-lab/odd"): "annotation x: bad",
        ("member:physics", "stray"): "NOT_FOUND",
        ("member:uni-north", "odd"): "NOT_FOUND",
        ("member:uni-north", "physics-lab/odd"): "NOT_FOUND",
        ("member:uni-north", "stray"): "NOT_FOUND",
    }


def test_the_pods_the_engine_is_not_given_are_published_with_their_member_and_gpus() -> None:
    """What ExplainPending answers for such a pod: its member (none for a namespace of no
    member), its pods, its GPUs when they can be read, and the reason its event gives."""
    from types import SimpleNamespace

    from scheduler.k8s.daemon import rejected
    from scheduler.k8s.objects import Unschedulable, pod_info
    from tests.unit.test_k8s_convert import POLICY, pod

    stray = pod_info(pod("stray", namespace="nobody", gpus=8))
    odd = pod_info(pod("odd", annotations={"fairpool.io/checkpointable": "perhaps"}))
    view = SimpleNamespace(
        unschedulable=(
            Unschedulable("uid-stray", (stray,), "namespace 'nobody' belongs to no member"),
            Unschedulable("uid-odd", (odd,), "annotation: bad"),
        )
    )
    found = {r.job_id: r for r in rejected(view, POLICY)}  # type: ignore[arg-type]
    assert (found["uid-stray"].member, found["uid-stray"].gpus) == ("", 8)
    assert found["uid-stray"].reason == "namespace 'nobody' belongs to no member"
    assert (found["uid-odd"].member, found["uid-odd"].pod_names) == ("uni-north", ("odd",))
    assert found["uid-odd"].namespace == "uni-north"


@pytest.mark.parametrize("read_front", [False, True], ids=["daemon", "front"])
def test_a_job_the_latest_cycle_bound_is_not_said_to_have_arrived_after_it(
    tmp_path: Path, read_front: bool
) -> None:
    """A cycle publishes the snapshot it decided on, whose pending jobs include those it
    bound: until the next cycle, ExplainPending says where it bound them (it said "no
    scheduling decision yet: the job arrived after the latest cycle")."""
    policy = load_policy(DEFAULT_POLICY)
    nodes = build_nodes(load_inventory())
    spec = PodSpec(gpus=1, gpu_model=H100)
    fits = PendingJob("uid-1", "physics", (PendingPod("uid-1", "fits", "physics-lab", spec),))
    view = FrozenClusterView(policy, Snapshot(100_000.0, nodes, (), (fits,)))
    (bind,) = view.last_decisions().binds
    server = ApiServer(view, make_config(tmp_path, read_front=read_front)).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = share_pb2_grpc.ShareServiceStub(channel)
            request = share_pb2.ExplainPendingRequest(name="fits")
            answer = stub.ExplainPending(request, metadata=metadata("admin"))
    finally:
        server.stop(grace=0.5)
    assert answer.explanation == (
        f"not waiting: the latest cycle bound it to {bind.node} (its binds may be on their way)"
    )


def test_a_members_failed_scheduling_events_never_name_who_its_job_preempts() -> None:
    """Events live in the pod's namespace, read by its member: the engine's sentence went
    out whole in FailedScheduling, naming the reclaim's victims and their member, which
    ExplainPending hides from that member."""
    from scheduler.k8s.cache import CacheView
    from scheduler.k8s.daemon import Daemon
    from scheduler.k8s.objects import pod_info
    from tests.unit.test_k8s_effects import _unreachable

    view = reclaim_view()
    snapshot, policy = view.snapshot(), view.policy()
    sentence = view.last_decisions().explanations["uni-north-eval"]
    assert "of ai-startup" in plain(sentence)
    pod = pod_info(
        {
            "metadata": {"name": "eval", "namespace": "uni-north", "uid": "p-eval"},
            "spec": {"schedulerName": "fairpool", "containers": []},
        }
    )
    posted: list[tuple[str, str]] = []
    daemon = Daemon(_unreachable(), policy)
    daemon.recorder.record = (  # type: ignore[method-assign]
        lambda ref, kind, reason, message: posted.append((reason, message))
    )
    try:
        daemon._explain(
            snapshot, {"uni-north-eval": sentence}, CacheView(snapshot, (), {"p-eval": pod})
        )
    finally:
        daemon.recorder.close()
    assert posted == [("FailedScheduling", redact_explanation(sentence, "uni-north"))]
    assert "ai-startup" not in posted[0][1] and "train-" not in posted[0][1]
    assert "a job of another member" in posted[0][1]


def test_the_waiting_pods_of_a_started_pod_group_are_a_gang_not_a_pod() -> None:
    """A PodGroup that started with its minMember has its other pods placed one by one
    (the daemon hands them to the engine as a job of min_member 1): still a gang's, not
    "pod of a, 2 pod(s)"."""
    spec = PodSpec(gpus=4)
    pods = tuple(PendingPod(f"u{i}", f"w{i}", "physics-lab", spec) for i in (4, 5))
    waiting = PendingJob("physics-lab/g", "physics", pods, min_member=1)
    assert messages.pending_job(waiting, 0.0).kind == share_pb2.JOB_KIND_GANG
    alone = PendingJob("u9", "physics", pods[:1], min_member=1)
    assert messages.pending_job(alone, 0.0).kind == share_pb2.JOB_KIND_POD
