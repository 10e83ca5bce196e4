"""``majordomo demo``: a week of simulated traffic through the real gateway, into a fresh database."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.admin.passwords import hash_password
from majordomo_gateway.app import Gateway
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.cli.report import print_table
from majordomo_gateway.config import Settings, load_settings
from majordomo_gateway.demo.simulator import SimulatedUpstream
from majordomo_gateway.demo.traffic import KEY_NAMES, DriveResult, ReplayClock, drive, plan_week
from majordomo_gateway.proxy.server_glue import install_log_filter
from majordomo_gateway.reports import UsageQuery, UsageReport, dimension, run_usage_report
from majordomo_gateway.storage.database import Database, open_database, sqlite_path
from majordomo_gateway.storage.errors import ConstraintViolation

DEFAULT_DATABASE = "sqlite:///majordomo-demo.db"
#: the dashboard login the demo makes in its own database (with a new random password each run)
DEMO_EMAIL = "demo@example.com"
DESCRIPTION = """\
Run the gateway with a built-in simulated provider (OpenAI, Anthropic and Gemini wire formats,
realistic token counts and latencies, streams) and send it a week of an imaginary company's traffic:
7 features made of workflow steps, 300 users (a few heavy ones), 3 Majordomo keys, 10 models, busy
weekday afternoons, some rate limits, errors and abandoned streams, one model without a price and
one day when an agent loop ran away.  Every call goes through the real proxy path (authentication,
routing, relay, usage parsing, pricing, the writer); only the provider is simulated, so nothing
leaves this machine and no API key is needed.  Timestamps are replayed: the week passes in seconds.

The rows go to a fresh database (default ./majordomo-demo.db, replaced on each run; never your
./majordomo.db).  Then the gateway keeps serving on --port with the simulated provider until Ctrl-C,
so you can point an SDK or curl at it, open the dashboard (/dashboard) with the admin login it
prints (a user of the demo database only, with a new random password each run), and run
`majordomo report` against the demo database.
"""
EXAMPLES = """\
examples:
  majordomo demo                                   # a week, ~3000 requests, then serve on :7680
  majordomo demo --no-serve --requests 500         # just fill ./majordomo-demo.db and exit
  majordomo demo --days 30 --requests 20000 --port 7690
  majordomo demo --database-url postgresql://postgres@127.0.0.1:5432/demo   # an empty database
  majordomo report --database-url sqlite:///majordomo-demo.db --group-by feature --since 7d
