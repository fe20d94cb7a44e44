"""A member reads the engine's sentences with the other members and their jobs hidden,
and nothing else changed, whatever the members are called: members are DNS labels, and a
consortium may call one "a", "node", "gpus" or "its", words the sentences use (every
whole word equal to another member's name was replaced: "no another member has 4
free")."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.model import Policy
from scheduler.engine import schedule
from scheduler.engine.consolidation import Refusal
from scheduler.engine.explain import at_limit_detail, no_move_detail, over_max_gpus, position
from scheduler.engine.mentions import plain
from scheduler.engine.reach import never_detail
from scheduler.engine.snapshot import Snapshot
from scheduler.k8s.redaction import redact_explanation
from tests.examples import examples
from tests.unit import engine_strategies as es
from tests.unit.engine_strategies import H100, job, node, policy, running, snapshot

WORDS = (
    # Words of the engine's sentences (scheduler/engine/explain.py, cycle.py, reach.py,
    # reclaim.py), and names the sentences give nodes, jobs and namespaces here.
    *["a", "it", "its", "is", "at", "of", "on", "to", "for", "and", "no", "not", "more"],
    *["member", "members", "another", "other", "owner", "node", "nodes", "gpu", "gpus"],
    *["pod", "pods", "job", "jobs", "gang", "idle", "free", "held", "taken", "borrowed"],
    *["fair", "share", "entitlement", "reclaim", "reclaimed", "consolidation", "move"],
    *["lend", "lending", "below", "above", "holds", "exist", "never", "run", "runs"],
    *["s", "h", "min", "1", "2", "4", "8", "16", "30", "nvidia", "h100"],
    *["n00", "n01", "j00", "r00", "rg0", "ns", "research", "lab"],
)


def _daemon_reads(pol: Policy, snap: Snapshot, job_id: str, sentence: str) -> str:
    """The FailedScheduling event the daemon posts on the job's first pod."""
    from scheduler.k8s.cache import CacheView
    from scheduler.k8s.daemon import Daemon
    from scheduler.k8s.objects import pod_info
    from tests.unit.test_k8s_effects import _unreachable

    pending = next(j for j in snap.pending if j.job_id == job_id)
    first = pending.pods[0]
    pod = pod_info(
        {
            "metadata": {"name": first.name, "namespace": first.namespace, "uid": first.uid},
            "spec": {"schedulerName": "fairpool", "containers": []},
        }
    )
    posted: list[str] = []
    daemon = Daemon(_unreachable(), pol)
    daemon.recorder.record = (  # type: ignore[method-assign]
        lambda ref, event_type, reason, message: posted.append(message)
    )
    try:
        daemon._explain(snap, {job_id: sentence}, CacheView(snap, (), {first.uid: pod}))
    finally:
        daemon.recorder.close()
    (message,) = posted
    return message


def test_members_called_by_words_of_the_sentence_leave_it_whole() -> None:
    """gpus's job waits for a node with 4 free GPUs; the other members are called "node",
    "a", "its", "s" and "4": its event read "another member gpus is below another member
    fair share ... no another member has another member free"."""
    pol = policy(["gpus", "node", "a", "its", "s", "4"])
    nodes = [node("n1", "gpus", gpus=4), node("n2", "gpus", gpus=4)]
    run = [running("x", "gpus", "n1", gpus=2), running("y", "gpus", "n2", gpus=2)]
    snap = snapshot(nodes, [job("j", "gpus", gpus=4)], run)
    sentence = schedule(snap, pol).explanations["j"]
    whole = (
        f"member gpus is below its fair share of 8 {H100} (holds 4); 4 idle {H100} exist but "
        "no node has 4 free (at most 2); nothing can be reclaimed: no member above its fair "
        f"share holds borrowed {H100} GPUs it could use; consolidation found no move: opening "
        "n1 and n2 would throw away at least 5.6 GPU-h of work, more than the 4 GPU-h a move "
        "may (maxConsolidationLossSeconds 3600 s for each of its 4 GPUs)"
    )
    assert plain(sentence) == whole
    assert _daemon_reads(pol, snap, "j", sentence) == whole


