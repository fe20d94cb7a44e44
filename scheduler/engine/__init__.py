"""The pure fair-share engine: a snapshot and a policy in, decisions out.

It imports nothing from the shells (Kubernetes adapter, simulator, API, CLI) and does no
I/O, so the same snapshot and policy always give the same decisions; that is what lets
the simulator predict what the daemon does.
"""

from scheduler.engine.cycle import compute_shares, schedule

__all__ = ["compute_shares", "schedule"]
