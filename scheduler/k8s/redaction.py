"""The engine's sentences as one reader may read them: the API's answers to a member
(ExplainPending), and the FailedScheduling events and a preempted pod's reason
(annotation and event, `evictor.victim_reason`) in a member's namespaces, which that
member reads, hide the other members and their jobs the same way; an operator reads them
whole.

The engine marks every member its sentences name, and every job of another member
(`scheduler.engine.mentions`): only those are replaced. A member called by a word the
sentences use ("a", "node", "gpus", "its", "8") garbled them when every whole-word
occurrence of another member's name was replaced ("no another member has 8 free")."""

from __future__ import annotations

import re

from scheduler.engine.mentions import END, JOB, MENTION, plain

ANOTHER_MEMBER = "another member"
"""What a member reads where another member is named."""

_MENTIONED = re.compile(
    f"(?:(?:job )?{JOB}([^{END}]*){END} of )?(member )?{MENTION}([^{END}]*){END}"
)
"""A member named in a sentence ("member lab-b" is one mention: it read "member another
member"), with its job just before it ("train-7 of lab-b", and "job train-7 of member
lab-b" whole: it read "job a job of another member")."""


def redact_explanation(text: str, member: str | None) -> str:
    """The engine's sentence as `member` may read it (None: a reader who may see every
    member): other members become "another member", and their jobs named in it (reclaim
    victims) "a job of another member"; a count of their nodes ("30 of vc-01") stays a
    count. Words of the sentence that merely equal a member's name stay as they are."""
    if member is None:
        return plain(text)

    def read(found: re.Match[str]) -> str:
        job, _, named = found.groups()
        if named == member:
            return plain(found.group(0))
        return f"a job of {ANOTHER_MEMBER}" if job is not None else ANOTHER_MEMBER

    return plain(_MENTIONED.sub(read, text))
