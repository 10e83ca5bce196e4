"""One model's per-unit rates, and the arithmetic that turns a ``Usage`` into dollars.

genai-prices is the price database, but its own ``calc_price`` re-validates the price table and
rebuilds its usage object on every call, which would be most of the per-request cost (see
docs/performance.md, "Where the time goes").  Our
``Usage`` only ever reports the handful of units below, so we read those rates once per model and
do the arithmetic here.  The rules follow genai-prices exactly (tests/gateway/pricing checks
parity against ``genai_prices.calc_price`` for every OpenAI, Anthropic and Google model):

- each token is billed once, at the most specific rate the model has for it: a cache read at
  ``cache_read_mtok`` if the model has one, otherwise as plain input; a 1h cache write at
  ``cache_write_1h_mtok``, else ``cache_write_mtok``, else plain input; reasoning at
  ``output_reasoning_mtok``, else ``output_mtok``;
- tiered rates are "cliff" tiers: when the *total* prompt (``input_tokens``) exceeds a tier's
  start, every token of every tiered unit is billed at that tier's rate.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal

from genai_prices.types import ModelPrice, TieredPrices

from majordomo_gateway.usage import Usage

Rate = Decimal | TieredPrices

PER_MTOK = 1_000_000
PER_KCOUNT = 1_000

# A rate that refines another may only exist when the broader one does (genai-prices enforces
# the same rule); otherwise "the rest of the tokens" would have no price.
REQUIRED_BROADER_RATE: Mapping[str, str] = {
    "cache_read_mtok": "input_mtok",
    "cache_write_mtok": "input_mtok",
    "cache_write_5m_mtok": "cache_write_mtok",
    "cache_write_1h_mtok": "cache_write_mtok",
    "output_reasoning_mtok": "output_mtok",
}

_ZERO = Decimal(0)


class InvalidUsageError(ValueError):
    """The usage numbers contradict the ``Usage`` conventions (a subset larger than its total)."""


class InvalidRatesError(ValueError):
    """A rate table the arithmetic cannot use (negative price, refinement without its base)."""


@dataclass(frozen=True, slots=True)
class Rates:
    """USD rates for the units the gateway measures; None means the model has no such rate."""

    input_mtok: Rate | None = None
    output_mtok: Rate | None = None
    cache_read_mtok: Rate | None = None
    cache_write_mtok: Rate | None = None
    cache_write_5m_mtok: Rate | None = None
    cache_write_1h_mtok: Rate | None = None
    output_reasoning_mtok: Rate | None = None
    web_searches_kcount: Rate | None = None
    requests_kcount: Rate | None = None
    #: catalog rates for units the gateway does not count (audio tokens, audio hours, file
    #: searches...).  Kept for ``describe``; they contribute nothing to the cost.
    unmeasured: Mapping[str, Rate] | None = None
    #: False when every rate is for a unit we do not count, so any cost we gave would be $0.
    #: A model with no rates at all is free (e.g. Gemma on the Gemini API) and is priceable.
    priceable: bool = field(init=False)

    def __post_init__(self) -> None:
        measured = list(self.items())
        for key, rate in measured:
            _check_rate(key, rate)
        for narrow, broad in REQUIRED_BROADER_RATE.items():
            if getattr(self, narrow) is not None and getattr(self, broad) is None:
                raise InvalidRatesError(f"{narrow} refines {broad}, so {broad} must be set too")
        # Computed once: price() reads it on every request.
        object.__setattr__(self, "priceable", bool(measured) or not self.unmeasured)

    @classmethod
    def from_model_price(cls, model_price: ModelPrice) -> Rates:
        measured: dict[str, Rate] = {}
        unmeasured: dict[str, Rate] = {}
        # ModelPrice keeps one attribute per price key that the catalog set.
        for key, rate in vars(model_price).items():
            if key.startswith("_") or rate is None:
                continue
            if key in MEASURED_PRICE_KEYS:
                measured[key] = rate
            else:
                unmeasured[key] = rate
        return cls(**measured, unmeasured=unmeasured or None)

    def items(self) -> Iterator[tuple[str, Rate]]:
        """The measured rates that are set, as (genai-prices price key, rate)."""
        for key in MEASURED_PRICE_KEYS:
            rate = getattr(self, key)
            if rate is not None:
                yield key, rate

    def cost(self, usage: Usage) -> tuple[Decimal, Decimal, Decimal]:
        """(input, output, total) in USD.  Raises InvalidUsageError on inconsistent usage."""
        _check_usage(usage)
        prompt_tokens = usage.input_tokens

        def at(rate: Rate) -> Decimal:
            if isinstance(rate, Decimal):
                return rate
            return _tier_rate(rate, prompt_tokens)

        # Input: peel off the token kinds the model has a specific rate for; the rest is
        # billed at the plain input rate.
        input_micro_usd = _ZERO
        plain_input = usage.input_tokens
        if self.cache_read_mtok is not None:
            input_micro_usd += at(self.cache_read_mtok) * usage.cached_tokens
            plain_input -= usage.cached_tokens
        if self.cache_write_mtok is not None:
            plain_input -= usage.cache_creation_tokens
            other_writes = usage.cache_creation_tokens
            writes_1h = usage.cache_creation_1h_tokens
            if self.cache_write_1h_mtok is not None:
                input_micro_usd += at(self.cache_write_1h_mtok) * writes_1h
                other_writes -= writes_1h
            if self.cache_write_5m_mtok is not None:
                writes_5m = usage.cache_creation_tokens - writes_1h
                input_micro_usd += at(self.cache_write_5m_mtok) * writes_5m
                other_writes -= writes_5m
            input_micro_usd += at(self.cache_write_mtok) * other_writes
        if self.input_mtok is not None:
            input_micro_usd += at(self.input_mtok) * plain_input

        output_micro_usd = _ZERO
        plain_output = usage.output_tokens
        if self.output_reasoning_mtok is not None:
            output_micro_usd += at(self.output_reasoning_mtok) * usage.reasoning_tokens
            plain_output -= usage.reasoning_tokens
        if self.output_mtok is not None:
            output_micro_usd += at(self.output_mtok) * plain_output

        # Per-request charges belong to neither direction, as in genai-prices.
        per_request_milli_usd = _ZERO
        if self.web_searches_kcount is not None:
            per_request_milli_usd += at(self.web_searches_kcount) * usage.web_search_requests
        if self.requests_kcount is not None:
            per_request_milli_usd += at(self.requests_kcount)

        input_cost = input_micro_usd / PER_MTOK
        output_cost = output_micro_usd / PER_MTOK
        total_cost = input_cost + output_cost + per_request_milli_usd / PER_KCOUNT
        return input_cost, output_cost, total_cost


MEASURED_PRICE_KEYS: tuple[str, ...] = tuple(
    rate_field.name for rate_field in fields(Rates) if rate_field.name not in ("unmeasured", "priceable")
)


def _tier_rate(rate: TieredPrices, prompt_tokens: int) -> Decimal:
    # genai-prices keeps tiers sorted by start; the highest tier the prompt exceeds wins.
    for tier in reversed(rate.tiers):
        if prompt_tokens > tier.start:
            return tier.price
    return rate.base


def _check_rate(key: str, rate: object) -> None:
    prices: list[object]
    if isinstance(rate, TieredPrices):
        prices = [rate.base, *(tier.price for tier in rate.tiers)]
        if any(tier.start < 0 for tier in rate.tiers):
            raise InvalidRatesError(f"{key}: tier starts must be >= 0")
    else:
        prices = [rate]
    for price in prices:
        if not isinstance(price, Decimal) or not price.is_finite() or price < 0:
            raise InvalidRatesError(f"{key}: price must be a finite number >= 0, got {price!r}")


def _check_usage(usage: Usage) -> None:
    counts = (
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.cache_creation_tokens,
        usage.cache_creation_1h_tokens,
        usage.reasoning_tokens,
        usage.web_search_requests,
    )
    if any(count < 0 for count in counts):
        raise InvalidUsageError(f"negative token count in {usage}")
    if usage.cached_tokens + usage.cache_creation_tokens > usage.input_tokens:
        raise InvalidUsageError(
            f"cache reads ({usage.cached_tokens}) + cache writes ({usage.cache_creation_tokens})"
            f" exceed input_tokens ({usage.input_tokens})"
        )
    if usage.cache_creation_1h_tokens > usage.cache_creation_tokens:
        raise InvalidUsageError(
            f"1h cache writes ({usage.cache_creation_1h_tokens})"
            f" exceed all cache writes ({usage.cache_creation_tokens})"
        )
    if usage.reasoning_tokens > usage.output_tokens:
        raise InvalidUsageError(
            f"reasoning_tokens ({usage.reasoning_tokens}) exceed output_tokens ({usage.output_tokens})"
        )
