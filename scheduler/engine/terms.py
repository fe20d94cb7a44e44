"""What a cycle reads of the policy, copied once per policy object.

The policy is a pydantic model of another package: compiled, the engine would read each
of its fields through Python's attribute protocol, and `Policy.sharing` and
`Policy.members` are properties, Python calls. A cycle reads a dozen of them, the
members' several times per GPU model, so they are copied here once per policy object
and the engine reads them natively (docs/architecture.md, "The compiled engine").
"""

from __future__ import annotations

from policies.model import Member, Policy


class PolicyTerms:
    """The policy's members and sharing rules as the engine reads them. A plain class:
    see `scheduler.engine.jobinfo.JobInfo`. Nothing changes it once made."""

    __slots__ = (
        "borrowing",
        "capped",
        "checkpointable",
        "head_start",
        "lenders",
        "lending_limit",
        "max_consolidation_loss_seconds",
        "max_consolidations_per_cycle",
        "max_gpus",
        "max_reclaims_per_job",
        "member_names",
        "members",
        "min_runtime_seconds",
        "preempt_below_min_runtime",
        "reclaim_grace_period_seconds",
        "reclaim_limit_window_seconds",
        "reclaim_overtaken_after_seconds",
        "usage_half_life_hours",
        "weight",
    )

    def __init__(self, policy: Policy) -> None:
        members = list(policy.members)
        self.member_names: list[str] = [m.name for m in members]
        """In the policy's order."""
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.weight: dict[str, float] = {m.name: m.weight for m in members}
        self.max_gpus: dict[str, int] = {
            m.name: m.max_gpus for m in members if m.max_gpus is not None
        }
        self.capped: set[str] = set(self.max_gpus)
        """Members with `max_gpus`."""
        self.lenders: list[tuple[str, int]] = [
            (m.name, m.lending_limit)
            for m in sorted(members, key=lambda m: m.name)
            if m.lending_limit is not None
        ]
        """Members with a lending limit, by name."""
        self.lending_limit: dict[str, int] = {
            m.name: m.lending_limit for m in members if m.lending_limit is not None
        }
        """The same, in the policy's order."""
        self.checkpointable: frozenset[str] = frozenset(m.name for m in members if m.checkpointable)
        sharing = policy.sharing
        self.borrowing: bool = sharing.borrowing
        self.reclaim_grace_period_seconds: int = sharing.reclaim_grace_period_seconds
        self.min_runtime_seconds: int = sharing.min_runtime_seconds
        self.preempt_below_min_runtime: bool = sharing.preempt_below_min_runtime
        self.max_reclaims_per_job: int | None = sharing.max_reclaims_per_job
        self.reclaim_limit_window_seconds: int = sharing.reclaim_limit_window_seconds
        self.usage_half_life_hours: float | None = sharing.usage_half_life_hours
        self.max_consolidations_per_cycle: int = sharing.max_consolidations_per_cycle
        self.max_consolidation_loss_seconds: int = sharing.max_consolidation_loss_seconds
        self.head_start: bool = sharing.head_start
        self.reclaim_overtaken_after_seconds: int | None = sharing.reclaim_overtaken_after_seconds


_TERMS: list[tuple[Policy, PolicyTerms]] = []
"""The last two policies seen and their terms; the entries keep the policies alive, so the
identity check cannot be fooled by a recycled id (the daemon's API threads read terms
too: the list is replaced whole, never changed in place)."""


def terms_of(policy: Policy) -> PolicyTerms:
    for seen, found in list(_TERMS):
        if seen is policy:
            return found
    found = PolicyTerms(policy)
    _TERMS[:] = [(policy, found), *_TERMS[:1]]
    return found
