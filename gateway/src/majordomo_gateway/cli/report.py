"""``majordomo report``: what each feature, step, user, model or key cost, without writing SQL."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from majordomo_gateway.cli.context import connected
from majordomo_gateway.reports import (
    ReportError,
    TimeRangeError,
    UsageQuery,
    UsageReport,
    run_usage_report,
)
from majordomo_gateway.reports.params import usage_query
from majordomo_gateway.timebuckets import PERIODS, TimeZoneError

EXAMPLES = """\
examples:
  majordomo report                                   totals of the last 30 days
  majordomo report --group-by feature                cost per feature (X-Majordomo-Feature)
  majordomo report --group-by feature --group-by step --since 7d
  majordomo report --group-by user --where feature=summarize --limit 10
  majordomo report --group-by model --every day --tz Europe/Paris --csv > daily.csv
  majordomo report --group-by Team --json            any metadata key the clients send

dimensions: feature, step, user, session (the metadata keys Feature, Step, User-Id, Session-Id),
any other metadata key by its name (case-insensitive), and the columns model, provider, route,
key (the Majordomo key's name) and status.  Rows are sorted by cost, highest first (with --every,
period by period).  cost_usd is null for groups with no priced request; `unpriced` counts requests
whose usage was recorded but whose model has no price (see `majordomo pricing unpriced`).
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    report = commands.add_parser(
        "report", help="spend and tokens grouped by feature, step, user, model, key, ...",
        description="Requests, tokens and cost from llm_requests, grouped by any dimension, over a time range.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    report.add_argument("--group-by", metavar="DIM", action="append", default=[],
                        help="group by this dimension (repeatable)")
    report.add_argument("--since", metavar="WHEN", help="from this time: 7d, 24h, 2026-11-01 or an ISO date-time "
                                                        "(default: 30 days ago)")
    report.add_argument("--until", metavar="WHEN", help="up to (not including) this time (default: now)")
    report.add_argument("--every", choices=PERIODS, help="one row per period and group, in a column `bucket`")
    report.add_argument("--tz", default="UTC", metavar="ZONE",
                        help="time zone of --every periods and of dates without an offset (default UTC)")
    report.add_argument("--where", metavar="DIM=VALUE", action="append", default=[],
                        help="only requests where DIM is VALUE (repeatable; all must hold)")
    report.add_argument("--limit", type=int, metavar="N", help="at most N rows")
    output = report.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON array of objects")
    output.add_argument("--csv", action="store_true", help="CSV: a header row, then the rows")
    common(report)
    report.set_defaults(handler=_handle)


def build_query(args: argparse.Namespace, now: datetime) -> UsageQuery:
    return usage_query(group_by=args.group_by, since=args.since, until=args.until, every=args.every, tz=args.tz,
                       where=args.where, limit=args.limit, now=now)


def _handle(args: argparse.Namespace) -> int:
    try:
        query = build_query(args, datetime.now(UTC))
    except (ReportError, TimeRangeError, TimeZoneError) as exc:
        print(f"majordomo report: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(_run(args, query))
    if args.json:
        print(orjson.dumps(report.rows, default=_json_number).decode())
    elif args.csv:
        _print_csv(report)
    else:
        print_table(report)
    return 0


async def _run(args: argparse.Namespace, query: UsageQuery) -> UsageReport:
    async with connected(args) as database:
        return await run_usage_report(database, query)


def _json_number(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)  # a JSON number; costs have 10 decimal places, well within a double
    raise TypeError(f"cannot encode {type(value).__name__}")


def _print_csv(report: UsageReport) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(report.columns)
    for row in report.rows:
        writer.writerow(["" if row[name] is None else row[name] for name in report.columns])


def _text(name: str, value: Any) -> str:
    if value is None:
        return "-" if name == "cost_usd" else "(none)"
    if name == "cost_usd":
        return f"${value:,.6f}"
    if isinstance(value, int) and name != "status":
        return f"{value:,}"
    return str(value)


def print_table(report: UsageReport) -> None:
    from rich.console import Console
    from rich.table import Table

    # Piped to a file or another program, nothing is cut to fit an 80-column guess.
    console = Console() if sys.stdout.isatty() else Console(width=100_000)
    if not report.rows:
        console.print("no requests in this range (try a wider --since, or check --where)")
        return
    numeric = set(report.totals)
    table = Table(show_footer=len(report.rows) > 1, box=None, header_style="bold")
    labels = [name for name in report.columns if name not in numeric]
    for name in report.columns:
        footer = "total" if name == report.columns[0] and labels else ""
        if name in numeric:
            footer = _text(name, report.totals[name])
        table.add_column(name, footer=footer, justify="right" if name in numeric else "left")
    for row in report.rows:
        table.add_row(*(_text(name, row[name]) for name in report.columns))
    console.print(table)
