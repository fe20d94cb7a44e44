"""The cost model (pure): a month of usage and capacity becomes invoices and a settlement."""

from reports.costmodel.build import (
    ROUNDING_RULE,
    MonthReport,
    NoDataError,
    PriceBook,
    build_month_report,
    check_invariants,
)

__all__ = [
    "ROUNDING_RULE",
    "MonthReport",
    "NoDataError",
    "PriceBook",
    "build_month_report",
    "check_invariants",
]
