"""The local override file: adding, aliasing and correcting prices, and rejecting bad files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from majordomo_gateway.pricing import OverridesError, PriceBook
from majordomo_gateway.usage import Usage

MTOK = Decimal(1_000_000)


def usd(tokens: int, usd_per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd_per_mtok) / MTOK


def write(tmp_path: Path, text: str, name: str = "pricing.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


FINE_TUNE = """
models:
  - provider: openai
    model: ft:gpt-4o-mini:acme:2025
    aliases: [acme-mini, Acme-Mini-Latest]
    prices:
      input_mtok: 0.30
      output_mtok: 1.20
      cache_read_mtok: 0.15
"""


def test_override_adds_a_model_the_catalog_does_not_know(tmp_path: Path) -> None:
    book = PriceBook(write(tmp_path, FINE_TUNE))
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cached_tokens=4_000)

    price = book.price("openai", "ft:gpt-4o-mini:acme:2025", usage)

    assert price.found
    assert price.model_id == "ft:gpt-4o-mini:acme:2025"
    assert price.input_cost == usd(6_000, "0.30") + usd(4_000, "0.15")
    assert price.output_cost == usd(2_000, "1.20")
    assert price.total_cost == price.input_cost + price.output_cost


@pytest.mark.parametrize("name", ["acme-mini", "ACME-MINI", "acme-mini-latest"])
def test_aliases_price_like_the_model_case_insensitively(tmp_path: Path, name: str) -> None:
    book = PriceBook(write(tmp_path, FINE_TUNE))

    price = book.price("openai", name, Usage(input_tokens=1_000_000))

    assert price.model_id == "ft:gpt-4o-mini:acme:2025"
    assert price.total_cost == Decimal("0.3")


def test_overrides_are_provider_scoped(tmp_path: Path) -> None:
    book = PriceBook(write(tmp_path, FINE_TUNE))

    assert not book.price("anthropic", "acme-mini", Usage(input_tokens=10)).found


def test_override_corrects_a_catalog_price(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - provider: openai
    model: gpt-4o
    prices: {input_mtok: "2.00", output_mtok: "8.00"}
""",
    )
    book = PriceBook(path)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=500_000)

    price = book.price("openai", "gpt-4o", usage)

    # The entry replaces the catalog's prices entirely: no cache_read_mtok, so reads are input.
    assert (price.input_cost, price.output_cost) == (Decimal(2), Decimal(8))
    # Names the override does not mention still come from the catalog.
    assert book.price("openai", "gpt-4o-2024-08-06", usage).input_cost == usd(500_000, "2.5") + usd(
        500_000, "1.25"
    )
    assert book.describe("openai", "gpt-4o")["source"] == "override"


def test_override_with_long_context_tiers_and_cache_ttls(tmp_path: Path) -> None:
    # genai-prices has no > 200k tier for Claude Sonnet 4; Anthropic charges $6 / $22.50 there.
    path = write(
        tmp_path,
        """
models:
  - provider: anthropic
    model: claude-sonnet-4-20250514
    aliases: [claude-sonnet-4-0, claude-sonnet-4]
    prices:
      input_mtok: {base: 3, tiers: [{start: 200000, price: 6}]}
      output_mtok: {base: 15, tiers: [{start: 200000, price: 22.50}]}
      cache_read_mtok: {base: 0.30, tiers: [{start: 200000, price: 0.60}]}
      cache_write_mtok: {base: 3.75, tiers: [{start: 200000, price: 7.50}]}
      cache_write_1h_mtok: {base: 6, tiers: [{start: 200000, price: 12}]}
      web_searches_kcount: 10
""",
    )
    book = PriceBook(path)
    short = Usage(
        input_tokens=10_000, output_tokens=1_000, cache_creation_tokens=4_000, cache_creation_1h_tokens=1_000
    )
    long = Usage(
        input_tokens=300_000,
        output_tokens=1_000,
        cached_tokens=100_000,
        cache_creation_tokens=50_000,
        cache_creation_1h_tokens=10_000,
        web_search_requests=2,
    )

    short_price = book.price("anthropic", "claude-sonnet-4", short)
    long_price = book.price("anthropic", "claude-sonnet-4-20250514", long)

    assert short_price.input_cost == usd(6_000, "3") + usd(3_000, "3.75") + usd(1_000, "6")
    assert long_price.input_cost == (
        usd(150_000, "6") + usd(100_000, "0.60") + usd(40_000, "7.50") + usd(10_000, "12")
    )
    assert long_price.output_cost == usd(1_000, "22.50")
    assert long_price.total_cost == long_price.input_cost + long_price.output_cost + Decimal("0.02")
    described = book.describe("anthropic", "claude-sonnet-4")
    assert described["prices"]["output_mtok"] == {
        "base": Decimal(15),
        "tiers": [{"start": 200_000, "price": Decimal("22.5")}],
    }
    assert described["aliases"] == ["claude-sonnet-4-0", "claude-sonnet-4"]


