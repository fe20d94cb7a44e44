"""Usage history and work lost to reclaim: the arithmetic the simulator and the daemon share.

Both shells call these functions, so the usage history the engine sees and the GPU-seconds
reported as lost to reclaim mean the same in a replay and in a cluster. Pure: no clock,
the caller says how much time passed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

LN2 = math.log(2.0)


def advance_usage_history(
    history: dict[str, float],
    allocated: dict[str, int],
    elapsed_s: float,
    half_life_s: float,
    members: Iterable[str],
) -> dict[str, float]:
    """The usage history `elapsed_s` seconds later, each member having held the GPUs in
    `allocated` (absent = 0) for the whole interval.

    Past GPU-seconds are decayed by `0.5 ** (elapsed / half-life)`; the interval's own
    GPU-seconds are added already decayed, as the integral of a constant allocation
    under exponential decay: `gpus * half_life / ln 2 * (1 - decay)`. The history is kept
    for `members` (the policy's): their allocation is added, while entries of anyone
    else already in `history` only decay. A member whose history is 0 is left out. A
    non-positive `elapsed_s` changes nothing (the clocks of two machines may disagree by
    a little). The tables are typed as the dicts both shells hold: compiled, a `Mapping`'s
    `get` would go through Python's call protocol, and the simulator calls this at every
    instant."""
    if half_life_s <= 0:
        raise ValueError(f"half_life_s must be positive, got {half_life_s}")
    out = dict(history)
    if elapsed_s <= 0:
        return out
    # Typed: `float ** float` is `Any` to mypy (a negative base gives a complex), and
    # compiled, every sum below would then go through Python's number protocol.
    decay: float = 0.5 ** (elapsed_s / half_life_s)
    gain = half_life_s / LN2 * (1.0 - decay)
    kept = set(members)
    for member in sorted(kept | set(history)):
        past = out.get(member, 0.0) * decay
        past += (allocated.get(member, 0) if member in kept else 0) * gain
        if past > 0:
            out[member] = past
        else:
            out.pop(member, None)
    return out


def lost_gpu_seconds(gpus: int, started_at: float, gone_at: float, checkpointable: bool) -> float:
    """GPU-seconds lost to reclaim by a victim pod (or gang) of `gpus` GPUs that started at
    `started_at` and stopped at `gone_at` (the end of its grace period, or the eviction
    when that is all the caller knows). A checkpointable member loses nothing: it resumes
    from the progress it had when the preemption was decided, and its grace period is
    spent saving that checkpoint, not computing."""
    if checkpointable:
        return 0.0
    return gpus * max(0.0, gone_at - started_at)
