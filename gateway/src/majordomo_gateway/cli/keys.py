"""``majordomo keys ...``: create, list, inspect, rename and revoke Majordomo API keys."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, key_detail, record_action
from majordomo_gateway.auth.key_rules import RuleError, expiry_from, rule_list
from majordomo_gateway.auth.keys import KeyRecord, display_prefix, generate_key, hash_secret
from majordomo_gateway.cli.context import connected, settings_from
from majordomo_gateway.config import pricing_ids
from majordomo_gateway.storage.database import Database


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
    _rule_options(create)
    create.set_defaults(handler=lambda a: _run(_create, a))

    listing = sub.add_parser("list", help="list keys", description="List keys (never their secret part).")
    listing.set_defaults(handler=lambda a: _run(_list, a))

    get = sub.add_parser("get", help="show one key", description="Show one key by id.")
    get.add_argument("id")
    get.set_defaults(handler=lambda a: _run(_get, a))

    update = sub.add_parser("update", help="rename a key, or change its owner, expiry or rules",
                            description="Change a key's name, description, owner, expiry or allowed providers and "
                                        "models. A list given replaces the key's list; options not given keep "
                                        "what the key has.")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--description")
    _rule_options(update)
    update.add_argument("--no-expiry", action="store_true", help="remove the key's expiry")
    update.add_argument("--no-owner", action="store_true", help="remove the key's owner (admins only manage it)")
    update.add_argument("--any-provider", action="store_true", help="remove the provider rule")
    update.add_argument("--any-model", action="store_true", help="remove the model rule")
    update.set_defaults(handler=lambda a: _run(_update, a))

    revoke = sub.add_parser("revoke", help="revoke a key",
                            description="Revoke a key: requests with it get 401. Gateways that cached "
                                        "the key stop accepting it within auth.cache_ttl seconds.")
    revoke.add_argument("id")
    revoke.set_defaults(handler=lambda a: _run(_revoke, a))

    for parser in (create, listing, get, update, revoke):
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)


def _rule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expires", metavar="WHEN",
                        help="requests after this get 401: 30d, 12h, 90m, 2w, or a date / ISO date-time")
    parser.add_argument("--allow-provider", action="append", metavar="PROVIDER",
                        help="only this provider (repeatable): openai, anthropic, gemini or a configured one")
    parser.add_argument("--allow-model", action="append", metavar="GLOB",
                        help="only models matching this glob (repeatable), e.g. 'gpt-4o*'")
    parser.add_argument("--owner", metavar="EMAIL",
                        help="the user who manages the key (a member manages only its own keys)")


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


def _rules(args: argparse.Namespace, now: datetime) -> dict[str, Any] | None:
    """The rule options given, checked; None after saying what is wrong."""
    rules: dict[str, Any] = {}
    try:
        if args.expires is not None:
            rules["expires_at"] = expiry_from(args.expires, now)
        if args.allow_provider is not None:
            rules["allowed_providers"] = rule_list(args.allow_provider, "provider", pricing_ids(settings_from(args)))
        if args.allow_model is not None:
            rules["allowed_models"] = rule_list(args.allow_model, "model")
    except RuleError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return None
    return rules


class _NoSuchUser(Exception):
    pass


async def _owner_id(database: Database, email: str | None) -> str | None:
    """The owner's id (None for no owner); _NoSuchUser, after saying so, when there is no such user."""
    if email is None:
        return None
    user = await database.users.find(email)
    if user is None:
        print(f"majordomo: no user {email} (see `majordomo users list`)", file=sys.stderr)
        raise _NoSuchUser
    return user.id


async def _create(args: argparse.Namespace) -> int:
    key = generate_key()
    now = datetime.now(UTC)
    rules = _rules(args, now)
    if rules is None:
        return 2
    async with connected(args) as database:
        try:
            owner = await _owner_id(database, args.owner)
        except _NoSuchUser:
            return 1
        record = await database.create_key(str(uuid_utils.uuid7()), args.name, args.description,
                                           hash_secret(key), display_prefix(key), now, owner_user_id=owner, **rules)
        await record_action(database, cli_actor(), "key.create", record.id, key_detail(record))
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


_RULE_FLAGS = ("expires", "allow_provider", "allow_model", "owner", "no_expiry", "no_owner", "any_provider",
               "any_model")


async def _update(args: argparse.Namespace) -> int:
    changes_rules = any(getattr(args, flag) not in (None, False) for flag in _RULE_FLAGS)
    if args.name is None and args.description is None and not changes_rules:
        print("majordomo: nothing to change: pass --name, --description, --expires, --allow-provider, "
              "--allow-model, --owner or one of the --no-/--any- options", file=sys.stderr)
        return 2
    for given, cleared in (("expires", "no_expiry"), ("owner", "no_owner"), ("allow_provider", "any_provider"),
                           ("allow_model", "any_model")):
        if getattr(args, given) is not None and getattr(args, cleared):
            print(f"majordomo: --{given.replace('_', '-')} and --{cleared.replace('_', '-')} contradict each other",
                  file=sys.stderr)
            return 2
    now = datetime.now(UTC)
    rules = _rules(args, now)
    if rules is None:
        return 2
    async with connected(args) as database:
        record = await database.get_key(args.id)
        if record is None:
            return _not_found(args.id)
        before = key_detail(record)
        try:
            owner = await _owner_id(database, args.owner)
        except _NoSuchUser:
            return 1
        if args.name is not None or args.description is not None:
            record = await database.update_key(args.id, name=args.name, description=args.description, now=now)
        if changes_rules and record is not None:
            record = await database.set_key_rules(
                record.id, now=now,
                owner_user_id=None if args.no_owner else owner if args.owner else record.owner_user_id,
                expires_at=None if args.no_expiry else rules.get("expires_at", record.expires_at),
                allowed_providers=None if args.any_provider else rules.get("allowed_providers",
                                                                           record.allowed_providers),
                allowed_models=None if args.any_model else rules.get("allowed_models", record.allowed_models))
        if record is None:
            return _not_found(args.id)
        await record_action(database, cli_actor(), "key.update", record.id,
                            {"before": before, "after": key_detail(record)})
    _print_key(record, args.json)
    return 0


async def _revoke(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        record = await database.revoke_key(args.id, datetime.now(UTC))
        if record is not None:
            await record_action(database, cli_actor(), "key.revoke", record.id, {"name": record.name})
    if record is None:
        return _not_found(args.id)
    _print_key(record, args.json)
    return 0
