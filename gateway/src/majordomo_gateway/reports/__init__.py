"""Reports over llm_requests: what ``majordomo report`` prints, and what the dashboard's JSON API
will serve from the same code."""

from majordomo_gateway.reports.timerange import TimeRangeError, parse_instant
from majordomo_gateway.reports.usage import (
    REPORT_COLUMNS,
    ReportError,
    UsageQuery,
    UsageReport,
    dimension,
    run_usage_report,
)

__all__ = ["REPORT_COLUMNS", "ReportError", "TimeRangeError", "UsageQuery", "UsageReport", "dimension",
           "parse_instant", "run_usage_report"]