"""


class DemoError(Exception):
    """The demo cannot start as asked; the message says what to do."""


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    demo = commands.add_parser("demo", help="simulated traffic through the real gateway, for a first look",
                               description=DESCRIPTION, epilog=EXAMPLES,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--requests", type=int, default=3000, metavar="N", help="calls to send (default 3000)")
    demo.add_argument("--days", type=int, default=7, metavar="D", help="days of traffic, ending now (default 7)")
    demo.add_argument("--seed", type=int, default=42, help="the same seed plans the same traffic (default 42)")
    demo.add_argument("--seconds", type=float, metavar="S",
                      help="how long the replay takes in real time (default: about 150 calls a second)")
    demo.add_argument("--speed", type=float, default=1.0, metavar="X",
                      help="divide the simulated provider's latencies by X (default 1: realistic)")
    demo.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=7680, help="port to serve on; 0 picks a free one (default 7680)")
    demo.add_argument("--no-serve", action="store_true", help="exit once the traffic is recorded")
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    common(demo)
    demo.set_defaults(handler=_handle)


def _handle(args: argparse.Namespace) -> int:
    for name, value in (("--requests", args.requests), ("--days", args.days)):
        if value <= 0:
            print(f"majordomo demo: {name} must be a positive number", file=sys.stderr)
            return 2
    if args.speed <= 0 or (args.seconds is not None and args.seconds <= 0):
        print("majordomo demo: --speed and --seconds must be positive", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_demo(args))
    except DemoError as exc:
        print(f"majordomo demo: {exc}", file=sys.stderr)
        return 1


async def _demo(args: argparse.Namespace) -> int:
    import uvicorn

    url = args.database_url or DEFAULT_DATABASE
    await _fresh_database(url, replace=args.database_url is None)
    with tempfile.TemporaryDirectory(prefix="majordomo-demo-spool-") as spool:
        # Its own spool directory: the demo never replays (or leaves) rows of a real gateway's.
        settings = load_settings(args.config, environ={}, database_url=url,
                                 **{"writer.spool_dir": spool})
        keys = await _create_keys(settings)
        login = await _create_login(settings)
        now = datetime.now(UTC)
        calls = plan_week(args.requests, args.days, now, args.seed)
        clock = ReplayClock()
        gateway = Gateway(settings, upstream=SimulatedUpstream(seed=args.seed, speed=args.speed), clock=clock)
        server = uvicorn.Server(uvicorn.Config(gateway, host=args.host, port=args.port, lifespan="on",
                                               http="httptools", access_log=False, log_level="warning",
                                               server_header=False, date_header=False))
        install_log_filter()
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                serving.result()  # the port is taken, or start-up failed: say why
                raise DemoError(f"the gateway did not start on {args.host}:{args.port}")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://{args.host}:{port}"
        seconds = args.seconds or max(3.0, len(calls) / 150)
        _say(args, f"Replaying {len(calls)} calls over {args.days} days through {base} in about "
                   f"{seconds:.0f} s ...")
        result = await drive(calls, base, keys, seconds=seconds, clock=clock)
        rows = await _wait_for_rows(gateway.database, result)
        summary, report = await _summary(gateway.database, now - timedelta(days=args.days), result, rows, url,
                                         base)
        summary["dashboard_url"] = f"{base}/dashboard"
        summary["login"] = {"email": login[0], "password": login[1]}
        if args.json:
            print(orjson.dumps(summary, default=float).decode())
        else:
            _print_summary(args, summary, report, keys)
        if args.no_serve:
            server.should_exit = True
        else:
            _say(args, f"\nThe gateway keeps serving on {base} with the simulated provider; Ctrl-C stops it.")
        await serving
    return 0


def _fresh_sqlite_file(url: str, *, replace: bool) -> None:
    path = Path(sqlite_path(url))
    if path.exists():
        if not replace:
            raise DemoError(f"{path} exists; the demo writes into a fresh database: name a new file "
                            "(or leave out --database-url for ./majordomo-demo.db, which is replaced)")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{path}{suffix}")


async def _fresh_database(url: str, *, replace: bool) -> None:
    if url.startswith("sqlite"):
        _fresh_sqlite_file(url, replace=replace)
        return
    database = open_database(url)
    await database.connect()
    try:
        await database.migrate()
        found = await database.aggregate("SELECT COUNT(*) AS n FROM llm_requests", [])
    finally:
        await database.close()
    if found and found[0]["n"]:
        raise DemoError(f"the database already holds {found[0]['n']} requests; the demo writes into an "
                        "empty one (create a new database and pass its URL)")


async def _create_keys(settings: Settings) -> dict[str, str]:
    database = open_database(settings.database.url)
    await database.connect()
    try:
        await database.migrate()
        keys: dict[str, str] = {}
        for name in KEY_NAMES:
            key = generate_key()
            await database.create_key(str(uuid_utils.uuid7()), name, "made by majordomo demo", hash_secret(key),
                                      display_prefix(key), datetime.now(UTC))
            keys[name] = key
        return keys
    finally:
        await database.close()


async def _create_login(settings: Settings) -> tuple[str, str]:
    """An admin user for the dashboard, in the demo database: its email and a fresh random password."""
    password = secrets.token_urlsafe(15)
    password_hash = await asyncio.to_thread(hash_password, password)
    database = open_database(settings.database.url)
    await database.connect()
    try:
        try:
            record = await database.users.create(str(uuid_utils.uuid7()), DEMO_EMAIL, "admin", password_hash,
                                                 datetime.now(UTC))
        except ConstraintViolation:
            raise DemoError(f"the database already has a user {DEMO_EMAIL}; the demo writes into an empty "
                            "database (create a new one and pass its URL)") from None
        await record_action(database, cli_actor(), "user.create", record.id,
                            {"email": DEMO_EMAIL, "role": "admin", "by": "majordomo demo"})
    finally:
        await database.close()
    return DEMO_EMAIL, password


async def _wait_for_rows(database: Database, result: DriveResult, timeout: float = 15.0) -> int:
    """Every answered call has its row once the writer has flushed: wait for that, not a fixed time."""
    expected = result.sent - result.transport_errors
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await database.aggregate("SELECT COUNT(*) AS n FROM llm_requests", [])
        count = int(found[0]["n"]) if found else 0
        if count >= expected or asyncio.get_running_loop().time() > deadline:
            return count
        await asyncio.sleep(0.1)


async def _summary(database: Database, since: datetime, result: DriveResult, rows: int, url: str,
                   base: str) -> tuple[dict[str, Any], UsageReport]:
    report = await run_usage_report(database, UsageQuery(group_by=[dimension("feature")], since=since))
    return {
        "database_url": url,
        "gateway_url": base,
        "requests_sent": result.sent,
        "rows": rows,
        "statuses": {str(k): v for k, v in sorted((result.answered or {}).items())},
        "abandoned_streams": result.abandoned,
        "replay_seconds": round(result.seconds, 2),
        "total_cost_usd": report.totals.get("cost_usd"),
        "by_feature": report.rows,
    }, report


def _print_summary(args: argparse.Namespace, summary: dict[str, Any], report: UsageReport,
                   keys: dict[str, str]) -> None:
    print(f"\n{summary['rows']} requests recorded in {summary['database_url']} "
          f"({summary['abandoned_streams']} streams abandoned by their client, statuses {summary['statuses']}).\n")
    print_table(report)
    flag = "" if args.database_url is None else f" --database-url {args.database_url}"
    database = flag or " --database-url " + DEFAULT_DATABASE
    print(f"""
Next:
  majordomo report{database} --group-by feature --group-by step --since 7d
  majordomo report{database} --group-by user --limit 10
  majordomo report{database} --group-by model --every day
  majordomo pricing unpriced{database}

Send your own call (the simulated provider answers; the key is the demo's "web-app" key):
  curl {summary['gateway_url']}/v1/chat/completions -H "X-Majordomo-Key: {keys['web-app']}" \\
    -H "X-Majordomo-Feature: try-it" -H "Content-Type: application/json" \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hello"}}]}}'""")
    login = summary["login"]
    where = (f"\nDashboard: {summary['dashboard_url']}" if not args.no_serve else
             f"\nDashboard: run `majordomo serve{database}` and open /dashboard")
    print(f"""{where}
  log in as {login['email']} with the password {login['password']}
  (an admin of the demo database only; each run makes a new password)""")


def _say(args: argparse.Namespace, text: str) -> None:
    if not args.json:
        print(text, file=sys.stderr if text.startswith("Replaying") else sys.stdout)
    logging.getLogger("majordomo.demo").debug(text)
