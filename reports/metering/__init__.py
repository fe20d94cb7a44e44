"""Metering: Prometheus series become hourly usage, capacity and reclaim rows in the ledger.

- `promql`: the queries (fairpool's allocation metric, else kube-state-metrics; DCGM for
  GPU activity).
- `prom_source`: the Prometheus client (range queries, retries, "unavailable" errors).
- `rows`: one hour's answers turned into rows (pure).
- `meter`: the metering loop (which hours, in chunks, written hour by hour to the ledger).
- `jobs`: the hourly metering job.
"""