def test_a_reclaim_hides_its_victims_whatever_their_member_is_called() -> None:
    """lab takes its node back from research, whose job is research/train: lab reads "a
    job of another member", research (were it to read lab's sentence) reads its own job,
    and lab alone is hidden."""
    pol = policy(["lab", "research"])
    nodes = [node("n1", "lab"), node("n2", "research")]
    run = [
        running("x", "research", "n1", gpus=8, job_id="research/train"),
        running("y", "research", "n2", gpus=8),
    ]
    snap = snapshot(nodes, [job("j", "lab", gpus=8)], run)
    sentence = schedule(snap, pol).explanations["j"]
    said = (
        "is below its fair share of 8 {H100} (holds 0); preempting 1 borrowed pod ({victim}) "
        "with a grace period of 30 s; their GPUs are held for this job"
    )
    assert plain(sentence) == "member lab " + said.format(
        H100=H100, victim="research/train of research"
    )
    assert _daemon_reads(pol, snap, "j", sentence) == "member lab " + said.format(
        H100=H100, victim="a job of another member"
    )
    assert redact_explanation(sentence, "research") == "another member " + said.format(
        H100=H100, victim="research/train of research"
    )


def test_every_context_naming_a_member_hides_it_and_only_it() -> None:
    """Each way the sentences name a member (docs/api.md), with members called by the
    sentences' own words: member "a" reads its own name, "another member" for the others
    and "a job of another member" for their jobs, and every other word as the engine
    wrote it; an operator reads the names."""
    cases = [
        # Its position, and its own limits.
        (
            position("a", H100, 8, 16.0),
            f"member a is below its fair share of 16 {H100} (holds 8)",
            f"member a is below its fair share of 16 {H100} (holds 8)",
        ),
        (
            over_max_gpus("a", 24, 16),
            "it needs 24 GPUs at once, more than a's maxGpus 16",
            "it needs 24 GPUs at once, more than a's maxGpus 16",
        ),
        # What others' nodes may give it: "<owner> may lend", "on <owner>'s nodes".
        (
            never_detail(
                "a", 4, 8, H100, {(H100, "a"): 1, (H100, "node"): 1, (H100, "its"): 1}, {"its": 8}
            ),
            f"it needs 32 {H100} GPUs at once, and a can hold at most 24 in pods of 8: 8 on "
            "its own nodes, 8 that its may lend (lendingLimit 8) and 8 on node's nodes",
            f"it needs 32 {H100} GPUs at once, and a can hold at most 24 in pods of 8: 8 on "
            "its own nodes, 8 that another member may lend (lendingLimit 8) and 8 on another "
            "member's nodes",
        ),
        # Jobs of others at the reclaim limit: "<job> of <member>".
        (
            at_limit_detail({"ns/job": ("node", 8), "j00": ("its", 4)}, H100, 3),
            f"; not counted: 12 {H100} GPUs it could use, borrowed by jobs reclaimed 3 times "
            "already (maxReclaimsPerJob), never reclaimed again: j00 of its, ns/job of node",
            f"; not counted: 12 {H100} GPUs it could use, borrowed by jobs reclaimed 3 times "
            "already (maxReclaimsPerJob), never reclaimed again: a job of another member, a "
            "job of another member",
        ),
        # Nodes held by one owner's own work, and counts of several owners' nodes.
        (
            no_move_detail(
                Refusal(guaranteed=("n1", "n2", "n3", "n4"), guaranteed_owners=(("node", 4),)),
                8,
                600,
                3600,
            ),
            "consolidation found no move: 4 nodes of node hold its own work within its "
            "entitlement, which moves only for node",
            "consolidation found no move: 4 nodes of another member hold its own work within "
            "its entitlement, which moves only for another member",
        ),
        (
            no_move_detail(
                Refusal(
                    guaranteed=tuple(f"n{k}" for k in range(39)),
                    guaranteed_owners=(("node", 30), ("its", 5), ("4", 3), ("of", 1)),
                ),
                8,
                600,
                3600,
            ),
            "consolidation found no move: 39 nodes (30 of node, 5 of its, 3 of 4 and 1 of 1 "
            "other member) hold their owners' own work within their entitlement, which moves "
            "only for them",
            "consolidation found no move: 39 nodes (30 of another member, 5 of another member, "
            "3 of another member and 1 of 1 other member) hold their owners' own work within "
            "their entitlement, which moves only for them",
        ),
    ]
    for text, operator, member in cases:
        assert plain(text) == operator
        assert redact_explanation(text, None) == operator
        assert redact_explanation(text, "a") == member
    assert redact_explanation(cases[0][0], "node") == (
        f"another member is below its fair share of 16 {H100} (holds 8)"
    )


