"""The reference engine: the scheduling cycle as it was before the cycle's cost was made
to follow what changed (a verbatim copy, imports renamed). It walks the whole queue and
the whole victim list at every cycle, which makes it slow and easy to trust;
`tests/unit/test_engine_reference.py` checks that `scheduler.engine` decides exactly
what it decides. Nothing outside the tests imports it. Changes since the copy: each
preemption names its cause (`entitlement` or `fair_share` for a reclaim), as the
engine's decisions now do; a failed reclaim stands only for jobs in the same mode and
in the same place with the reclaim limit, as in the engine (the cache's key was missing
both); and a job reclaimed before that restarts from zero is kept off wanted nodes from
its first reclaim, as in the engine (`kept_status`, `_kept_detail`); its sentences name
a pod alone whose job id is its uid by namespace/name (`explain.job_name`), as the
engine's do; and a job naming no GPU model counts against a model its pods are admitted
to (`_reachable_models`), and reclaims within its member's entitlement on another such
model when its own makes no room, as in the engine.
"""

from tests.reference_engine.cycle import compute_shares, schedule

__all__ = ["compute_shares", "schedule"]
