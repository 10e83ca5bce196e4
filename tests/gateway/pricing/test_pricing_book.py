"""PriceBook behaviour around the edges: unpriced models, provider scoping, caching, describe."""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

import genai_prices
import pytest
from genai_prices.types import Provider
from majordomo_gateway.pricing import CATALOG_SOURCE, PriceBook
from majordomo_gateway.pricing.catalog import Catalog
from majordomo_gateway.usage import Usage

USAGE = Usage(input_tokens=1_000, output_tokens=100)
LOGGER = "majordomo.pricing"


def unique_model() -> str:
    # The unpriced warning is once per process, so every test needs names no other test used.
    return f"no-such-model-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def book() -> PriceBook:
    return PriceBook()


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == LOGGER and record.levelno == logging.WARNING and text in record.getMessage()
    ]


def test_unknown_model_is_unpriced_not_free(book: PriceBook) -> None:
    price = book.price("openai", unique_model(), USAGE)

    assert not price.found
    assert (price.input_cost, price.output_cost, price.total_cost) == (None, None, None)
    assert price.model_id is None


def test_unknown_model_warns_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    model = unique_model()
    caplog.set_level(logging.WARNING, logger=LOGGER)

    for _ in range(3):
        PriceBook().price("anthropic", model, USAGE)
    PriceBook().price("gemini", model, USAGE)

    assert len(warnings_about(caplog, f"anthropic model '{model}'")) == 1
    assert len(warnings_about(caplog, f"gemini model '{model}'")) == 1


def test_missing_model_name_is_unpriced(book: PriceBook) -> None:
    assert book.price("openai", None, USAGE) == book.price("openai", "", USAGE)
    assert not book.price("openai", None, USAGE).found


def test_unknown_provider_is_unpriced(book: PriceBook) -> None:
    assert not book.price("azure", "gpt-4o", USAGE).found


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        ("anthropic", "gpt-4o"),
        ("gemini", "gpt-4o"),
        ("openai", "claude-sonnet-4-20250514"),
        ("openai", "gemini-2.5-pro"),
        ("anthropic", "gemini-2.5-pro"),
    ],
)
def test_models_are_only_found_at_their_own_provider(book: PriceBook, provider: str, model: str) -> None:
    assert not book.price(provider, model, USAGE).found


def test_same_model_name_can_cost_differently_per_provider(book: PriceBook) -> None:
    # genai-prices lists Claude on Vertex under Google without a 1-hour cache-write rate, so a 1h
    # write there is charged at the 5-minute rate; Anthropic's own API charges $6/MTok.
    usage = Usage(input_tokens=1_000_000, cache_creation_tokens=1_000_000, cache_creation_1h_tokens=1_000_000)

    anthropic = book.price("anthropic", "claude-sonnet-4", usage)
    vertex = book.price("gemini", "claude-sonnet-4", usage)

    assert anthropic.total_cost == Decimal(6)
    assert vertex.total_cost == Decimal("3.75")


def test_model_billed_only_in_unmeasured_units_is_unpriced(
    book: PriceBook, caplog: pytest.LogCaptureFixture
) -> None:
    # whisper-1 is billed per audio minute, which Usage does not carry: $0 would be a lie.
    caplog.set_level(logging.WARNING, logger=LOGGER)

    price = book.price("openai", "whisper-1", Usage(input_tokens=10))

    assert not price.found
    assert price.total_cost is None
    assert price.model_id == "whisper-1"


def test_model_the_catalog_lists_as_free_costs_zero(book: PriceBook) -> None:
    # Gemma on the Gemini API has no charge; the catalog says so explicitly with an empty price.
    price = book.price("gemini", "gemma-3-27b-it", USAGE)

    assert price.found
    assert price.total_cost == Decimal(0)


def test_inconsistent_usage_is_unpriced_with_a_warning(
    book: PriceBook, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    bad = Usage(input_tokens=100, output_tokens=10, cached_tokens=500)

    price = book.price("openai", "gpt-4o-mini", bad)

    assert not price.found
    assert price.total_cost is None
    assert warnings_about(caplog, "inconsistent usage")


def test_repeated_lookups_match_the_model_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = Provider.find_model

    def counting_find_model(self: Provider, model_ref: str, **kwargs: object) -> object:
        calls.append(model_ref)
        return original(self, model_ref, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Provider, "find_model", counting_find_model)
    book = PriceBook()
    missing = unique_model()

    for _ in range(5):
        book.price("openai", "gpt-4o", USAGE)
        book.price("openai", missing, USAGE)

    assert calls == ["gpt-4o", missing]


def test_lookup_cache_is_bounded() -> None:
    catalog = Catalog(max_cached_lookups=3)

    for index in range(10):
        catalog.find("openai", f"random-name-{index}")
    catalog.find("openai", "gpt-4o")

    assert catalog.cached_lookups() == 3
    assert catalog.find("openai", "gpt-4o") is not None


def test_describe_catalog_model(book: PriceBook) -> None:
    description = book.describe("anthropic", "claude-sonnet-4-20250514")

    assert description["found"] is True
    assert description["model_id"] == "claude-sonnet-4-0"
    assert description["source"] == CATALOG_SOURCE == f"genai-prices {genai_prices.__version__}"
    prices = description["prices"]
    assert prices["input_mtok"] == Decimal(3)
    assert prices["output_mtok"] == Decimal(15)
    assert prices["cache_read_mtok"] == Decimal("0.3")
    assert prices["cache_write_mtok"] == Decimal("3.75")
    assert prices["cache_write_1h_mtok"] == Decimal(6)
    assert prices["web_searches_kcount"] == Decimal(10)


def test_describe_shows_tiers(book: PriceBook) -> None:
    prices = book.describe("gemini", "gemini-2.5-pro")["prices"]

    assert prices["input_mtok"] == {
        "base": Decimal("1.25"),
        "tiers": [{"start": 200_000, "price": Decimal("2.5")}],
    }


def test_describe_unknown_model(book: PriceBook) -> None:
    description = book.describe("openai", unique_model())

    assert description["found"] is False
    assert description["source"] is None
    assert description["prices"] == {}


def test_describe_lists_rates_the_gateway_does_not_charge(book: PriceBook) -> None:
    description = book.describe("openai", "gpt-4o-realtime-preview")

    assert description["found"] is True
    assert "input_audio_mtok" in description["unmeasured_prices"]
    assert "input_audio_mtok" not in description["prices"]
