"""Chaos runs: fairpool's scheduler replicas and meter under faults on real parts (the
local control plane, Prometheus), with the counts that say nothing went wrong. Used by
`python -m bench chaos` (the long run) and tests/integration/test_chaos.py (the short
one)."""
