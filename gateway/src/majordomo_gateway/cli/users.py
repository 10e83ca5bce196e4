"""``majordomo users ...``: the people who may use the admin API (and the dashboard), and their roles."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.admin.passwords import hash_password, normalise_email, password_problem
from majordomo_gateway.cli.context import connected
from majordomo_gateway.storage.errors import ConstraintViolation
from majordomo_gateway.storage.records import ROLES, UserRecord

EPILOG = """\
roles:
  admin   everything: keys, proxy keys, users, usage, the audit log
  member  its own keys (create, change, revoke) and their usage
  viewer  usage only

examples:
  majordomo users create --email ada@example.com --role admin      # asks for the password
  printf '%s\\n' "$PASSWORD" | majordomo users create --email ci@example.com --role viewer
  majordomo users list --json
  majordomo users set-password ada@example.com
  majordomo users disable ci@example.com                           # also ends its sessions
"""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser(
        "users", help="manage admin API users (admin, member, viewer)",
        description="Users log in to the admin API (POST /api/v1/admin/login) and the dashboard. Passwords are "
                    "stored as argon2id hashes; they are read from a prompt, or from standard input when it is "
                    "not a terminal, never from the command line.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="users_command", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="create a user (password from a prompt or stdin)")
    create.add_argument("--email", required=True, help="what the user logs in with (case does not matter)")
    create.add_argument("--role", required=True, choices=ROLES, help="admin, member or viewer")
    listing = sub.add_parser("list", help="list users")
    disable = sub.add_parser("disable", help="disable a user and end its sessions")
    disable.add_argument("user", metavar="USER", help="email or id")
    enable = sub.add_parser("enable", help="enable a disabled user")
    enable.add_argument("user", metavar="USER", help="email or id")
    set_password = sub.add_parser("set-password", help="set a new password (from a prompt or stdin); ends the "
                                                       "user's sessions")
    set_password.add_argument("user", metavar="USER", help="email or id")
    handlers = {create: _create, listing: _list, disable: _disable, enable: _enable, set_password: _set_password}
    for parser, handler in handlers.items():
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)
        parser.set_defaults(handler=lambda a, h=handler: int(asyncio.run(h(a))))


def read_password(prompt: str = "Password") -> str | None:
    """From a hidden prompt (twice) on a terminal, else one line of standard input.  None, after
    saying why, when it is missing, mistyped or too weak."""
    if sys.stdin.isatty():
        password = getpass.getpass(f"{prompt} (input hidden): ")
        if getpass.getpass("Again: ") != password:
            _error("the two passwords differ")
            return None
    else:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            _error("no password on standard input (pipe one line in: printf '%s\\n' \"$PASSWORD\" | majordomo ...)")
            return None
    problem = password_problem(password)
    if problem is not None:
        _error(problem)
        return None
    return password


def _error(message: str) -> None:
    print(f"majordomo: {message}", file=sys.stderr)


def _show(record: UserRecord, as_json: bool) -> None:
    data = record.to_dict()
    if as_json:
        print(orjson.dumps(data).decode())
        return
    width = max(len(k) for k in data)
    for name, value in data.items():
        print(f"{name.ljust(width)}  {'' if value is None else value}")


def _not_found(user: str) -> int:
    _error(f"no user {user} (see `majordomo users list`)")
    return 1


async def _create(args: argparse.Namespace) -> int:
    try:
        email = normalise_email(args.email)
    except ValueError as exc:
        _error(str(exc))
        return 2
    password = read_password()
    if password is None:
        return 2
    password_hash = await asyncio.to_thread(hash_password, password)
    async with connected(args) as database:
        try:
            record = await database.users.create(str(uuid_utils.uuid7()), email, args.role, password_hash,
                                                 datetime.now(UTC))
        except ConstraintViolation:
            _error(f"a user with email {email} already exists (see `majordomo users list`)")
            return 1
        await record_action(database, cli_actor(), "user.create", record.id, {"email": email, "role": args.role})
    if args.json:
        _show(record, True)
    else:
        print(f"Created {record.role} {record.email} ({record.id}).")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        records = await database.users.all()
    if args.json:
        print(orjson.dumps([r.to_dict() for r in records]).decode())
        return 0
    if not records:
        print("no users yet: create one with `majordomo users create --email EMAIL --role admin`")
        return 0
    rows = [("ID", "EMAIL", "ROLE", "STATUS", "CREATED")]
    rows += [(r.id, r.email, r.role, "active" if r.active else "disabled", r.created_at.isoformat(timespec="seconds"))
             for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _disable(args: argparse.Namespace) -> int:
    return await _set_disabled(args, disabled=True)


async def _enable(args: argparse.Namespace) -> int:
    return await _set_disabled(args, disabled=False)


async def _set_disabled(args: argparse.Namespace, *, disabled: bool) -> int:
    now = datetime.now(UTC)
    async with connected(args) as database:
        user = await database.users.find(args.user)
        if user is None:
            return _not_found(args.user)
        record = await database.users.set_disabled(user.id, now if disabled else None, now)
        assert record is not None
        detail: dict[str, Any] = {"email": record.email}
        if disabled:
            detail["sessions_ended"] = await database.sessions.revoke_user(record.id, now)
        await record_action(database, cli_actor(), "user.disable" if disabled else "user.enable", record.id, detail)
    _show(record, args.json)
    return 0


async def _set_password(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        user = await database.users.find(args.user)
        if user is None:
            return _not_found(args.user)
        password = read_password(f"New password for {user.email}")
        if password is None:
            return 2
        password_hash = await asyncio.to_thread(hash_password, password)
        now = datetime.now(UTC)
        record = await database.users.set_password(user.id, password_hash, now)
        assert record is not None
        ended = await database.sessions.revoke_user(record.id, now)
        await record_action(database, cli_actor(), "user.set_password", record.id,
                            {"email": record.email, "sessions_ended": ended})
    if args.json:
        _show(record, True)
    else:
        print(f"Password changed for {record.email}; {ended} session(s) ended.")
    return 0
