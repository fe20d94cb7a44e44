"""Which policy version was in force in each hour (pure).

The policy audit log (table `policy_versions` in the ledger, written by the gRPC API's
policy store) records when each version was applied. The version **in force** in an hour
is the newest one applied at or before the hour's start (a version applied at 10:20
governs from 11:00); an hour before the first recorded version is governed by the first
one (the oldest price known). Versions follow one another in their numbers' order,
whatever the clocks of the replicas that stamped them. Without any recorded version the
policy file given is in force in every hour, and the report says so.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from policies.errors import InputError, PolicyError
from policies.loader import parse_policy
from policies.model import Policy


@dataclass(frozen=True)
class PolicyHistory:
    """Policy versions ordered by the time they were applied."""

    applied_at: tuple[datetime, ...]
    policies: tuple[Policy | PolicyError, ...]
    """Each version, or why it no longer reads (`from_records`)."""
    recorded: bool
    """False when no version was recorded and the policy file stands for all hours."""

    @classmethod
    def from_records(cls, records: Iterable[tuple[int, datetime, str]]) -> PolicyHistory | None:
        """From (version, applied_at, document) rows; None when there are none.

        Ordered by version, the order they were applied in: each is numbered after the
        one before it was recorded. A version stamped earlier than the one before it (by
        a replica whose clock is behind) is in force from that one's time on; ordered by
        time, the older version was taken for the newest, and priced every later hour."""
        rows = sorted(records, key=lambda r: r[0])
        if not rows:
            return None
        policies: list[Policy | PolicyError] = []
        for version, _, document in rows:
            try:
                policy = parse_policy(document, f"policy version {version} (ledger)")
            except PolicyError as exc:
                # Recorded under an earlier fairpool that took what this one refuses (a
                # member named `pool`, a host-only time zone): an error only for the
                # hours it governed. Raised here, it stopped every report and the meter
                # for good, though the history can never change.
                policies.append(exc)
                continue
            if policy.version != version:
                raise InputError(
                    f"policy_versions: row {version} holds a document of version {policy.version}"
                )
            policies.append(policy)
        applied_at: list[datetime] = []
        for _, at, _ in rows:
            applied_at.append(max(_utc(at), applied_at[-1]) if applied_at else _utc(at))
        return cls(tuple(applied_at), tuple(policies), True)

    @classmethod
    def only(cls, policy: Policy) -> PolicyHistory:
        """`policy` in force at every hour (no recorded history)."""
        return cls((datetime.min.replace(tzinfo=UTC),), (policy,), False)

    @property
    def latest(self) -> Policy:
        return _readable(self.policies[-1], "the latest version")

    @property
    def by_version(self) -> dict[int, Policy]:
        return {p.version: p for p in self.policies if isinstance(p, Policy)}

    def at(self, hour: datetime) -> Policy:
        """The policy version in force in the hour starting at `hour`."""
        index = bisect_right(self.applied_at, _utc(hour)) - 1
        return _readable(self.policies[max(index, 0)], f"in force at {_utc(hour):%Y-%m-%d %H:%M}Z")

    def versions(self, hours: pd.DatetimeIndex) -> pd.Series:
        """The version in force in each hour, indexed by the hours."""
        return pd.Series(
            [self.at(h.to_pydatetime()).version for h in hours], index=hours, dtype="int64"
        )

    def describe(self, versions: Iterable[int]) -> str:
        """One sentence for the report: where the prices came from."""
        used = sorted(set(versions))
        if not self.recorded:
            return (
                f"prices: the policy file given (version {self.latest.version}) for every "
                "hour; the ledger has no policy history"
            )
        listed = ", ".join(str(v) for v in used)
        plural = "s" if len(used) > 1 else ""
        return (
            f"prices: each hour at the policy version in force then (version{plural} "
            f"{listed}, from the ledger's policy history)"
        )


def _readable(entry: Policy | PolicyError, role: str) -> Policy:
    if isinstance(entry, PolicyError):
        raise InputError(
            f"{entry} ({role}: recorded by an earlier fairpool, it is not valid under this "
            "one, so the hours it governed cannot be priced)"
        )
    return entry


def _utc(value: datetime) -> datetime:
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()
