"""Costs checked against the providers' published list prices, worked out by hand.

Every expected value below is written from the per-million-token prices on the providers'
pricing pages, not read back from genai-prices, so a wrong catalog entry or a wrong mapping of our
Usage fields fails here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.usage import Usage

MTOK = Decimal(1_000_000)


def usd(tokens: int, usd_per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd_per_mtok) / MTOK


@dataclass(frozen=True)
class Case:
    provider: str
    model: str
    usage: Usage
    input_cost: Decimal
    output_cost: Decimal
    per_request_cost: Decimal = Decimal(0)
    model_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.provider}/{self.model}"


# A prompt with every kind of input token Anthropic reports: 10k total = 5k plain + 2k cache reads
# + 3k cache writes, of which 1k were written with the 1-hour TTL (so 2k at 5 minutes).
ANTHROPIC_MIX = Usage(
    input_tokens=10_000,
    output_tokens=1_000,
    cached_tokens=2_000,
    cache_creation_tokens=3_000,
    cache_creation_1h_tokens=1_000,
)

CASES = [
    # OpenAI: https://openai.com/api/pricing — cached input is part of prompt_tokens.
    Case(
        "openai",
        "gpt-4o",
        Usage(input_tokens=10_000, output_tokens=2_000, cached_tokens=4_000),
        input_cost=usd(6_000, "2.50") + usd(4_000, "1.25"),
        output_cost=usd(2_000, "10.00"),
        model_id="gpt-4o",
    ),
    Case(
        "openai",
        "gpt-4o-2024-08-06",
        Usage(input_tokens=1_000, output_tokens=500),
        input_cost=usd(1_000, "2.50"),
        output_cost=usd(500, "10.00"),
        model_id="gpt-4o",
    ),
    Case(
        "openai",
        "gpt-4o-mini",
        Usage(input_tokens=50_000, output_tokens=3_000, cached_tokens=20_000),
        input_cost=usd(30_000, "0.15") + usd(20_000, "0.075"),
        output_cost=usd(3_000, "0.60"),
    ),
    # Reasoning models: reasoning tokens are inside output_tokens and billed at the output rate.
    Case(
        "openai",
        "o3",
        Usage(input_tokens=8_000, output_tokens=5_000, cached_tokens=1_000, reasoning_tokens=4_200),
        input_cost=usd(7_000, "2.00") + usd(1_000, "0.50"),
        output_cost=usd(5_000, "8.00"),
    ),
    Case(
        "openai",
        "o4-mini-2025-04-16",
        Usage(input_tokens=8_000, output_tokens=5_000, cached_tokens=2_000, reasoning_tokens=4_000),
        input_cost=usd(6_000, "1.10") + usd(2_000, "0.275"),
        output_cost=usd(5_000, "4.40"),
        model_id="o4-mini",
    ),
    Case(
        "openai",
        "o3-mini",
        Usage(input_tokens=4_000, output_tokens=6_000, reasoning_tokens=5_000),
        input_cost=usd(4_000, "1.10"),
        output_cost=usd(6_000, "4.40"),
    ),
    # Anthropic: https://www.anthropic.com/pricing — 5m writes 1.25x input, 1h writes 2x, reads 0.1x.
    Case(
        "anthropic",
        "claude-sonnet-4-20250514",
        ANTHROPIC_MIX,
        input_cost=usd(5_000, "3") + usd(2_000, "0.30") + usd(2_000, "3.75") + usd(1_000, "6"),
        output_cost=usd(1_000, "15"),
        model_id="claude-sonnet-4-0",
    ),
    Case(
        "anthropic",
        "claude-opus-4-5-20251101",
        ANTHROPIC_MIX,
        input_cost=usd(5_000, "5") + usd(2_000, "0.50") + usd(2_000, "6.25") + usd(1_000, "10"),
        output_cost=usd(1_000, "25"),
        model_id="claude-opus-4-5",
    ),
    Case(
        "anthropic",
        "claude-3-5-haiku-20241022",
        ANTHROPIC_MIX,
        input_cost=usd(5_000, "0.80") + usd(2_000, "0.08") + usd(2_000, "1.00") + usd(1_000, "1.60"),
        output_cost=usd(1_000, "4"),
    ),
    # Web search: $10 per 1,000 searches, on top of tokens.
    Case(
        "anthropic",
        "claude-sonnet-4-20250514",
        Usage(input_tokens=20_000, output_tokens=800, web_search_requests=3),
        input_cost=usd(20_000, "3"),
        output_cost=usd(800, "15"),
        per_request_cost=Decimal(3) * Decimal(10) / Decimal(1_000),
    ),
    # Long context (prompt > 200k tokens): every token, cached or not, moves to the higher rates.
    Case(
        "anthropic",
        "claude-sonnet-4-5-20250929",
        Usage(
            input_tokens=250_000,
            output_tokens=2_000,
            cached_tokens=100_000,
            cache_creation_tokens=50_000,
            cache_creation_1h_tokens=20_000,
        ),
        input_cost=usd(100_000, "6") + usd(100_000, "0.60") + usd(30_000, "7.50") + usd(20_000, "12"),
        output_cost=usd(2_000, "22.50"),
        model_id="claude-sonnet-4-5",
    ),
    # Gemini: https://ai.google.dev/gemini-api/docs/pricing — thinking tokens billed as output.
    Case(
        "gemini",
        "gemini-2.0-flash",
        Usage(input_tokens=100_000, output_tokens=4_000, cached_tokens=60_000),
        input_cost=usd(40_000, "0.10") + usd(60_000, "0.025"),
        output_cost=usd(4_000, "0.40"),
    ),
    Case(
        "gemini",
        "gemini-2.5-flash",
        Usage(input_tokens=30_000, output_tokens=6_000, cached_tokens=10_000, reasoning_tokens=5_000),
        input_cost=usd(20_000, "0.30") + usd(10_000, "0.03"),
        output_cost=usd(6_000, "2.50"),
    ),
    # Gemini 2.5 Pro: "prompts <= 200k tokens" at the base rates, exactly 200k included ...
    Case(
        "gemini",
        "gemini-2.5-pro",
        Usage(input_tokens=200_000, output_tokens=10_000, cached_tokens=50_000, reasoning_tokens=8_000),
        input_cost=usd(150_000, "1.25") + usd(50_000, "0.125"),
        output_cost=usd(10_000, "10"),
    ),
    # ... and one token more switches input, cache reads and output to the > 200k rates.
    Case(
        "gemini",
        "gemini-2.5-pro",
        Usage(input_tokens=200_001, output_tokens=10_000, cached_tokens=50_000, reasoning_tokens=8_000),
        input_cost=usd(150_001, "2.50") + usd(50_000, "0.25"),
        output_cost=usd(10_000, "15"),
    ),
]


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_cost_matches_published_list_price(book: PriceBook, case: Case) -> None:
    price = book.price(case.provider, case.model, case.usage)

    assert price.found
    assert price.input_cost == case.input_cost
    assert price.output_cost == case.output_cost
    assert price.total_cost == case.input_cost + case.output_cost + case.per_request_cost
    assert isinstance(price.total_cost, Decimal)
    if case.model_id is not None:
        assert price.model_id == case.model_id


def test_one_hour_cache_writes_cost_more_than_five_minute_writes(book: PriceBook) -> None:
    # Claude Sonnet 4: 5-minute writes $3.75/MTok, 1-hour writes $6/MTok.
    five_minute = Usage(input_tokens=100_000, output_tokens=0, cache_creation_tokens=100_000)
    one_hour = Usage(
        input_tokens=100_000, output_tokens=0, cache_creation_tokens=100_000, cache_creation_1h_tokens=100_000
    )

    cost_5m = book.price("anthropic", "claude-sonnet-4-20250514", five_minute).total_cost
    cost_1h = book.price("anthropic", "claude-sonnet-4-20250514", one_hour).total_cost

    assert cost_5m == usd(100_000, "3.75")
    assert cost_1h == usd(100_000, "6")


def test_when_selects_the_price_in_force_at_the_time(book: PriceBook) -> None:
    # o3 was $10 / $40 until OpenAI cut it to $2 / $8 on 2025-06-10.
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)

    before = book.price("openai", "o3", usage, when=datetime(2025, 5, 1, tzinfo=UTC))
    after = book.price("openai", "o3", usage, when=datetime(2025, 7, 1, tzinfo=UTC))

    assert (before.input_cost, before.output_cost) == (Decimal(10), Decimal(40))
    assert (after.input_cost, after.output_cost) == (Decimal(2), Decimal(8))
