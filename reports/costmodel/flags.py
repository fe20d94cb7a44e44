"""A report's flags, each knowing which members it concerns.

A member's view of the report (`reports.rendering.render.restrict`) shows a flag only
when it concerns no other member. Told by matching member names in its words, a member
named `data` lost every "data missing for ..." flag of the pool, while a flag naming
another member's pod ("unattributed: pod b/b-secret ...") stayed.
"""

from __future__ import annotations

from collections.abc import Iterable


class Flag(str):
    """A flag about some members (a plain `str` flag is about the pool as a whole)."""

    members: frozenset[str]

    def __new__(cls, text: str, members: Iterable[str] = ()) -> Flag:
        flag = super().__new__(cls, text)
        flag.members = frozenset(members)
        return flag


def concerned(flag: str) -> frozenset[str]:
    """The members `flag` is about; none for a flag about the pool."""
    return getattr(flag, "members", frozenset())
