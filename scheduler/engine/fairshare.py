"""Fair share (deserved share) per GPU model by weighted water-filling.

For one GPU model with `capacity` GPUs:

1. Every member first gets its guaranteed part, `min(entitlement, demand, cap)`.
   Entitlements never add up to more than the hardware (`entitlement` carves purchases
   out of it), but the capacity divided here can be smaller (owners' lending limits
   withhold idle GPUs); if the guaranteed parts exceed it they are scaled down
   proportionally so that they sum to the capacity.
2. The surplus (capacity minus the guaranteed parts) is poured over the members whose
   demand is not met yet, in proportion to their effective weight, each member filling
   up to `min(demand, cap)`; whatever a member cannot take is poured again over the
   others, until the surplus is gone or nobody wants more. Shares are real numbers.
3. Usage history (`usage`, decayed GPU-seconds per member) only lowers the weight used
   for the surplus: `effective weight = weight / (1 + usage / mean usage)`, the mean being
   taken over every member passed in (absent = 0). A member that used nothing keeps its
   weight; one that used the mean gets half of it. Entitlements are never touched.

Members are handled in name order and all arithmetic is done in that order, so the same
inputs give bit-identical floats regardless of the dicts' insertion order. Sums are
loops, not `sum` over a generator, which compiled code still runs through Python's
protocol (docs/architecture.md, "The compiled engine").
"""

from __future__ import annotations

_EPS = 1e-9


def _members(*maps: dict[str, float]) -> list[str]:
    names: set[str] = set()
    for m in maps:
        names.update(m)
    return sorted(names)


def effective_weights(
    weight: dict[str, float], usage: dict[str, float] | None, members: list[str]
) -> dict[str, float]:
    """Weights for the surplus, lowered for members that used more than the mean."""
    base = {m: float(weight.get(m, 1.0)) for m in members}
    if not usage or not members:
        return base
    total = 0.0
    for m in members:
        total += float(usage.get(m, 0.0))
    mean = total / len(members)
    if mean <= 0:
        return base
    return {m: base[m] / (1.0 + max(0.0, float(usage.get(m, 0.0))) / mean) for m in members}


def water_fill(
    capacity: float,
    entitlement: dict[str, float],
    demand: dict[str, float],
    weight: dict[str, float],
    cap: dict[str, float] | None = None,
    usage: dict[str, float] | None = None,
) -> dict[str, float]:
    """Fair share of each member for one GPU model (see the module docstring).

    Members are the union of the keys of `entitlement`, `demand` and `weight`; a missing
    entitlement or demand is 0, a missing weight is 1, a missing cap is no cap.
    """
    members = _members(entitlement, demand, weight)
    capacity = max(0.0, float(capacity))
    limit: dict[str, float] = {}
    for m in members:
        lim = max(0.0, float(demand.get(m, 0.0)))
        if cap is not None and m in cap:
            lim = min(lim, max(0.0, float(cap[m])))
        limit[m] = lim
    share = {m: min(max(0.0, float(entitlement.get(m, 0.0))), limit[m]) for m in members}
    guaranteed = 0.0
    for m in members:
        guaranteed += share[m]
    if guaranteed > capacity:
        scale = capacity / guaranteed if guaranteed > 0 else 0.0
        share = {m: share[m] * scale for m in members}
        return share
    surplus = capacity - guaranteed
    w = effective_weights(weight, usage, members)
    active = [m for m in members if limit[m] - share[m] > _EPS and w[m] > 0]
    while surplus > _EPS and active:
        total_w = 0.0
        for m in active:
            total_w += w[m]
        level = surplus / total_w
        saturated = [m for m in active if (limit[m] - share[m]) / w[m] <= level + _EPS]
        if not saturated:
            for m in active:
                share[m] += w[m] * level
            surplus = 0.0
            break
        for m in saturated:
            surplus -= limit[m] - share[m]
            share[m] = limit[m]
        surplus = max(0.0, surplus)
        active = [m for m in active if m not in saturated]
    return share
