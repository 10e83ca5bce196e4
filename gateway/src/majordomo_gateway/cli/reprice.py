"""``majordomo reprice``: recompute stored costs with the current prices.

Every row keeps the raw usage numbers it was priced from (input, output, cache read, 5-minute and
1-hour cache write, reasoning tokens, web searches), so a row can be priced again at any time:
after adding a model to the overrides file, after correcting a price, after upgrading
genai-prices.  Each row is priced as of its ``requested_at`` (prices that changed on a date apply
to the requests made under them), exactly as the gateway would have priced it with today's price
data; only rows whose cost changed are written, so a second run changes nothing.

Rows without reported usage (model lists, errors, streams cut before their usage) have nothing to
price and are left alone.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from majordomo_gateway.cli.context import connected
from majordomo_gateway.cli.pricing import price_book
from majordomo_gateway.pricing import OverridesError, PriceBook
from majordomo_gateway.storage.database import CostUpdate, Database, UsageRow
from majordomo_gateway.storage.records import fits_cost_column

log = logging.getLogger("majordomo.reprice")

DEFAULT_BATCH_SIZE = 1000
_ZERO = Decimal(0)
# Stored costs are NUMERIC(20, 10) on PostgreSQL and REAL on SQLite: a cost that differs from the
# stored one by less than this is the same cost, stored.
_ABSOLUTE_TOLERANCE = Decimal("1e-10")
_RELATIVE_TOLERANCE = Decimal("1e-12")


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser],
               common: Callable[[argparse.ArgumentParser], None]) -> None:
    reprice = commands.add_parser(
        "reprice", help="recompute stored costs with the current prices",
        description="Recompute the cost of stored requests from their recorded token counts with the current "
                    "prices (genai-prices plus pricing.overrides_file), and update the rows whose cost changed. "
                    "Safe to rerun: a second run changes nothing.")
    reprice.add_argument("--since", metavar="DATE", type=parse_since,
                         help="only requests made at or after DATE (2025-06-01 or an ISO 8601 time; UTC if no "
                              "offset)")
    reprice.add_argument("--model", metavar="M", help="only requests for this model name")
    reprice.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    reprice.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=argparse.SUPPRESS)
    reprice.add_argument("--json", action="store_true", help="print JSON instead of text")
    common(reprice)
    reprice.set_defaults(handler=lambda a: asyncio.run(_run(a)))


def parse_since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date or ISO 8601 time: {text!r}") from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


@dataclass
class ModelChange:
    rows: int = 0
    cost_before: Decimal = _ZERO
    cost_after: Decimal = _ZERO


@dataclass
class RepriceReport:
    examined: int = 0
    changed: int = 0
    newly_priced: int = 0
    no_longer_priced: int = 0
    #: sums of total_cost over the examined rows (unpriced rows count as 0)
    cost_before: Decimal = _ZERO
    cost_after: Decimal = _ZERO
    dry_run: bool = False
    by_model: dict[tuple[str, str | None], ModelChange] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_examined": self.examined,
            "rows_changed": self.changed,
            "newly_priced": self.newly_priced,
            "no_longer_priced": self.no_longer_priced,
            "total_cost_before": _text(self.cost_before),
            "total_cost_after": _text(self.cost_after),
            "dry_run": self.dry_run,
            "changes": [{"provider": provider, "model": model, "rows": change.rows,
                         "total_cost_before": _text(change.cost_before),
                         "total_cost_after": _text(change.cost_after)}
                        for (provider, model), change in sorted(self.by_model.items(), key=_model_order)],
        }


def _model_order(item: tuple[tuple[str, str | None], ModelChange]) -> tuple[str, str]:
    (provider, model), _ = item
    return provider, model or ""


def same_cost(stored: Decimal | None, new: Decimal | None) -> bool:
    if stored is None or new is None:
        return stored is new
    return abs(stored - new) <= max(_ABSOLUTE_TOLERANCE, abs(new) * _RELATIVE_TOLERANCE)


def _repriced(row: UsageRow, book: PriceBook) -> CostUpdate:
    price = book.price(row.provider, row.model, row.usage, when=row.requested_at)
    costs = (price.input_cost, price.output_cost, price.total_cost)
    if any(cost is not None and not fits_cost_column(cost) for cost in costs):
        # PostgreSQL would refuse the whole batch and SQLite store it: no cost, on both (as a live
        # request's row gets).
        log.warning("reprice: the cost of row %s (%s USD) does not fit the cost columns; recorded as unpriced",
                    row.id, price.total_cost)
        return CostUpdate(row.id, None, None, None, False)
    return CostUpdate(row.id, *costs, price.found)


def _changed(row: UsageRow, update: CostUpdate) -> bool:
    return not (row.model_alias_found == update.model_alias_found
                and same_cost(row.input_cost, update.input_cost)
                and same_cost(row.output_cost, update.output_cost)
                and same_cost(row.total_cost, update.total_cost))


async def reprice(database: Database, book: PriceBook, *, since: datetime | None = None, model: str | None = None,
                  dry_run: bool = False, batch_size: int = DEFAULT_BATCH_SIZE) -> RepriceReport:
    """Reprice every matching row, a batch at a time (one transaction per batch)."""
    report = RepriceReport(dry_run=dry_run)
    after_id: str | None = None
    while True:
        rows = await database.usage_rows(after_id=after_id, since=since, model=model, limit=batch_size)
        if not rows:
            break
        updates: list[CostUpdate] = []
        for row in rows:
            update = _repriced(row, book)
            report.examined += 1
            report.cost_before += row.total_cost or _ZERO
            report.cost_after += update.total_cost or _ZERO
            if not _changed(row, update):
                continue
            updates.append(update)
            report.changed += 1
            if update.total_cost is not None and row.total_cost is None:
                report.newly_priced += 1
            elif update.total_cost is None and row.total_cost is not None:
                report.no_longer_priced += 1
            change = report.by_model.setdefault((row.provider, row.model), ModelChange())
            change.rows += 1
            change.cost_before += row.total_cost or _ZERO
            change.cost_after += update.total_cost or _ZERO
        if updates and not dry_run:
            await database.update_costs(updates)
        after_id = rows[-1].id
        if len(rows) < batch_size:
            break
    return report


def _text(value: Decimal) -> str:
    """USD to the stored precision (10 decimal places), without trailing zeros."""
    return f"{value.quantize(Decimal('1e-10')).normalize():f}"


def _usd(value: Decimal) -> str:
    return "$" + _text(value)


def print_report(report: RepriceReport) -> None:
    lines = [
        f"rows examined      {report.examined}",
        f"rows changed       {report.changed}" + (" (dry run: nothing written)" if report.dry_run else ""),
        f"  newly priced     {report.newly_priced}",
        f"  no longer priced {report.no_longer_priced}",
        f"total cost before  {_usd(report.cost_before)}",
        f"total cost after   {_usd(report.cost_after)}",
    ]
    if report.by_model:
        lines.append("")
        rows = [("PROVIDER", "MODEL", "ROWS", "BEFORE", "AFTER")]
        for (provider, model), change in sorted(report.by_model.items(), key=_model_order):
            rows.append((provider, model or "(none)", str(change.rows), _usd(change.cost_before),
                         _usd(change.cost_after)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    print("\n".join(lines))


async def _run(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        print("majordomo: --batch-size must be positive", file=sys.stderr)
        return 2
    try:
        book = price_book(args)
    except OverridesError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 2
    async with connected(args) as database:
        report = await reprice(database, book, since=args.since, model=args.model, dry_run=args.dry_run,
                               batch_size=args.batch_size)
    if args.json:
        print(orjson.dumps(report.as_dict()).decode())
    else:
        print_report(report)
    return 0
