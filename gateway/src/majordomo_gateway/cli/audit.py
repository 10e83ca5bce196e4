"""``majordomo audit``: the admin actions recorded, by the CLI and the API alike."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from majordomo_gateway.cli.context import connected
from majordomo_gateway.reports.timerange import TimeRangeError, parse_instant

EPILOG = """\
examples:
  majordomo audit                          # the last 50 actions, oldest first
  majordomo audit --since 7d --limit 500
  majordomo audit --json | jq 'select(.action == "login.failure")'
"""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = commands.add_parser(
        "audit", help="show the audit log of admin actions",
        description="Every admin action (keys, proxy keys, users, logins), by the CLI or the admin API: when, who "
                    "(a user's email, or cli:<os user>), what, on what, and from which address.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    audit.add_argument("--since", metavar="WHEN", help="only actions from this time: 7d, 24h, 2026-11-01 or an "
                                                        "ISO date-time")
    audit.add_argument("--limit", type=int, default=50, metavar="N", help="the newest N actions (default 50)")
    audit.add_argument("--json", action="store_true", help="print a JSON array instead of text")
    common(audit)
    audit.set_defaults(handler=lambda a: int(asyncio.run(_run(a))))


async def _run(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        print("majordomo: --limit must be a positive number", file=sys.stderr)
        return 2
    since = None
    if args.since:
        try:
            since = parse_instant(args.since, now=datetime.now(UTC), tz="UTC")
        except TimeRangeError as exc:
            print(f"majordomo: --since: {exc}", file=sys.stderr)
            return 2
    async with connected(args) as database:
        entries = await database.audit.recent(since=since, limit=args.limit)
    if args.json:
        print(orjson.dumps([e.to_dict() for e in entries]).decode())
        return 0
    if not entries:
        print("no admin actions recorded" + (" in this range" if since else ""))
        return 0
    rows = [("AT", "ACTOR", "ACTION", "TARGET", "FROM", "DETAIL")]
    rows += [(e.at.isoformat(timespec="seconds"), e.actor, e.action, e.target or "-", e.remote_address or "-",
              orjson.dumps(e.detail).decode() if e.detail else "") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