def test_text_without_marks_is_read_as_it_is() -> None:
    """A pod the cycle could not hand to the engine waits with the daemon's own reason,
    which names no member: a member called by one of its words left it garbled."""
    reason = "gang g: its pods require different GPU models in nodeSelector, and a gang runs"
    assert redact_explanation(reason, "gpus") == reason
    assert redact_explanation(reason, None) == reason


_SENTINELS = es.MEMBERS  # "m-a", "m-b", "m-c": no sentence uses them as words


def _renamed(pol: Policy, snap: Snapshot, names: dict[str, str]) -> tuple[Policy, Snapshot]:
    """The same cluster, policy and queue with the members called by `names`."""
    data = pol.model_dump()
    for member in data["spec"]["members"]:
        member["name"] = names[member["name"]]
    nodes = tuple(n if n.owner is None else replace(n, owner=names[n.owner]) for n in snap.nodes)
    run = tuple(p if p.member is None else replace(p, member=names[p.member]) for p in snap.running)
    pending = tuple(replace(j, member=names[j.member]) for j in snap.pending)
    usage = {names[m]: v for m, v in snap.usage_history.items()}
    renamed = replace(snap, nodes=nodes, running=run, pending=pending, usage_history=usage)
    return Policy.model_validate(data), renamed


@st.composite
def _named_cases(draw: st.DrawFn) -> tuple[Policy, Snapshot, dict[str, str]]:
    pol = draw(es.policies())
    snap = draw(es.snapshots(pol))
    # In the sentinels' order: the engine breaks ties by name.
    words = sorted(draw(st.lists(st.sampled_from(WORDS), min_size=3, max_size=3, unique=True)))
    return pol, snap, dict(zip(_SENTINELS, words, strict=True))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_named_cases())
def test_what_members_are_called_changes_only_their_mentions(
    case: tuple[Policy, Snapshot, dict[str, str]],
) -> None:
    """Members called by the sentences' own words (and by the names of nodes, jobs and
    namespaces) read exactly what members whose names no sentence uses read, with their
    own name in it: no word but a member's mention changes. And a member never reads
    another member's name."""
    pol, snap, names = case
    told = schedule(snap, pol).explanations
    words_pol, words_snap = _renamed(pol, snap, names)
    said = schedule(words_snap, words_pol).explanations
    assert set(said) == set(told)
    members = pol.member_names()
    for job_id, sentence in told.items():
        operator = plain(sentence)
        for sentinel, word in names.items():
            operator = operator.replace(sentinel, word)
        assert redact_explanation(said[job_id], None) == operator
        for reader in members:
            hidden = redact_explanation(sentence, reader)
            assert not [m for m in members if m != reader and m in hidden], hidden
            assert redact_explanation(said[job_id], names[reader]) == hidden.replace(
                reader, names[reader]
            )
