"""Member names for an imported trace's virtual clusters, when no member map names them.

A public trace's virtual clusters are named as its cluster named them (Helios:
`vcEwI`, `vc6YE`), and a member's name is a DNS-1123 label (`Member.name` in the
policy): a trace whose orgs keep those names is one no policy can replay. So each
virtual cluster is named by one fixed rule (docs/policy.md, "The member map"): lower-
cased, every character other than `a-z`, `0-9` and `-` replaced by `-`, and `-` at the
start or end dropped. A name that already is a member's name is kept as it is."""

from __future__ import annotations

import re

from policies.model import DNS_LABEL, RESERVED_MEMBER_NAMES

MAX_MEMBER_NAME = 63
"""`Member.name`'s limit (a DNS-1123 label)."""

_NOT_IN_NAME = re.compile(r"[^a-z0-9-]")
_MEMBER_NAME = re.compile(DNS_LABEL, re.ASCII)


def member_name_of(vc: str) -> str:
    """The member a virtual cluster is named as, by the module's rule; may be no valid
    name (empty, too long, reserved): see `member_name_problem`."""
    return _NOT_IN_NAME.sub("-", vc.lower()).strip("-")


def member_name_problem(name: str) -> str | None:
    """Why a policy could not have a member of this name, or None."""
    if not name:
        return "no letter or digit to name a member by"
    if len(name) > MAX_MEMBER_NAME:
        return f"member {name[:20]!r}... would be longer than {MAX_MEMBER_NAME} characters"
    if not _MEMBER_NAME.fullmatch(name):
        return f"{name!r} is not a member name (a DNS-1123 label)"
    if name in RESERVED_MEMBER_NAMES:
        return f"member name {name!r} is reserved: {RESERVED_MEMBER_NAMES[name]}"
    return None
