"""The engine's sentences as one member may read them: the API's answers to a member
(ExplainPending) and the FailedScheduling events in a member's namespaces, which that
member reads, hide the other members and their jobs the same way."""

from __future__ import annotations

import re
from collections.abc import Iterable


def redact_explanation(text: str, member: str, members: Iterable[str]) -> str:
    """The engine's sentence as `member` may read it: other members become "another
    member", and their jobs named in it (reclaim victims) "a job"; a count of their
    nodes ("30 of vc-01") stays a count."""
    for other in sorted(set(members) - {member}, key=len, reverse=True):
        text = re.sub(rf"(?<![\w-]){re.escape(other)}(?![\w-])", "another member", text)
    return re.sub(
        r"(?<![^\s(),;])(?!\d+ of)[^\s(),;]+ of another member", "a job of another member", text
    )
