"""The genai-prices catalog, looked up by our provider names, with the model matching cached."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import genai_prices
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelInfo, ModelPrice

from majordomo_gateway.pricing.rates import InvalidRatesError, Rates
from majordomo_gateway.providers.registry import CATALOG_IDS

logger = logging.getLogger("majordomo.pricing")

#: our built-in provider names (``llm_requests.provider``) -> genai-prices provider id; each
#: provider module owns its id, configured providers add theirs (config.pricing_ids).
PROVIDER_IDS: Mapping[str, str] = CATALOG_IDS

CATALOG_SOURCE = f"genai-prices {genai_prices.__version__}"

# Model names come from client requests, so the set of distinct names is attacker-controlled;
# the cache must not grow without bound.
DEFAULT_MAX_CACHED_LOOKUPS = 4096


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """One matched catalog model with its rates read ahead of time."""

    provider_id: str
    info: ModelInfo
    #: Rates per ModelPrice object (by identity): one entry, or one per dated price change.
    _rates_by_price: dict[int, tuple[ModelPrice, Rates | None]] = field(repr=False)

    @property
    def model_id(self) -> str:
        return self.info.id

    def rates(self, when: datetime | None = None) -> Rates | None:
        """The rates in force at ``when`` (default now); None if the catalog entry is unusable."""
        if isinstance(self.info.prices, ModelPrice):
            model_price = self.info.prices
        else:
            # Prices that changed on a date: let genai-prices pick the one in force.
            model_price = self.info.get_prices(when or datetime.now(tz=UTC))
        cached = self._rates_by_price.get(id(model_price))
        if cached is not None and cached[0] is model_price:
            return cached[1]
        return _read_rates(self.info, model_price)


class Catalog:
    """Finds the genai-prices model for (our provider, model name), remembering the answer.

    genai-prices matches a name by trying each model's match rules in turn, too slow to repeat per
    request (worst for names it does not know, which it never caches; see docs/performance.md).
    We remember hits and misses in a bounded dict, evicting the oldest entry when full.
    """

    def __init__(self, *, max_cached_lookups: int = DEFAULT_MAX_CACHED_LOOKUPS,
                 provider_ids: Mapping[str, str | None] = PROVIDER_IDS) -> None:
        # Our provider name -> genai-prices id; configured providers add theirs (or None: unpriced).
        self._provider_ids = provider_ids
        snapshot = get_snapshot()
        self._all_providers = snapshot.providers
        self._providers = {provider.id: provider for provider in snapshot.providers}
        self._max_cached_lookups = max_cached_lookups
        self._lookups: dict[tuple[str, str], CatalogModel | None] = {}

    def find(self, provider: str, model: str) -> CatalogModel | None:
        key = (provider, model)
        try:
            return self._lookups[key]
        except KeyError:
            pass
        found = self._match(provider, model)
        if len(self._lookups) >= self._max_cached_lookups:
            del self._lookups[next(iter(self._lookups))]
        self._lookups[key] = found
        return found

    def cached_lookups(self) -> int:
        return len(self._lookups)

    def _match(self, provider: str, model: str) -> CatalogModel | None:
        provider_id = self._provider_ids.get(provider)
        catalog_provider = self._providers.get(provider_id) if provider_id else None
        if catalog_provider is None:
            return None
        # Scoped to the one provider (plus genai-prices' own fallbacks, e.g. Google -> Anthropic
        # for Claude on Vertex): the same name can cost differently elsewhere.
        info = catalog_provider.find_model(model, all_providers=self._all_providers)
        if info is None:
            return None
        if isinstance(info.prices, ModelPrice):
            model_prices = [info.prices]
        else:
            model_prices = [conditional.prices for conditional in info.prices]
        rates_by_price = {
            id(model_price): (model_price, _read_rates(info, model_price)) for model_price in model_prices
        }
        return CatalogModel(provider_id=catalog_provider.id, info=info, _rates_by_price=rates_by_price)


def _read_rates(info: ModelInfo, model_price: ModelPrice) -> Rates | None:
    try:
        return Rates.from_model_price(model_price)
    except InvalidRatesError as error:
        logger.error("genai-prices entry for %r is unusable, treating it as unpriced: %s", info.id, error)
        return None
