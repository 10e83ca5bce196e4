"""Calling a gateway as a client does: one POST with the gateway key, usage for the mock to report."""

from __future__ import annotations

import aiohttp
import orjson

from tests.support.gateway import GatewayProcess

MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 256,
            "messages": [{"role": "user", "content": "Hello!"}]}


def usage_header(**values: int) -> dict[str, str]:
    return {"X-Mock-Usage": orjson.dumps(values).decode()}


async def post(gw: GatewayProcess, path: str, body: dict | bytes, headers: dict[str, str] | None = None,
               *, key: str | None = None) -> tuple[aiohttp.ClientResponse, bytes]:
    all_headers = {"X-Majordomo-Key": key if key is not None else gw.key, "Content-Type": "application/json"}
    all_headers.update(headers or {})
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    async with aiohttp.ClientSession(auto_decompress=False) as session, \
            session.post(gw.url + path, data=data, headers=all_headers) as response:
        return response, await response.read()
