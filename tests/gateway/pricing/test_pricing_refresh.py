"""pricing.refresh_url: a catalog fetched from a (local) URL replaces the bundled prices in use."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from decimal import Decimal

import orjson
import pytest
from genai_prices import data_snapshot, wait_prices_updated_sync
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.pricing.refresh import PriceRefresher
from majordomo_gateway.usage import Usage


@pytest.fixture
def catalog_server() -> Iterator[str]:
    """Serves a catalog (genai-prices' raw JSON form) in which gpt-4o costs $100/MTok of input."""
    body = orjson.dumps([{
        "id": "openai", "name": "OpenAI", "api_pattern": "https://api\\.openai\\.com",
        "models": [{"id": "gpt-4o", "name": "GPT-4o", "match": {"equals": "gpt-4o"},
                    "prices": {"input_mtok": "100", "output_mtok": "10"}}],
    }])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/prices.json"
    finally:
        server.shutdown()
        data_snapshot.set_custom_snapshot(None)


def test_refreshed_prices_are_used_without_restart(catalog_server: str) -> None:
    book = PriceBook()
    usage = Usage(input_tokens=1_000_000, output_tokens=0)
    assert book.price("openai", "gpt-4o", usage).input_cost == Decimal("2.5")
    refresher = PriceRefresher(catalog_server, interval=3600)
    refresher.start()
    try:
        assert wait_prices_updated_sync(timeout=20)
    finally:
        refresher.stop()
    assert book.price("openai", "gpt-4o", usage).input_cost == Decimal("100")
    assert book.describe("openai", "gpt-4o")["source"].endswith("(refreshed)")
