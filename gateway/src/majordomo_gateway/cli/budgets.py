"""``majordomo budgets ...``: spending limits per key, model, metadata value or overall (docs/budgets.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.budgets.scope import Scope, ScopeError, parse_scope
from majordomo_gateway.budgets.status import BudgetStatus, budget_statuses, redact_webhook
from majordomo_gateway.cli.context import connected, settings_from
from majordomo_gateway.periods import BUDGET_PERIODS, period_start
from majordomo_gateway.storage.database import Database
from majordomo_gateway.storage.errors import ConstraintViolation
from majordomo_gateway.storage.records import COST_LIMIT, BudgetRecord
from majordomo_gateway.timebuckets import TimeZoneError, zone

__all__ = ["add_parsers", "alert_thresholds", "print_table", "resolve_scope", "usage_error", "usd", "webhook_url"]

EPILOG = """\
scopes:
  global                      every request
  key:<key id or name>        one Majordomo key's requests
  model:<name>                requests for one model (as the client asked for it)
  metadata:<Key>=<Value>      requests sent with X-Majordomo-<Key>: <Value>
  metadata:<Key>=*            one budget per distinct value (every user gets the same)

examples:
  majordomo budgets create --scope global --limit-usd 500 --period month --alert-at 50,80,100 \\
      --webhook https://hooks.slack.com/services/T000/B000/XXXX
  majordomo budgets create --scope metadata:User-Id=* --limit-usd 5 --period day
  majordomo budgets create --scope key:ci-bot --limit-usd 20 --period week --soft
  majordomo budgets list                      # scope, limit, period, spent, remaining, resets_at
  majordomo budgets show BUDGET_ID --json     # with the spend of every value of a per-value budget
  majordomo budgets update BUDGET_ID --limit-usd 10
  majordomo budgets reset BUDGET_ID [--value u-42]
  majordomo budgets delete BUDGET_ID

A hard budget (the default) that is used up answers 429 in the provider's error shape before
anything is forwarded; a --soft one only alerts. Periods are calendar periods (day, ISO week,
month) in UTC, or in --time-zone / budgets.time_zone; total never resets.
"""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser(
        "budgets", help="spending limits per key, model, metadata value or overall",
        description="Budgets cap what requests may spend in a period. Spend is counted once per stored row, "
                    "in the database, so every worker and replica shares it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="budgets_command", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="create a budget (counting this period's spend so far)")
    create.add_argument("--scope", required=True, help="global, key:<id or name>, model:<name>, "
                                                       "metadata:<Key>=<Value> or metadata:<Key>=*")
    create.add_argument("--limit-usd", required=True, metavar="N", help="the limit in US dollars, e.g. 5 or 0.50")
    create.add_argument("--period", required=True, choices=BUDGET_PERIODS, help="day, week, month or total")
    create.add_argument("--soft", action="store_true", help="never refuse: only alert")
    create.add_argument("--alert-at", metavar="PERCENTS", help="alert thresholds in percent, e.g. 50,80,100")
    create.add_argument("--webhook", metavar="URL", help="POST alerts here (a Slack incoming webhook works)")
    create.add_argument("--time-zone", metavar="TZ",
                        help="IANA time zone of the periods (default budgets.time_zone, UTC)")
    listing = sub.add_parser("list", help="list budgets with their spend this period")
    show = sub.add_parser("show", help="one budget, with the spend of each value of a per-value budget")
    show.add_argument("id", metavar="BUDGET_ID")
    update = sub.add_parser("update", help="change a budget's limit, softness, alerts or webhook")
    update.add_argument("id", metavar="BUDGET_ID")
    update.add_argument("--limit-usd", metavar="N", help="a new limit in US dollars")
    softness = update.add_mutually_exclusive_group()
    softness.add_argument("--soft", action="store_true", default=None, help="only alert from now on")
    softness.add_argument("--hard", dest="soft", action="store_false", help="refuse requests once used up")
    update.add_argument("--alert-at", metavar="PERCENTS", help="new thresholds, e.g. 80,100 ('' for none)")
    hook = update.add_mutually_exclusive_group()
    hook.add_argument("--webhook", metavar="URL", help="a new webhook URL")
    hook.add_argument("--no-webhook", action="store_true", help="send no webhook")
    delete = sub.add_parser("delete", help="delete a budget and its ledger")
    delete.add_argument("id", metavar="BUDGET_ID")
    reset = sub.add_parser("reset", help="forget this period's spend (and alerts) of a budget")
    reset.add_argument("id", metavar="BUDGET_ID")
    reset.add_argument("--value", help="for a metadata:<Key>=* budget: only this value's counter")
    handlers = {create: _create, listing: _list, show: _show, update: _update, delete: _delete, reset: _reset}
    for parser, handler in handlers.items():
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)
        parser.set_defaults(handler=lambda a, h=handler: int(asyncio.run(h(a))))


class UsageError(ValueError):
    """Bad input from the command line (or the admin API): the message says what to send instead."""


def usd(text: str) -> Decimal:
    try:
        value = Decimal(text.strip().lstrip("$"))
    except InvalidOperation:
        raise UsageError(f"--limit-usd {text!r} is not a number of US dollars (e.g. 5 or 0.50)") from None
    if not value.is_finite() or value < 0 or value >= COST_LIMIT:
        raise UsageError(f"--limit-usd {text!r} must be between 0 and {COST_LIMIT} US dollars")
    if value != value.quantize(Decimal("1e-10")):
        raise UsageError(f"--limit-usd {text!r} has more than 10 decimal places")
    return value


def alert_thresholds(text: str | None) -> tuple[int, ...]:
    if text is None or not text.strip():
        return ()
    values = []
    for part in text.split(","):
        try:
            value = int(part.strip().rstrip("%"))
        except ValueError:
            raise UsageError(f"--alert-at {text!r}: {part.strip()!r} is not a whole percentage (e.g. 50,80,100)"
                             ) from None
        if not 1 <= value <= 1000:
            raise UsageError(f"--alert-at {text!r}: thresholds are percentages from 1 to 1000")
        values.append(value)
    return tuple(sorted(set(values)))


def webhook_url(text: str | None) -> str | None:
    if text is None:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"--webhook must be an http:// or https:// URL, not {redact_webhook(text)!r}")
    return text.strip()


async def resolve_scope(database: Database, text: str) -> Scope:
    """The scope, with ``key:<name>`` turned into the key's id (what rows carry)."""
    try:
        scope = parse_scope(text)
    except ScopeError as exc:
        raise UsageError(str(exc)) from None
    if scope.kind != "key":
        return scope
    assert scope.value is not None
    key = await database.get_key(scope.value)
    if key is None:
        named = [k for k in await database.list_keys() if k.name == scope.value]
        if len(named) > 1:
            raise UsageError(f"{len(named)} keys are named {scope.value!r}: use the key's id (majordomo keys list)")
        if not named:
            raise UsageError(f"no Majordomo key with id or name {scope.value!r} (see `majordomo keys list`)")
        key = named[0]
    return Scope("key", value=key.id)


