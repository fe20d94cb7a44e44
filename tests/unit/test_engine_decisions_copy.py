"""What a cycle decides travels whole: the API front gets it pickled, the daemon keeps
copies. Compiled, a class with its own `__init__` is unpickled through that `__init__`,
so `scheduler.engine.pickling` rebuilds each through its constructor."""

from __future__ import annotations

import copy
import pickle

from scheduler.engine.decisions import Bind, Decisions, MemberShare, Nomination, Preemption


def decisions() -> Decisions:
    return Decisions(
        binds=(Bind("p-0", "n1", "j1", "physics", "bio", True),),
        preemptions=(
            Preemption(
                "v-0", "j2", "bio", "physics", "j3", "reclaim for physics", 30, "fair_share"
            ),
            Preemption("v-1", "j4", "bio", "chem", "j5", "moved", 0, "consolidation"),
        ),
        nominations=(Nomination("j3", {"p-3": "n2"}),),
        explanations={"j6": "it waits"},
        shares=(MemberShare("physics", "A100", 8, 8, 9.5, 10, 2, 2, 0, 3, 13),),
    )


def test_decisions_survive_pickle_and_deepcopy_field_by_field() -> None:
    d = decisions()
    for twin in (pickle.loads(pickle.dumps(d)), copy.deepcopy(d), copy.copy(d)):
        assert twin == d
        assert twin.preemptions[1].cause == "consolidation"
        assert twin.shares[0].fair_share == 9.5 and twin.shares[0].demand == 13
        assert dict(twin.explanations) == {"j6": "it waits"}


def test_defaults_are_empty_and_not_shared() -> None:
    a, b = Decisions(), Decisions()
    assert a == b and a.binds == () and dict(a.explanations) == {}
    assert a.explanations is not b.explanations


def test_shares_and_preemptions_stay_hashable() -> None:
    d = decisions()
    assert len({*d.shares, *decisions().shares}) == 1
    assert len(set(d.preemptions)) == 2