def test_override_reasoning_rate(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - provider: gemini
    model: gemini-custom-thinker
    prices: {input_mtok: 1, output_mtok: 4, output_reasoning_mtok: 2}
""",
    )
    usage = Usage(input_tokens=1_000, output_tokens=10_000, reasoning_tokens=6_000)

    price = PriceBook(path).price("gemini", "gemini-custom-thinker", usage)

    assert price.output_cost == usd(4_000, "4") + usd(6_000, "2")


def test_prefix_entries_and_precedence(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - provider: openai
    model: "ft:gpt-4o-mini-2024-07-18:*"
    prices: {input_mtok: 1, output_mtok: 1}
  - provider: openai
    model: "ft:gpt-4o-mini-2024-07-18:acme:*"
    prices: {input_mtok: 2, output_mtok: 2}
  - provider: openai
    model: "ft:gpt-4o-mini-2024-07-18:acme::special"
    prices: {input_mtok: 3, output_mtok: 3}
""",
    )
    book = PriceBook(path)
    usage = Usage(input_tokens=1_000_000)

    def cost(model: str) -> Decimal | None:
        return book.price("openai", model, usage).total_cost

    assert cost("ft:gpt-4o-mini-2024-07-18:other::x1") == Decimal(1)
    assert cost("ft:gpt-4o-mini-2024-07-18:acme::x2") == Decimal(2)  # longest prefix wins
    assert cost("ft:gpt-4o-mini-2024-07-18:acme::special") == Decimal(3)  # exact beats prefix
    assert book.price("openai", "ft:gpt-4o-mini-2024-07-18:acme::x2", usage).model_id == (
        "ft:gpt-4o-mini-2024-07-18:acme:*"
    )


def test_json_override_file(tmp_path: Path) -> None:
    document = {
        "models": [
            {
                "provider": "anthropic",
                "model": "claude-internal",
                "prices": {"input_mtok": "1.5", "output_mtok": 7},
            }
        ]
    }
    path = write(tmp_path, json.dumps(document), name="pricing.json")

    price = PriceBook(path).price(
        "anthropic", "claude-internal", Usage(input_tokens=2_000_000, output_tokens=1)
    )

    assert price.input_cost == Decimal(3)
    assert price.output_cost == usd(1, "7")


def test_yaml_floats_become_exact_decimals(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "models:\n  - {provider: openai, model: m, prices: {input_mtok: 0.1, output_mtok: 0.2}}\n",
    )

    prices = PriceBook(path).describe("openai", "m")["prices"]

    assert prices == {"input_mtok": Decimal("0.1"), "output_mtok": Decimal("0.2")}


def test_empty_model_list_is_allowed(tmp_path: Path) -> None:
    book = PriceBook(write(tmp_path, "models: []\n"))

    assert book.price("openai", "gpt-4o", Usage(input_tokens=1_000_000)).total_cost == Decimal("2.5")


ENTRY = "  - provider: openai\n    model: m\n"
VALID_ENTRY = "models:\n" + ENTRY

