"""What each request cost: genai-prices as the catalog, a local override file on top.

    book = PriceBook("pricing-overrides.yaml")       # or PriceBook() for the catalog alone
    price = book.price("anthropic", "claude-sonnet-4-20250514", usage)
    price.total_cost                                  # Decimal, or None when found is False

See docs/pricing.md for the override file format.
"""

from majordomo_gateway.pricing.book import PriceBook
from majordomo_gateway.pricing.catalog import CATALOG_SOURCE, PROVIDER_IDS
from majordomo_gateway.pricing.overrides import OverridesError
from majordomo_gateway.pricing.price import Price

__all__ = ["CATALOG_SOURCE", "PROVIDER_IDS", "OverridesError", "Price", "PriceBook"]
