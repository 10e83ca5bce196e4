"""A percent-encoded path is routed, forwarded, billed and recorded as one normalised path.

``/v1/chat/completion%73`` is ``/v1/chat/completions`` to every server (RFC 3986: an encoded
unreserved character is the character), so the provider bills it; the gateway used to route it by
its decoded form and meter it by its raw one, relaying it with no tokens recorded.
"""

from __future__ import annotations

import aiohttp
import orjson
import pytest
from yarl import URL

from tests.support import GatewayProcess
from tests.support.upstream import MockUpstream

CHAT = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGES = {"model": "claude-sonnet-4-20250514", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
EMBEDDINGS = {"model": "text-embedding-3-small", "input": "Hi"}
USAGE = {"input_tokens": 700, "output_tokens": 90}

CASES = [
    ("/v1/chat/completion%73", "/v1/chat/completions", CHAT, (700, 90)),
    ("/v1/chat/completion%73", "/v1/chat/completions", {**CHAT, "stream": True}, (700, 90)),
    ("/v1/mess%61ges", "/v1/messages", MESSAGES, (700, 90)),
    ("/v1/mess%61ges", "/v1/messages", {**MESSAGES, "stream": True}, (700, 90)),
    ("/v1/embedding%73", "/v1/embeddings", EMBEDDINGS, (700, 0)),
    ("/%76%31/r%65sponses", "/v1/responses", {"model": "o3", "input": "Hi", "stream": True}, (700, 90)),
    ("/v1beta/models/gemini-2.5-fl%61sh:generateContent", "/v1beta/models/gemini-2.5-flash:generateContent",
     {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}, (700, 90)),
]


async def _post_raw(gw: GatewayProcess, raw_path: str, body: dict) -> tuple[int, bytes, str]:
    headers = {"X-Majordomo-Key": gw.key, "Content-Type": "application/json",
               "X-Mock-Usage": orjson.dumps(USAGE).decode()}
    # encoded=True: the path goes out exactly as written, escapes included.
    async with aiohttp.ClientSession() as session, \
            session.post(URL(gw.url + raw_path, encoded=True), data=orjson.dumps(body), headers=headers) as response:
        return response.status, await response.read(), response.headers.get("X-Majordomo-Request-Id", "")


@pytest.mark.parametrize(("raw_path", "path", "body", "tokens"), CASES,
                         ids=[f"{c[0]}{'-stream' if c[2].get('stream') else ''}" for c in CASES])
async def test_an_encoded_path_is_metered_as_the_path_it_means(
        gateway: GatewayProcess, mock_upstream: MockUpstream, raw_path: str, path: str, body: dict,
        tokens: tuple[int, int]) -> None:
    mock_upstream.clear()
    status, answer, request_id = await _post_raw(gateway, raw_path, body)
    assert status == 200, answer
    [seen] = mock_upstream.requests
    assert seen.raw_path == path  # the upstream gets the one normalised path
    row = await gateway.row(request_id)
    assert (row["request_path"], row["usage_source"]) == (path, "reported")
    assert (row["input_tokens"], row["output_tokens"]) == tokens
    assert row["total_cost"] is not None


async def test_significant_escapes_stay_as_the_client_wrote_them(
        gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    # An encoded ":" is not the same character to every server; Gemini reads it as one, and so
    # does its provider (model and billing from the decoded path), while the path goes on unchanged.
    mock_upstream.clear()
    status, _, request_id = await _post_raw(gateway, "/v1beta/models/gemini-2.5-flash%3AgenerateContent",
                                            {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]})
    assert status == 200
    [seen] = mock_upstream.requests
    assert seen.raw_path == "/v1beta/models/gemini-2.5-flash%3AgenerateContent"
    row = await gateway.row(request_id)
    assert (row["request_path"], row["model"], row["usage_source"]) == (
        "/v1beta/models/gemini-2.5-flash%3AgenerateContent", "gemini-2.5-flash", "reported")


async def test_an_encoded_dot_segment_is_still_refused(gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    status, answer, _ = await _post_raw(gateway, "/v1/%2E%2e/admin", CHAT)
    assert status == 400 and b"invalid_path" in answer
    assert mock_upstream.requests == []
