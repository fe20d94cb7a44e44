"""The engine's sentences as one member may read them: the API's answers to a member
(ExplainPending) and the FailedScheduling events in a member's namespaces, which that
member reads, hide the other members and their jobs the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable


def redact_explanation(text: str, member: str, members: Iterable[str]) -> str:
    """The engine's sentence as `member` may read it: other members become "another
    member", and their jobs named in it (reclaim victims) "a job"; a count of their
    nodes ("30 of vc-01") stays a count. Jobs first: a job named namespace/name in a
    namespace called as its member ("physics/train of physics") read "another a job of
    another member" when the member's names were replaced first."""
    others = sorted(set(members) - {member}, key=len, reverse=True)
    if not others:
        return text
    names = "|".join(re.escape(other) for other in others)
    text = re.sub(
        rf"(?<![^\s(),;])(?!\d+ of)[^\s(),;]+ of (?:{names})(?![\w-])",
        "a job of another member",
        text,
    )
    # "member lab-b" is one mention ("of member another member" read twice).
    return re.sub(rf"(?<![\w-])(?:member )?(?:{names})(?![\w-])", "another member", text)
