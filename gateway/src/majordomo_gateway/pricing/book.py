"""PriceBook: what a request cost, from the local overrides first and genai-prices second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import TieredPrices

from majordomo_gateway.pricing.catalog import CATALOG_SOURCE, PROVIDER_IDS, Catalog
from majordomo_gateway.pricing.overrides import EMPTY_OVERRIDES, OverrideModel, OverrideTable
from majordomo_gateway.pricing.price import Price
from majordomo_gateway.pricing.rates import InvalidUsageError, Rate, Rates
from majordomo_gateway.pricing.reload import ReloadingOverrides
from majordomo_gateway.usage import Usage

logger = logging.getLogger("majordomo.pricing")

OVERRIDE_SOURCE = "override"


class _WarnOnce:
    """Logs each distinct problem once per process.

    The keys come from client-supplied model names, so the memory is capped; past the cap we say
    so once instead of growing without bound.
    """

    def __init__(self, max_keys: int = 4096) -> None:
        self._seen: set[tuple[str, ...]] = set()
        self._max_keys = max_keys
        self._overflowed = False

    def warn(self, key: tuple[str, ...], message: str, *args: object) -> None:
        if key in self._seen:
            return
        if len(self._seen) >= self._max_keys:
            if not self._overflowed:
                self._overflowed = True
                logger.warning("too many distinct unpriced models; not warning about further ones")
            return
        self._seen.add(key)
        logger.warning(message, *args)


# Process-wide, so a PriceBook rebuilt on config reload does not repeat old warnings.
_unpriced_warnings = _WarnOnce()


class PriceBook:
    """Prices requests.  ``price()`` runs once per request, so after the first call for a
    (provider, model) it is a dict lookup plus a few Decimal multiplications.

    ``overrides_path`` names a YAML/JSON file of local prices (docs/pricing.md); it wins over the
    catalog and is re-read when it changes.  A bad file raises OverridesError (a ValueError) here,
    and is logged-and-ignored when it goes bad later.
    """

    def __init__(
        self,
        overrides_path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        provider_ids: Mapping[str, str | None] = PROVIDER_IDS,
    ) -> None:
        self._provider_ids = provider_ids
        self._snapshot = get_snapshot()
        self._catalog = Catalog(provider_ids=provider_ids)
        self._overrides = (ReloadingOverrides(overrides_path, clock=clock, known_providers=provider_ids.keys())
                           if overrides_path else None)

    @property
    def overrides_path(self) -> Path | None:
        return self._overrides.path if self._overrides else None

    def price(self, provider: str, model: str | None, usage: Usage, *, when: datetime | None = None) -> Price:
        """The cost of one request.

        ``when`` (default now; naive means UTC) selects the prices in force at that moment, for
        models whose price changed on a date.
        """
        if not model:
            _unpriced_warnings.warn(
                (provider, "", "no-model"), "%s request without a model name: cost not recorded", provider
            )
            return Price.unpriced()

        override = self._current_overrides().find(provider, model)
        if override is not None:
            return self._priced(provider, model, override.rates, override.model, usage)

        match = self._current_catalog().find(provider, model)
        if match is None:
            _unpriced_warnings.warn(
                (provider, model, "unknown"),
                "no price for %s model %r: cost not recorded; add it to the pricing overrides file",
                provider,
                model,
            )
            return Price.unpriced()
        rates = match.rates(when)
        if rates is None or not rates.priceable:
            _unpriced_warnings.warn(
                (provider, model, "unmeasured"),
                "%s model %r (%s) is priced in units the gateway does not count: cost not recorded",
                provider,
                model,
                match.model_id,
            )
            return Price.unpriced(match.model_id)
        return self._priced(provider, model, rates, match.model_id, usage)

    def describe(self, provider: str, model: str, *, when: datetime | None = None) -> dict[str, Any]:
        """The per-unit prices ``price()`` would use for this model, and where they come from.

        Keys are genai-prices price keys: ``*_mtok`` in USD per million tokens, ``*_kcount`` in USD
        per thousand (searches, requests).  A tiered price is
        ``{"base": Decimal, "tiers": [{"start": int, "price": Decimal}, ...]}``.
        """
        description: dict[str, Any] = {
            "provider": provider,
            "model": model,
            "found": False,
            "model_id": None,
            "source": None,
            "prices": {},
            "unmeasured_prices": {},
        }
        override = self._current_overrides().find(provider, model)
        if override is not None:
            return description | _describe_override(override, self.overrides_path)

        match = self._current_catalog().find(provider, model)
        if match is None:
            return description
        rates = match.rates(when)
        description |= {
            "model_id": match.model_id,
            "model_name": match.info.name,
            "source": CATALOG_SOURCE + (" (refreshed)" if self._snapshot.from_auto_update else ""),
            "catalog_provider": match.provider_id,
        }
        if rates is None:
            return description
        unmeasured = rates.unmeasured or {}
        description |= {
            "found": rates.priceable,
            "prices": {key: _describe_rate(rate) for key, rate in rates.items()},
            # Rates for units our Usage does not report (audio, images...): shown, never charged.
            "unmeasured_prices": {key: _describe_rate(rate) for key, rate in unmeasured.items()},
        }
        if match.info.price_comments:
            description["notes"] = match.info.price_comments
        return description

    def _current_catalog(self) -> Catalog:
        # A price refresh (pricing.refresh_url) swaps genai-prices' snapshot; an identity check per
        # call notices it, and the model lookups cached against the old snapshot are dropped with it.
        snapshot = get_snapshot()
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._catalog = Catalog(provider_ids=self._provider_ids)
        return self._catalog

    def _current_overrides(self) -> OverrideTable:
        return self._overrides.current() if self._overrides else EMPTY_OVERRIDES

    def _priced(self, provider: str, model: str, rates: Rates, model_id: str, usage: Usage) -> Price:
        try:
            input_cost, output_cost, total_cost = rates.cost(usage)
        except InvalidUsageError as error:
            _unpriced_warnings.warn(
                (provider, model, "invalid-usage"),
                "inconsistent usage for %s model %r, cost not recorded (provider parser bug?): %s",
                provider,
                model,
                error,
            )
            return Price.unpriced(model_id)
        return Price(
            input_cost=input_cost,
            output_cost=output_cost,
            total_cost=total_cost,
            found=True,
            model_id=model_id,
        )


def _describe_override(override: OverrideModel, path: Path | None) -> dict[str, Any]:
    return {
        "found": True,
        "model_id": override.model,
        "source": OVERRIDE_SOURCE,
        "overrides_file": str(path) if path else None,
        "aliases": list(override.aliases),
        "prices": {key: _describe_rate(rate) for key, rate in override.rates.items()},
    }


def _describe_rate(rate: Rate) -> Decimal | dict[str, Any]:
    if isinstance(rate, TieredPrices):
        return {
            "base": rate.base,
            "tiers": [{"start": tier.start, "price": tier.price} for tier in rate.tiers],
        }
    return rate
