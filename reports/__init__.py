"""Metering, the usage ledger, the cost model and the monthly reports.

- `metering`: Prometheus series to hourly rows.
- `ledger`: the usage ledger (SQL) and its schema.
- `costmodel`: pure: a month of usage and capacity to invoices and a settlement.
- `rendering`: the bill as HTML, CSV, JSON and Parquet.
- `sources`: a month's usage from the ledger, a simulation or a synthetic month.
"""
