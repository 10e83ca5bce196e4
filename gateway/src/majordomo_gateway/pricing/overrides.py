"""The local price-override file: its format, its validation, and lookups into it.

Format (YAML, or the same structure as JSON), prices in USD per million tokens::

    models:
      - provider: openai                  # our provider name: openai, anthropic, gemini
        model: ft:gpt-4o-mini-2024-07-18:acme::*   # exact name, or a prefix ending in "*"
        aliases: [acme-mini]              # optional, more names for the same prices
        prices:
          input_mtok: 0.30                # or tiered: {base: 0.30, tiers: [{start: 200000, price: 0.60}]}
          output_mtok: 1.20
          cache_read_mtok: 0.15

See docs/pricing.md for every key.  An entry replaces the catalog's prices for that model
entirely (no merging), so what you read in the file is exactly what is charged.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, cast

import yaml
from genai_prices.types import Tier, TieredPrices

from majordomo_gateway.pricing.catalog import PROVIDER_IDS
from majordomo_gateway.pricing.rates import InvalidRatesError, Rate, Rates

OVERRIDE_PRICE_KEYS: tuple[str, ...] = (
    "input_mtok",
    "output_mtok",
    "cache_read_mtok",
    "cache_write_mtok",
    "cache_write_1h_mtok",
    "output_reasoning_mtok",
    "web_searches_kcount",
)
# Required so a missing key can never silently bill a direction at $0; write 0 for a truly free one.
REQUIRED_PRICE_KEYS: tuple[str, ...] = ("input_mtok", "output_mtok")

_ENTRY_KEYS = frozenset({"provider", "model", "aliases", "prices"})
_TIER_KEYS = frozenset({"base", "tiers"})
_TIER_STEP_KEYS = frozenset({"start", "price"})
_PREFIX_MARK = "*"


class OverridesError(ValueError):
    """The override file is missing, unreadable or invalid; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class OverrideModel:
    provider: str
    model: str
    aliases: tuple[str, ...]
    rates: Rates


class OverrideTable:
    """Override entries indexed by (provider, lower-cased name); exact names beat prefixes."""

    def __init__(self, models: Sequence[OverrideModel] = (), source: Path | None = None) -> None:
        self.models = tuple(models)
        self.source = source
        self._exact: dict[tuple[str, str], OverrideModel] = {}
        prefixes: list[tuple[str, str, OverrideModel]] = []
        for entry in self.models:
            for name in (entry.model, *entry.aliases):
                lowered = name.lower()
                if lowered.endswith(_PREFIX_MARK):
                    prefixes.append((entry.provider, lowered[: -len(_PREFIX_MARK)], entry))
                else:
                    self._exact[(entry.provider, lowered)] = entry
        # Longest prefix first, so a more specific pattern wins.
        prefixes.sort(key=lambda item: len(item[1]), reverse=True)
        self._prefixes = tuple(prefixes)

    def __len__(self) -> int:
        return len(self.models)

    def find(self, provider: str, model: str) -> OverrideModel | None:
        if not self.models:
            return None
        lowered = model.lower()
        entry = self._exact.get((provider, lowered))
        if entry is not None:
            return entry
        for prefix_provider, prefix, candidate in self._prefixes:
            if prefix_provider == provider and lowered.startswith(prefix):
                return candidate
        return None


EMPTY_OVERRIDES = OverrideTable()


