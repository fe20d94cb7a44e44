"""How the engine's sentences name members and other members' jobs: marked, so that the
sentence can be read exactly by someone who may see every member (`plain`) and by a
member, who may not see the others (`scheduler.k8s.redaction`).

Members are DNS labels, which may be words the sentences use ("a", "node", "gpus",
"its", "8"), and a job, node or namespace may be called as a member: without the marks
only the sentence's words could tell a member from such a word, and a member's sentence
read "no another member has 8 free" in a consortium with a member called "node"."""

from __future__ import annotations

from typing import Final

MENTION: Final = "\u2068"
"""Opens a member's name (FIRST STRONG ISOLATE: text embedded in a sentence, which no
member, job, node or GPU model name may hold)."""
JOB: Final = "\u2066"
"""Opens the name of another member's job (LEFT-TO-RIGHT ISOLATE), followed by " of " and
the mention of its member."""
END: Final = "\u2069"
"""Closes either (POP DIRECTIONAL ISOLATE)."""
_UNMARKED: Final = {ord(MENTION): None, ord(JOB): None, ord(END): None}


def mention(member: str) -> str:
    """A member as a sentence names it."""
    return f"{MENTION}{member}{END}"


def job_of(job: str, member: str, *, as_member: bool = False) -> str:
    """Another member's job (a reclaim's victim, or the job a preemption is for) as a
    sentence names it: 'train-7 of lab-b' ('train-7 of member lab-b' `as_member`), marked
    whole, so that a reader who may not see it reads "a job of another member" and never
    a count ("30 of lab-b" nodes) taken for a job."""
    said = "member " if as_member else ""
    return f"{JOB}{job}{END} of {said}{mention(member)}"


def plain(text: str) -> str:
    """The sentence as read by someone who may see every member (the marks taken out)."""
    return text.translate(_UNMARKED)
