"""Metering, the usage ledger, the cost model and the monthly reports."""
