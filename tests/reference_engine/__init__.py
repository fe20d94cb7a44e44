"""The reference engine: the scheduling cycle as it was before the cycle's cost was made
to follow what changed (a verbatim copy, imports renamed). It walks the whole queue and
the whole victim list at every cycle, which makes it slow and easy to trust;
`tests/unit/test_engine_reference.py` checks that `scheduler.engine` decides exactly
what it decides. Nothing outside the tests imports it.
"""

from tests.reference_engine.cycle import compute_shares, schedule

__all__ = ["compute_shares", "schedule"]