def usage_error(message: str) -> int:
    print(f"majordomo: {message}", file=sys.stderr)
    return 2


_error = usage_error


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Rows (the first one the header) in left-aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _money(value: float | Decimal) -> str:
    return f"${Decimal(value):,.4f}".rstrip("0").rstrip(".") if value else "$0"


def _print_status(status: BudgetStatus, as_json: bool, *, all_values: bool = False) -> None:
    data = status.to_dict(values_limit=None if all_values else 10)
    if as_json:
        print(orjson.dumps(data).decode())
        return
    for name, value in data.items():
        if name == "values":
            continue
        print(f"{name.ljust(12)}  {'' if value is None else value}")
    for entry in status.values if all_values else status.values[:10]:
        print(f"  {entry.value}: spent {_money(entry.spent)}, remaining {_money(entry.remaining)}, "
              f"{entry.requests} requests")


def _detail(record: BudgetRecord) -> dict[str, Any]:
    return {"scope": record.scope, "limit_usd": str(record.limit_usd), "period": record.period,
            "soft": record.soft, "alert_at": list(record.alert_at), "webhook": redact_webhook(record.webhook)}


async def _create(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    try:
        limit = usd(args.limit_usd)
        alerts = alert_thresholds(args.alert_at)
        webhook = webhook_url(args.webhook)
        tz = args.time_zone or settings.budgets.time_zone
        zone(tz)
    except (UsageError, TimeZoneError) as exc:
        return _error(str(exc))
    now = datetime.now(UTC)
    async with connected(args) as database:
        try:
            scope = await resolve_scope(database, args.scope)
        except UsageError as exc:
            return _error(str(exc))
        record = BudgetRecord(id=str(uuid_utils.uuid7()), scope=scope.text, scope_kind=scope.kind,
                              scope_key=scope.key, scope_value=scope.value, limit_usd=limit, period=args.period,
                              time_zone=tz, soft=args.soft, alert_at=alerts, webhook=webhook, created_at=now,
                              updated_at=now)
        try:
            created = await database.budgets.create(record, current_start=period_start(now, args.period, tz))
        except ConstraintViolation:
            print(f"majordomo: a {args.period} budget for {scope.text} exists already "
                  "(see `majordomo budgets list`; change it with `majordomo budgets update`)", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "budget.create", created.id, _detail(created))
        [status] = await budget_statuses(database.budgets, now, [created])
    if args.json:
        _print_status(status, True)
    else:
        kind = "soft" if created.soft else "hard"
        print(f"Created {kind} budget {created.id}: {created.scope}, {_money(created.limit_usd)} per "
              f"{created.period}; spent so far {_money(status.spent)}.")
    return 0


async def _list(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        statuses = await budget_statuses(database.budgets, datetime.now(UTC))
    if args.json:
        print(orjson.dumps([s.to_dict(values_limit=10) for s in statuses]).decode())
        return 0
    if not statuses:
        print("no budgets yet: create one with `majordomo budgets create --scope global --limit-usd 100 "
              "--period month`")
        return 0
    rows = [("ID", "SCOPE", "LIMIT", "PERIOD", "SPENT", "REMAINING", "RESETS_AT", "ALERTED")]
    for s in statuses:
        b = s.budget
        spent = _money(s.spent) + (f" (top of {len(s.values)})" if b.per_value and s.values else "")
        rows.append((b.id, b.scope + (" (soft)" if b.soft else ""), _money(b.limit_usd), b.period, spent,
                     _money(s.remaining), "never" if s.resets_at is None else s.resets_at.isoformat(timespec="minutes"),
                     ",".join(f"{t}%" for t in s.alerted) or "-"))
    print_table(rows)
    return 0


async def _one(database: Database, budget_id: str) -> BudgetRecord | None:
    record = await database.budgets.get(budget_id)
    if record is None:
        print(f"majordomo: no budget {budget_id} (see `majordomo budgets list`)", file=sys.stderr)
    return record


async def _show(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        record = await _one(database, args.id)
        if record is None:
            return 1
        [status] = await budget_statuses(database.budgets, datetime.now(UTC), [record])
    _print_status(status, args.json, all_values=True)
    return 0


async def _update(args: argparse.Namespace) -> int:
    if args.limit_usd is None and args.soft is None and args.alert_at is None and args.webhook is None \
            and not args.no_webhook:
        return _error("nothing to change: give --limit-usd, --soft/--hard, --alert-at or --webhook/--no-webhook")
    try:
        limit = None if args.limit_usd is None else usd(args.limit_usd)
        alerts = None if args.alert_at is None else alert_thresholds(args.alert_at)
        webhook = webhook_url(args.webhook)
    except UsageError as exc:
        return _error(str(exc))
    now = datetime.now(UTC)
    async with connected(args) as database:
        record = await _one(database, args.id)
        if record is None:
            return 1
        updated = await database.budgets.update(
            record.id, limit_usd=record.limit_usd if limit is None else limit,
            soft=record.soft if args.soft is None else args.soft,
            alert_at=record.alert_at if alerts is None else alerts,
            webhook=None if args.no_webhook else (webhook or record.webhook), now=now)
        if updated is None:
            print(f"majordomo: budget {args.id} was deleted meanwhile", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "budget.update", updated.id, _detail(updated))
        [status] = await budget_statuses(database.budgets, now, [updated])
    _print_status(status, args.json)
    return 0


async def _delete(args: argparse.Namespace) -> int:
    async with connected(args) as database:
        deleted = await database.budgets.delete(args.id)
        if deleted is None:
            print(f"majordomo: no budget {args.id} (see `majordomo budgets list`)", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "budget.delete", deleted.id, _detail(deleted))
    if args.json:
        print(orjson.dumps({"id": deleted.id, "scope": deleted.scope, "deleted": True}).decode())
    else:
        print(f"Deleted budget {deleted.id} ({deleted.scope}, {deleted.period}).")
    return 0


async def _reset(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    async with connected(args) as database:
        record = await _one(database, args.id)
        if record is None:
            return 1
        if args.value is not None and not record.per_value:
            return _error(f"--value applies to metadata:<Key>=* budgets only; {record.scope} has one counter")
        start = period_start(now, record.period, record.time_zone)
        removed = await database.budgets.reset(record.id, start, args.value)
        await record_action(database, cli_actor(), "budget.reset", record.id,
                            {"scope": record.scope, "period_start": start.isoformat(), "value": args.value})
        [status] = await budget_statuses(database.budgets, now, [record])
    if args.json:
        print(orjson.dumps({**status.to_dict(values_limit=10), "counters_reset": removed}).decode())
    else:
        what = f"value {args.value!r} of " if args.value is not None else ""
        print(f"Reset {what}budget {record.id} ({record.scope}) for the period from {start.isoformat()}: "
              f"{removed} counter(s) cleared.")
    return 0