BAD_FILES = [
    pytest.param("", "empty", id="empty-file"),
    pytest.param("- just a list\n", "top level", id="top-level-list"),
    pytest.param("models: []\nmodel: []\n", "'model'", id="unknown-top-level-key"),
    pytest.param("models: {}\n", "'models' must be a list", id="models-not-a-list"),
    pytest.param("models:\n  - 3\n", "models[0]", id="entry-not-a-mapping"),
    pytest.param(
        VALID_ENTRY + "    price: {input_mtok: 1, output_mtok: 1}\n", "'price'", id="unknown-entry-key"
    ),
    pytest.param(
        "models:\n  - provider: azure\n    model: m\n    prices: {input_mtok: 1, output_mtok: 1}\n",
        "models[0].provider",
        id="unknown-provider",
    ),
    pytest.param(
        "models:\n  - provider: openai\n    prices: {input_mtok: 1, output_mtok: 1}\n",
        "models[0].model",
        id="missing-model",
    ),
    pytest.param(VALID_ENTRY, "prices: must be a mapping", id="missing-prices"),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtoks: 1, output_mtok: 1}\n",
        "models[0] (openai/m).prices: unknown price key 'input_mtoks'",
        id="unknown-price-key",
    ),
    pytest.param(VALID_ENTRY + "    prices: {input_mtok: 1}\n", "missing 'output_mtok'", id="missing-output"),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtok: -1, output_mtok: 1}\n", "prices.input_mtok", id="negative"
    ),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtok: yes, output_mtok: 1}\n", "prices.input_mtok", id="boolean"
    ),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtok: cheap, output_mtok: 1}\n",
        "prices.input_mtok",
        id="not-a-number",
    ),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtok: 1, output_mtok: 1, cache_write_1h_mtok: 2}\n",
        "cache_write_1h_mtok refines cache_write_mtok, so cache_write_mtok must be set too",
        id="1h-without-5m-write-price",
    ),
    pytest.param(
        VALID_ENTRY + "    prices: {input_mtok: {base: 1}, output_mtok: 1}\n",
        "prices.input_mtok: a tiered price",
        id="tier-without-tiers",
    ),
    pytest.param(
        VALID_ENTRY
        + "    prices:\n      output_mtok: 1\n      input_mtok: {base: 1, tiers: [{start: 2.5, price: 2}]}\n",
        "input_mtok.tiers[0].start",
        id="fractional-tier-start",
    ),
    pytest.param(
        VALID_ENTRY
        + "    prices:\n      output_mtok: 1\n"
        + "      input_mtok: {base: 1, tiers: [{start: 9, price: 2}, {start: 5, price: 3}]}\n",
        "input_mtok.tiers[1].start",
        id="tiers-out-of-order",
    ),
    pytest.param(
        VALID_ENTRY + "    aliases: [m]\n    prices: {input_mtok: 1, output_mtok: 1}\n",
        "name 'm' is already used by models[0]",
        id="alias-repeats-model",
    ),
    pytest.param(
        VALID_ENTRY
        + "    prices: {input_mtok: 1, output_mtok: 1}\n"
        + ENTRY.replace("m\n", "M\n")
        + "    prices: {input_mtok: 1, output_mtok: 1}\n",
        "models[1] (openai/M): name 'M' is already used",
        id="duplicate-model-any-case",
    ),
    pytest.param(
        "models:\n  - provider: openai\n    model: 'gpt-*-mini'\n"
        + "    prices: {input_mtok: 1, output_mtok: 1}\n",
        "'*' is only allowed at the end",
        id="star-in-the-middle",
    ),
    pytest.param("models: [\n", "not valid YAML", id="yaml-syntax-error"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_bad_file_fails_construction_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)

    with pytest.raises(ValueError) as raised:
        PriceBook(path)

    assert isinstance(raised.value, OverridesError)
    assert str(path) in str(raised.value)
    assert message in str(raised.value)


def test_missing_file_fails_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="file not found"):
        PriceBook(tmp_path / "nope.yaml")


def test_unknown_extension_fails_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unsupported extension '\.toml'"):
        PriceBook(write(tmp_path, "models = []", name="pricing.toml"))


def test_bad_json_fails_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        PriceBook(write(tmp_path, '{"models": [', name="pricing.json"))
