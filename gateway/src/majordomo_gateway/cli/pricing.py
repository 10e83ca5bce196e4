"""``majordomo pricing ...``: the prices the gateway uses, and the models it could not price."""

from __future__ import annotations

import argparse
import asyncio
import sys
import textwrap
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import orjson

from majordomo_gateway.cli.context import connected, settings_from
from majordomo_gateway.config import pricing_ids
from majordomo_gateway.pricing import PROVIDER_IDS, OverridesError, PriceBook

#: price key → (label, unit), in the order a table shows them
PRICE_LABELS: dict[str, tuple[str, str]] = {
    "input_mtok": ("input", "per 1M tokens"),
    "cache_read_mtok": ("cache read", "per 1M tokens"),
    "cache_write_mtok": ("cache write (5m)", "per 1M tokens"),
    "cache_write_5m_mtok": ("cache write (5m)", "per 1M tokens"),
    "cache_write_1h_mtok": ("cache write (1h)", "per 1M tokens"),
    "output_mtok": ("output", "per 1M tokens"),
    "output_reasoning_mtok": ("reasoning output", "per 1M tokens"),
    "web_searches_kcount": ("web search", "per 1K searches"),
    "requests_kcount": ("request", "per 1K requests"),
}


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    pricing = commands.add_parser("pricing", help="inspect prices and unpriced models",
                                  description="Inspect the prices the gateway charges (genai-prices catalog "
                                              "plus pricing.overrides_file) and the models it could not price.")
    sub = pricing.add_subparsers(dest="pricing_command", metavar="COMMAND", required=True)

    show = sub.add_parser("show", help="show the prices used for a model",
                          description="Show the per-unit prices the gateway uses for MODEL, and where they come "
                                      "from. Without --provider, every provider that prices the name is shown.")
    show.add_argument("model", metavar="MODEL", help="the model name as clients send it")
    show.add_argument("--provider", help="only this provider: openai, anthropic, gemini, or one configured under "
                                         "providers: (majordomo.yaml or MAJORDOMO_PROVIDERS_<NAME>_KIND)")
    show.set_defaults(handler=_show)

    unpriced = sub.add_parser("unpriced", help="list models seen without a price",
                              description="List the models that requests used but the gateway could not price "
                                          "(usage recorded, cost NULL), per provider, with request counts. Add "
                                          "them to the overrides file, then run `majordomo reprice`.")
    unpriced.set_defaults(handler=lambda a: asyncio.run(_unpriced(a)))

    for parser in (show, unpriced):
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)


def price_book(args: argparse.Namespace) -> PriceBook:
    """The price book `majordomo serve` would use with the same configuration."""
    settings = settings_from(args)
    return PriceBook(settings.pricing.overrides_file, provider_ids=pricing_ids(settings))


def json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__}")


def _amount(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return f"${text}"


def _price_rows(prices: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    keys = [k for k in PRICE_LABELS if k in prices] + sorted(k for k in prices if k not in PRICE_LABELS)
    for key in keys:
        label, unit = PRICE_LABELS.get(key, (key, ""))
        rate = prices[key]
        if isinstance(rate, dict):
            rows.append((label, _amount(rate["base"]), unit))
            for tier in rate["tiers"]:
                rows.append((f"  prompt > {tier['start']:,} tokens", _amount(tier["price"]), unit))
        else:
            rows.append((label, _amount(rate), unit))
    return rows


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def describe_text(description: dict[str, Any]) -> list[str]:
    lines = [f"{description['provider']} / {description['model']}"]
    if not description["model_id"]:
        lines.append("  no price: requests are stored with a NULL cost (add the model to the overrides file)")
        return lines
    source = description["source"]
    if description.get("overrides_file"):
        source += f" ({description['overrides_file']})"
    matched = description["model_id"]
    if description.get("model_name"):
        matched += f" ({description['model_name']})"
    catalog_provider = description.get("catalog_provider")
    if catalog_provider and catalog_provider != PROVIDER_IDS.get(description["provider"]):
        # genai-prices' own fallbacks, e.g. Claude models served through Google.
        source += f", listed under {catalog_provider}"
    lines += [f"  matched  {matched}", f"  source   {source}"]
    if not description["found"]:
        lines.append("  not priced: the catalog prices this model only in units the gateway does not count")
    if description["prices"]:
        lines += ["  " + line for line in _table([("PRICE", "USD", "UNIT"), *_price_rows(description["prices"])])]
    elif description["found"]:
        lines.append("  free: the catalog lists no price")
    if description.get("unmeasured_prices"):
        lines.append("  not charged (units the gateway does not count):")
        lines += ["    " + line for line in _table(_price_rows(description["unmeasured_prices"]))]
    notes = description.get("notes")
    for note in [notes] if isinstance(notes, str) else notes or ():
        lines += textwrap.wrap(str(note), width=100, initial_indent="  note: ", subsequent_indent="        ",
                               break_long_words=False, break_on_hyphens=False)
    return lines


def _show(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    known = sorted(pricing_ids(settings))
    if args.provider is not None and args.provider not in known:
        print(f"majordomo: unknown provider {args.provider!r}; the configured ones are {', '.join(known)}",
              file=sys.stderr)
        return 2
    try:
        book = PriceBook(settings.pricing.overrides_file, provider_ids=pricing_ids(settings))
    except OverridesError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 2
    providers = [args.provider] if args.provider else known
    descriptions = [book.describe(provider, args.model) for provider in providers]
    if not args.provider:
        # Without --provider only the providers that know the name are interesting.
        descriptions = [d for d in descriptions if d["model_id"]]
    if args.json:
        print(orjson.dumps(descriptions, default=json_default).decode())
        return 0 if any(d["found"] for d in descriptions) else 1
    if not descriptions:
        print(f"no provider prices {args.model!r}: requests for it are stored with a NULL cost "
              "(add it to the pricing overrides file, see docs/pricing.md)")
        return 1
    print("\n\n".join("\n".join(describe_text(d)) for d in descriptions))
    return 0 if any(d["found"] for d in descriptions) else 1


async def _unpriced(args: argparse.Namespace) -> int:
    try:
        book = price_book(args)
    except OverridesError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 2
    async with connected(args) as database:
        models = await database.unpriced_models()
    entries: list[dict[str, Any]] = [{
        "provider": m.provider,
        "model": m.model,
        "requests": m.requests,
        "first_seen": m.first_seen.isoformat(),
        "last_seen": m.last_seen.isoformat(),
        # Priced by the current prices (e.g. a model since added to the overrides file): reprice.
        "priced_now": bool(m.model and book.describe(m.provider, m.model)["found"]),
    } for m in models]
    if args.json:
        print(orjson.dumps(entries).decode())
        return 0
    if not entries:
        print("every request with usage was priced")
        return 0
    rows = [("PROVIDER", "MODEL", "REQUESTS", "LAST SEEN", "PRICED NOW")]
    rows += [(e["provider"], e["model"] or "(none)", str(e["requests"]), e["last_seen"][:19],
              "yes" if e["priced_now"] else "no") for e in entries]
    print("\n".join(_table(rows)))
    if any(e["priced_now"] for e in entries):
        print("\nModels priced now can be repriced: majordomo reprice --dry-run")
    return 0
