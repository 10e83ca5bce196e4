"""``majordomo keys ...``: create, list, inspect, rename and revoke Majordomo API keys."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import uuid_utils

from majordomo_gateway.auth.keys import KeyRecord, display_prefix, generate_key, hash_secret
from majordomo_gateway.cli.context import connected


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    keys = commands.add_parser("keys", help="manage Majordomo API keys",
                               description="Manage the API keys callers send as X-Majordomo-Key.")
    sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)

    create = sub.add_parser("create", help="create a key and print it (shown only once)",
                            description="Create a key. The key itself is printed once and never stored: "
                                        "only its SHA-256 is kept.")
    create.add_argument("--name", required=True, help="a name to recognise the key by")
    create.add_argument("--description", help="what or who the key is for")
    create.set_defaults(handler=lambda a: _run(_create, a))

    listing = sub.add_parser("list", help="list keys", description="List keys (never their secret part).")
    listing.set_defaults(handler=lambda a: _run(_list, a))

    get = sub.add_parser("get", help="show one key", description="Show one key by id.")
    get.add_argument("id")
    get.set_defaults(handler=lambda a: _run(_get, a))

    update = sub.add_parser("update", help="rename or re-describe a key",
                            description="Change a key's name or description.")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--description")
    update.set_defaults(handler=lambda a: _run(_update, a))

    revoke = sub.add_parser("revoke", help="revoke a key",
                            description="Revoke a key: requests with it get 401. Gateways that cached "
                                        "the key stop accepting it within auth.cache_ttl seconds.")
    revoke.add_argument("id")
    revoke.set_defaults(handler=lambda a: _run(_revoke, a))

    for parser in (create, listing, get, update, revoke):
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)


def _run(command: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    return asyncio.run(command(args))  # type: ignore[arg-type]


def _print_key(record: KeyRecord, as_json: bool, extra: dict[str, object] | None = None) -> None:
    data = record.to_dict()
    if extra:
        data.update(extra)
    if as_json:
        print(orjson.dumps(data).decode())
        return
    width = max(len(k) for k in data)
    for name, value in data.items():
        print(f"{name.ljust(width)}  {'' if value is None else value}")


def _not_found(key_id: str) -> int:
    print(f"majordomo: no key with id {key_id} (see `majordomo keys list`)", file=sys.stderr)
    return 1


async def _create(args: argparse.Namespace) -> int:
    key = generate_key()
    async with connected(args) as database:
        record = await database.create_key(str(uuid_utils.uuid7()), args.name, args.description,
                                           hash_secret(key), display_prefix(key), datetime.now(UTC))
    if args.json:
        _print_key(record, True, {"key": key})
    else:
        print(key)
        print(f"Created key {record.id} ({record.name}). Store it now: it will not be shown again.",
              file=sys.stderr)
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        records = await database.list_keys()
    if args.json:
        print(orjson.dumps([r.to_dict() for r in records]).decode())
        return 0
    if not records:
        print("no keys yet: create one with `majordomo keys create --name NAME`")
        return 0
    rows = [("ID", "NAME", "PREFIX", "STATUS", "REQUESTS", "LAST USED")]
    for r in records:
        rows.append((r.id, r.name, r.key_prefix + "…", "active" if r.active else "revoked",
                     str(r.request_count), r.last_used_at.isoformat(timespec="seconds") if r.last_used_at else "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _get(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        record = await database.get_key(args.id)
    if record is None:
        return _not_found(args.id)
    _print_key(record, args.json)
    return 0


async def _update(args: argparse.Namespace) -> int:
    if args.name is None and args.description is None:
        print("majordomo: nothing to change: pass --name and/or --description", file=sys.stderr)
        return 2
    async with connected(args) as database:
        record = await database.update_key(args.id, name=args.name, description=args.description,
                                           now=datetime.now(UTC))
    if record is None:
        return _not_found(args.id)
    _print_key(record, args.json)
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        record = await database.revoke_key(args.id, datetime.now(UTC))
    if record is None:
        return _not_found(args.id)
    _print_key(record, args.json)
    return 0
