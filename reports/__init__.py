"""Metering from Prometheus, the usage ledger, the cost model and report rendering."""
