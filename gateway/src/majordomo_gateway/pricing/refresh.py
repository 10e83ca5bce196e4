"""Optional: keep the price catalog fresh from a URL, off by default.

Offline is the default and always works (prices ship with the genai-prices package; upgrading it
and running ``majordomo reprice`` is the offline way to update).  With ``pricing.refresh_url`` set,
genai-prices' own updater fetches that JSON in a background thread every
``pricing.refresh_interval`` seconds; a failed fetch keeps the prices already in use.
"""

from __future__ import annotations

import logging

from genai_prices import UpdatePrices

log = logging.getLogger("majordomo.pricing")


class PriceRefresher:
    def __init__(self, url: str, interval: float) -> None:
        self.url = url
        self._updater = UpdatePrices(update_interval=interval, url=url)

    def start(self) -> None:
        log.info("refreshing prices from %s every %.0f s", self.url, self._updater.update_interval)
        self._updater.start()

    def stop(self) -> None:
        self._updater.stop()  # type: ignore[no-untyped-call]  # genai-prices leaves stop() unannotated
