"""Our arithmetic (pricing/rates.py) must agree with genai-prices' own to the last digit.

PriceBook reads genai-prices' rate tables but does the multiplication itself for speed; these
tests run every price table of the three providers through both and compare, so an upgrade of
genai-prices that changes the rules fails here rather than in the bills.
"""

from __future__ import annotations

from decimal import Decimal

import genai_prices
import pytest
from genai_prices.data_snapshot import get_snapshot
from genai_prices.types import ModelPrice
from majordomo_gateway.pricing import PROVIDER_IDS, PriceBook
from majordomo_gateway.pricing.rates import Rates
from majordomo_gateway.usage import Usage

USAGES = [
    Usage(),
    Usage(input_tokens=1_234, output_tokens=567),
    Usage(input_tokens=10_000, output_tokens=3_000, cached_tokens=2_500, reasoning_tokens=2_000),
    Usage(
        input_tokens=10_000,
        output_tokens=1_000,
        cached_tokens=2_000,
        cache_creation_tokens=3_000,
        cache_creation_1h_tokens=1_000,
        web_search_requests=2,
    ),
    # Past every tier boundary in the catalog (128k, 200k, 272k).
    Usage(
        input_tokens=300_001,
        output_tokens=20_000,
        cached_tokens=100_000,
        cache_creation_tokens=50_000,
        cache_creation_1h_tokens=50_000,
        reasoning_tokens=15_000,
        web_search_requests=1,
    ),
    Usage(input_tokens=200_000, output_tokens=1, cache_creation_tokens=200_000),
]


def genai_usage(usage: Usage) -> genai_prices.Usage:
    return genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cached_tokens,
        # genai-prices insists on the total whenever the per-TTL split is given.
        cache_write_tokens=usage.cache_creation_tokens,
        cache_write_5m_tokens=usage.cache_creation_tokens - usage.cache_creation_1h_tokens,
        cache_write_1h_tokens=usage.cache_creation_1h_tokens,
        output_reasoning_tokens=usage.reasoning_tokens,
        web_searches=usage.web_search_requests,
    )


def catalog_price_tables() -> list[tuple[str, ModelPrice]]:
    tables = []
    providers = {provider.id: provider for provider in get_snapshot().providers}
    for provider_id in PROVIDER_IDS.values():
        for model in providers[provider_id].models:
            if isinstance(model.prices, ModelPrice):
                tables.append((f"{provider_id}/{model.id}", model.prices))
            else:
                for index, conditional in enumerate(model.prices):
                    tables.append((f"{provider_id}/{model.id}#{index}", conditional.prices))
    return tables


TABLES = catalog_price_tables()


def test_catalog_covers_the_three_providers() -> None:
    assert len(TABLES) > 150


@pytest.mark.parametrize(("name", "model_price"), TABLES, ids=[name for name, _ in TABLES])
def test_rates_match_genai_prices_for_every_catalog_table(name: str, model_price: ModelPrice) -> None:
    rates = Rates.from_model_price(model_price)
    for usage in USAGES:
        expected = model_price.calc_price(genai_usage(usage))
        input_cost, output_cost, total_cost = rates.cost(usage)
        assert (input_cost, output_cost, total_cost) == (
            expected["input_price"],
            expected["output_price"],
            expected["total_price"],
        ), f"{name} {usage}"


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("openai", "gpt-4o-2024-11-20"),
        ("openai", "ft:gpt-4o-mini-2024-07-18:acme::abc123"),
        ("openai", "gpt-5-mini"),
        ("openai", "o3-2025-04-16"),
        ("anthropic", "claude-3-7-sonnet-20250219"),
        ("anthropic", "claude-opus-4-1-20250805"),
        ("anthropic", "claude-haiku-4-5"),
        ("gemini", "gemini-2.5-flash-lite"),
        ("gemini", "gemini-1.5-pro-002"),
        ("gemini", "gemini-3-pro-preview"),
    ],
)
def test_price_book_matches_genai_calc_price_end_to_end(provider: str, model: str) -> None:
    book = PriceBook()
    for usage in USAGES:
        expected = genai_prices.calc_price(genai_usage(usage), model, provider_id=PROVIDER_IDS[provider])
        price = book.price(provider, model, usage)
        assert price.found
        assert price.model_id == expected.model.id
        assert (price.input_cost, price.output_cost, price.total_cost) == (
            expected.input_price,
            expected.output_price,
            expected.total_price,
        )
        assert isinstance(price.total_cost, Decimal)