def load_overrides(path: Path, known_providers: Collection[str] = PROVIDER_IDS.keys()) -> OverrideTable:
    """Read and validate the override file; raises OverridesError naming the file and key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OverridesError(f"pricing overrides {path}: file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise OverridesError(f"pricing overrides {path}: cannot read: {error}") from None
    data = _decode(path, text)
    try:
        models = parse_overrides(data, known_providers)
    except OverridesError as error:
        raise OverridesError(f"pricing overrides {path}: {error}") from None
    return OverrideTable(models, source=path)


def parse_overrides(data: object, known_providers: Collection[str] = PROVIDER_IDS.keys()) -> list[OverrideModel]:
    """Validate the decoded document; errors name the offending key, e.g. ``models[2].prices``."""
    if data is None:
        raise OverridesError("the file is empty; expected a mapping with a 'models' list")
    if not isinstance(data, Mapping):
        raise OverridesError(f"top level must be a mapping with a 'models' list, got {_kind(data)}")
    unknown = set(data) - {"models"}
    if unknown:
        raise OverridesError(f"unknown top-level key {_names(unknown)}; the only key is 'models'")
    raw_models = data.get("models")
    if not isinstance(raw_models, list):
        raise OverridesError(f"'models' must be a list, got {_kind(raw_models)}")

    models: list[OverrideModel] = []
    claimed: dict[tuple[str, str], str] = {}
    for index, raw_entry in enumerate(raw_models):
        where = f"models[{index}]"
        entry = _parse_entry(raw_entry, where, known_providers)
        where = f"{where} ({entry.provider}/{entry.model})"
        for name in (entry.model, *entry.aliases):
            key = (entry.provider, name.lower())
            if key in claimed:
                raise OverridesError(f"{where}: name {name!r} is already used by {claimed[key]}")
            claimed[key] = where
        models.append(entry)
    return models


def _decode(path: Path, text: str) -> object:
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise OverridesError(f"pricing overrides {path}: not valid YAML: {error}") from None
    if suffix == ".json":
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise OverridesError(f"pricing overrides {path}: not valid JSON: {error}") from None
    raise OverridesError(
        f"pricing overrides {path}: unsupported extension {suffix!r}; use .yaml, .yml or .json"
    )


def _parse_entry(raw: object, where: str, known_providers: Collection[str]) -> OverrideModel:
    if not isinstance(raw, Mapping):
        raise OverridesError(f"{where}: each model must be a mapping, got {_kind(raw)}")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise OverridesError(f"{where}: unknown key {_names(unknown)}; expected {_names(_ENTRY_KEYS)}")

    provider = raw.get("provider")
    if not isinstance(provider, str) or provider not in known_providers:
        raise OverridesError(f"{where}.provider: must be one of {_names(known_providers)}, got {provider!r}")
    model = _parse_name(raw.get("model"), f"{where}.model")
    where = f"{where} ({provider}/{model})"

    raw_aliases = raw.get("aliases", [])
    if not isinstance(raw_aliases, list):
        raise OverridesError(f"{where}.aliases: must be a list of names, got {_kind(raw_aliases)}")
    aliases = tuple(_parse_name(alias, f"{where}.aliases[{i}]") for i, alias in enumerate(raw_aliases))

    rates = _parse_prices(raw.get("prices"), f"{where}.prices")
    return OverrideModel(provider=provider, model=model, aliases=aliases, rates=rates)


def _parse_name(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise OverridesError(f"{where}: must be a non-empty model name, got {raw!r}")
    if _PREFIX_MARK in raw[:-1]:
        raise OverridesError(f"{where}: '*' is only allowed at the end (a prefix match), got {raw!r}")
    return raw.strip()


def _parse_prices(raw: object, where: str) -> Rates:
    if not isinstance(raw, Mapping):
        raise OverridesError(f"{where}: must be a mapping of price keys, got {_kind(raw)}")
    unknown = set(raw) - set(OVERRIDE_PRICE_KEYS)
    if unknown:
        raise OverridesError(
            f"{where}: unknown price key {_names(unknown)}; expected some of {_names(OVERRIDE_PRICE_KEYS)}"
        )
    missing = [key for key in REQUIRED_PRICE_KEYS if key not in raw]
    if missing:
        raise OverridesError(f"{where}: missing {_names(missing)} (write 0 if it is really free)")
    rates: dict[str, Rate] = {key: _parse_rate(value, f"{where}.{key}") for key, value in raw.items()}
    try:
        # The keys were checked against OVERRIDE_PRICE_KEYS above: each is a Rate field of Rates.
        return Rates(**cast("dict[str, Any]", rates))
    except InvalidRatesError as error:
        raise OverridesError(f"{where}: {error}") from None


def _parse_rate(raw: object, where: str) -> Rate:
    if isinstance(raw, Mapping):
        return _parse_tiers(raw, where)
    return _parse_amount(raw, where)


def _parse_tiers(raw: Mapping[object, object], where: str) -> TieredPrices:
    if set(raw) != _TIER_KEYS:
        raise OverridesError(f"{where}: a tiered price needs exactly the keys 'base' and 'tiers'")
    raw_tiers = raw["tiers"]
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise OverridesError(f"{where}.tiers: must be a non-empty list of {{start, price}}")
    tiers: list[Tier] = []
    for index, raw_tier in enumerate(raw_tiers):
        tier_where = f"{where}.tiers[{index}]"
        if not isinstance(raw_tier, Mapping) or set(raw_tier) != _TIER_STEP_KEYS:
            raise OverridesError(f"{tier_where}: must be a mapping with exactly 'start' and 'price'")
        start = raw_tier["start"]
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise OverridesError(f"{tier_where}.start: must be a whole number of prompt tokens >= 0")
        if tiers and start <= tiers[-1].start:
            raise OverridesError(f"{tier_where}.start: tiers must be listed in increasing order of start")
        tiers.append(Tier(start=start, price=_parse_amount(raw_tier["price"], f"{tier_where}.price")))
    return TieredPrices(base=_parse_amount(raw["base"], f"{where}.base"), tiers=tiers)


def _parse_amount(raw: object, where: str) -> Decimal:
    # YAML reads 0.30 as a float; going through its shortest repr gives Decimal("0.3"), not the
    # binary approximation.
    if isinstance(raw, bool):
        amount = None
    elif isinstance(raw, int):
        amount = Decimal(raw)
    elif isinstance(raw, float):
        amount = Decimal(repr(raw)) if math.isfinite(raw) else None
    elif isinstance(raw, str):
        try:
            amount = Decimal(raw.strip())
        except InvalidOperation:
            amount = None
    else:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise OverridesError(f"{where}: must be a price in USD >= 0, got {raw!r}")
    return amount


def _names(keys: Iterable[object]) -> str:
    return ", ".join(repr(key) for key in sorted(str(key) for key in keys))


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__
