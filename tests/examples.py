"""How many random cases a property test draws.

`make test` (and CI) draws every case each test asks for. `make unit` is the quick loop a
developer runs after each change and must stay under two minutes on two cores, so it sets
`FAIRPOOL_EXAMPLES` to the share of those cases it draws (the Makefile says how many).
Tests whose case count is part of what they assert (the 200 cases of the sharing
incentive) do not use this.
"""

from __future__ import annotations

import os

SHARE_VARIABLE = "FAIRPOOL_EXAMPLES"


def share() -> float:
    raw = os.environ.get(SHARE_VARIABLE, "1")
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{SHARE_VARIABLE}={raw!r}: not a number between 0 and 1") from exc
    if not 0 < value <= 1:
        raise ValueError(f"{SHARE_VARIABLE}={raw!r}: not a number between 0 and 1")
    return value


def examples(cases: int) -> int:
    """`cases`, or the quick loop's share of them (at least 5)."""
    return max(min(cases, 5), round(cases * share()))
