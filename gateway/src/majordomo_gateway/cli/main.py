"""``majordomo``: run the gateway, manage API keys, migrate the database, inspect prices, reprice.

Every subcommand reads the same configuration as the server (``--config``/``majordomo.yaml``,
``MAJORDOMO_*`` variables, ``--database-url``), so ``majordomo keys create`` writes to the
database that ``majordomo serve`` reads.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from majordomo_gateway import __version__
from majordomo_gateway.cli import audit as audit_command
from majordomo_gateway.cli import budgets as budget_commands
from majordomo_gateway.cli import db as db_commands
from majordomo_gateway.cli import demo as demo_command
from majordomo_gateway.cli import keys as key_commands
from majordomo_gateway.cli import limits as limit_commands
from majordomo_gateway.cli import pricing as pricing_commands
from majordomo_gateway.cli import proxy_keys as proxy_key_commands
from majordomo_gateway.cli import report as report_command
from majordomo_gateway.cli import reprice as reprice_command
from majordomo_gateway.cli import secrets as secrets_commands
from majordomo_gateway.cli import serve as serve_command
from majordomo_gateway.cli import status as status_command
from majordomo_gateway.cli import users as user_commands
from majordomo_gateway.config import ConfigError

EPILOG = """\
examples:
  majordomo serve                              # http://127.0.0.1:7680, SQLite ./majordomo.db
  majordomo serve --database-url postgresql://postgres@127.0.0.1:5432/majordomo
  majordomo keys create --name dev             # prints mdm_sk_... once
  majordomo keys list --json
  majordomo users create --email ada@example.com --role admin   # then POST /api/v1/admin/login
  majordomo budgets create --scope metadata:User-Id=* --limit-usd 5 --period day   # $5 a day per user
  majordomo audit --json                       # who changed what, by the CLI or the admin API
  majordomo status                             # queue, spool, oldest unwritten row of a running gateway
  majordomo pricing show claude-sonnet-4-5     # the prices charged, and where they come from
  majordomo pricing unpriced                   # models seen without a price
  majordomo reprice --since 2025-06-01 --dry-run
  majordomo demo                               # a simulated week of traffic, to look around first
  sqlite3 majordomo.db "SELECT raw_metadata->>'Feature', SUM(total_cost) FROM llm_requests GROUP BY 1"
"""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE",
                        help="YAML config file (default: ./majordomo.yaml when it exists)")
    parser.add_argument("--database-url", metavar="URL",
                        help="sqlite:///path.db or postgresql://user:pass@host:port/db "
                             "(env MAJORDOMO_DATABASE_URL; default sqlite:///majordomo.db)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="majordomo",
        description="Majordomo Gateway: a transparent LLM proxy that records what every request costs.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"majordomo {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser("serve", help="run the gateway",
                                description="Run the gateway (migrates the database first).")
    _common(serve)
    serve.add_argument("--host", help="address to listen on (env MAJORDOMO_SERVER_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env MAJORDOMO_SERVER_PORT; default 7680)")
    serve.add_argument("--workers", type=int, help="worker processes (env MAJORDOMO_SERVER_WORKERS; default 1)")
    serve.set_defaults(handler=serve_command.run)

    db = commands.add_parser("db", help="database schema",
                             description="Manage the database schema.")
    db_sub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    migrate = db_sub.add_parser("migrate", help="apply pending migrations",
                                description="Create or upgrade the tables. `serve` does this at start too.")
    migrate.add_argument("--json", action="store_true", help='print {"applied": [...]} instead of text')
    _common(migrate)
    migrate.set_defaults(handler=db_commands.migrate)

    key_commands.add_parsers(commands, _common)
    proxy_key_commands.add_parsers(commands, _common)
    secrets_commands.add_parsers(commands, _common)
    user_commands.add_parsers(commands, _common)
    budget_commands.add_parsers(commands, _common)
    limit_commands.add_parsers(commands, _common)
    audit_command.add_parser(commands, _common)
    pricing_commands.add_parsers(commands, _common)
    report_command.add_parser(commands, _common)
    reprice_command.add_parser(commands, _common)
    status_command.add_parser(commands)
    demo_command.add_parser(commands, _common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"majordomo: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
