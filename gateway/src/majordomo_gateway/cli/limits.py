"""``majordomo limits ...``: requests and tokens per minute per key, model, metadata value or overall
(docs/budgets.md, "Rate limits")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.cli.budgets import UsageError, print_table, resolve_scope, usage_error
from majordomo_gateway.cli.context import connected
from majordomo_gateway.storage.database import Database
from majordomo_gateway.storage.errors import ConstraintViolation
from majordomo_gateway.storage.records import RateLimitRecord

__all__ = ["add_parsers", "limit_dict", "per_minute"]

EPILOG = """\
scopes (as for budgets):
  global, key:<key id or name>, model:<name>, metadata:<Key>=<Value>, metadata:<Key>=* (one limit per value)

examples:
  majordomo limits create --scope metadata:User-Id=* --rpm 60 --tpm 100000
  majordomo limits create --scope key:ci-bot --rpm 10
  majordomo limits list
  majordomo limits show LIMIT_ID --json
  majordomo limits update LIMIT_ID --tpm 50000
  majordomo limits delete LIMIT_ID

Counted per fixed UTC minute, shared by every process through the database; a request over a
limit answers 429 with Retry-After (the seconds to the next minute) in the provider's error shape.
"""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser(
        "limits", help="rate limits (requests and tokens per minute) per key, model, metadata value or overall",
        description="Rate limits cap requests (--rpm) and tokens (--tpm) per minute for a scope, across every "
                    "worker and replica.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="limits_command", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="create a rate limit")
    create.add_argument("--scope", required=True, help="global, key:<id or name>, model:<name>, "
                                                       "metadata:<Key>=<Value> or metadata:<Key>=*")
    create.add_argument("--rpm", metavar="N", help="requests per minute")
    create.add_argument("--tpm", metavar="N", help="tokens (input + output) per minute")
    listing = sub.add_parser("list", help="list rate limits")
    show = sub.add_parser("show", help="one rate limit")
    show.add_argument("id", metavar="LIMIT_ID")
    update = sub.add_parser("update", help="change a limit's --rpm or --tpm ('' removes one)")
    update.add_argument("id", metavar="LIMIT_ID")
    update.add_argument("--rpm", metavar="N", help="requests per minute ('' for none)")
    update.add_argument("--tpm", metavar="N", help="tokens per minute ('' for none)")
    delete = sub.add_parser("delete", help="delete a rate limit")
    delete.add_argument("id", metavar="LIMIT_ID")
    handlers = {create: _create, listing: _list, show: _show, update: _update, delete: _delete}
    for parser, handler in handlers.items():
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)
        parser.set_defaults(handler=lambda a, h=handler: int(asyncio.run(h(a))))


def per_minute(flag: str, text: str | None) -> int | None:
    """A positive whole number of requests or tokens per minute; None for none ('')."""
    if text is None or not text.strip():
        return None
    try:
        value = int(text.strip())
    except ValueError:
        raise UsageError(f"{flag} {text!r} is not a whole number per minute (e.g. 60)") from None
    if not 1 <= value <= 2**31 - 1:
        raise UsageError(f"{flag} {text!r} must be at least 1 (delete the limit to lift it)")
    return value


def limit_dict(record: RateLimitRecord) -> dict[str, Any]:
    return {"id": record.id, "scope": record.scope, "per_value": record.per_value, "rpm": record.rpm,
            "tpm": record.tpm, "window": "minute", "created_at": record.created_at.isoformat(),
            "updated_at": record.updated_at.isoformat()}


def _describe(record: RateLimitRecord) -> str:
    parts = [f"{record.rpm} requests" if record.rpm else "", f"{record.tpm} tokens" if record.tpm else ""]
    return " and ".join(p for p in parts if p) + " per minute"


def _print(record: RateLimitRecord, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(limit_dict(record)).decode())
        return
    for name, value in limit_dict(record).items():
        print(f"{name.ljust(10)}  {'' if value is None else value}")


async def _create(args: argparse.Namespace) -> int:
    try:
        rpm, tpm = per_minute("--rpm", args.rpm), per_minute("--tpm", args.tpm)
    except UsageError as exc:
        return usage_error(str(exc))
    if rpm is None and tpm is None:
        return usage_error("give --rpm N, --tpm N or both")
    now = datetime.now(UTC)
    async with connected(args) as database:
        try:
            scope = await resolve_scope(database, args.scope)
        except UsageError as exc:
            return usage_error(str(exc))
        record = RateLimitRecord(id=str(uuid_utils.uuid7()), scope=scope.text, scope_kind=scope.kind,
                                 scope_key=scope.key, scope_value=scope.value, rpm=rpm, tpm=tpm, created_at=now,
                                 updated_at=now)
        try:
            created = await database.budgets.create_limit(record)
        except ConstraintViolation:
            print(f"majordomo: {scope.text} has a rate limit already (see `majordomo limits list`; change it "
                  "with `majordomo limits update`)", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "limit.create", created.id, limit_dict(created))
    if args.json:
        _print(created, True)
    else:
        print(f"Created rate limit {created.id}: {created.scope}, {_describe(created)}.")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        limits = await database.budgets.limits()
    if args.json:
        print(orjson.dumps([limit_dict(x) for x in limits]).decode())
        return 0
    if not limits:
        print("no rate limits yet: create one with `majordomo limits create --scope global --rpm 600`")
        return 0
    rows = [("ID", "SCOPE", "RPM", "TPM", "WINDOW")]
    rows += [(x.id, x.scope, str(x.rpm or "-"), str(x.tpm or "-"), "minute (UTC)") for x in limits]
    print_table(rows)
    return 0


async def _one(database: Database, limit_id: str) -> RateLimitRecord | None:
    record = await database.budgets.get_limit(limit_id)
    if record is None:
        print(f"majordomo: no rate limit {limit_id} (see `majordomo limits list`)", file=sys.stderr)
    return record


async def _show(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        record = await _one(database, args.id)
    if record is None:
        return 1
    _print(record, args.json)
    return 0


async def _update(args: argparse.Namespace) -> int:
    if args.rpm is None and args.tpm is None:
        return usage_error("nothing to change: give --rpm and/or --tpm")
    try:
        rpm, tpm = per_minute("--rpm", args.rpm), per_minute("--tpm", args.tpm)
    except UsageError as exc:
        return usage_error(str(exc))
    async with connected(args) as database:
        record = await _one(database, args.id)
        if record is None:
            return 1
        rpm = record.rpm if args.rpm is None else rpm
        tpm = record.tpm if args.tpm is None else tpm
        if rpm is None and tpm is None:
            return usage_error("a limit needs --rpm or --tpm; delete it instead (`majordomo limits delete`)")
        updated = await database.budgets.update_limit(record.id, rpm=rpm, tpm=tpm, now=datetime.now(UTC))
        if updated is None:
            print(f"majordomo: rate limit {args.id} was deleted meanwhile", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "limit.update", updated.id, limit_dict(updated))
    _print(updated, args.json)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        deleted = await database.budgets.delete_limit(args.id)
        if deleted is None:
            print(f"majordomo: no rate limit {args.id} (see `majordomo limits list`)", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "limit.delete", deleted.id, limit_dict(deleted))
    if args.json:
        print(orjson.dumps({"id": deleted.id, "scope": deleted.scope, "deleted": True}).decode())
    else:
        print(f"Deleted rate limit {deleted.id} ({deleted.scope}).")
    return 0
