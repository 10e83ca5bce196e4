"""The real gateway process in front of the repo's mock upstream, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import orjson
import pytest

from tests.support import GatewayProcess
from tests.support.client import MESSAGES, post, usage_header
from tests.support.upstream import MockUpstream

OPENAI_KEY = "sk-test-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
GEMINI_KEY = "AIzaTestGeminiKey0123456789"

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}


def per_million(tokens: int, usd_per_mtok: str) -> Decimal:
    return Decimal(tokens) * Decimal(usd_per_mtok) / Decimal(1_000_000)


# -- health ------------------------------------------------------------------------------------

async def test_health_and_readiness(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(gateway.url + "/health") as response:
            assert (response.status, await response.text()) == (200, "ok")
        async with session.get(gateway.url + "/readyz") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "ok"


# -- transparency ------------------------------------------------------------------------------

async def test_request_reaches_upstream_unchanged_minus_majordomo_headers(
        gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    body = b'{"model": "gpt-4o",   "messages": [{"role": "user", "content": "exact bytes \\u00e9"}]}'
    mock_upstream.clear()
    response, _ = await post(gateway, "/v1/chat/completions?api-version=2024", body, {
        "Authorization": f"Bearer {OPENAI_KEY}", "X-Custom-Header": "value", "OpenAI-Beta": "assistants=v2",
        "X-Majordomo-Feature": "chat", "x-majordomo-user-id": "user-1",
    })
    assert response.status == 200
    [seen] = mock_upstream.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.query == "api-version=2024"
    assert seen.body == body
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert seen.headers["x-custom-header"] == "value"
    assert seen.headers["openai-beta"] == "assistants=v2"
    assert not [name for name in seen.headers if name.lower().startswith("x-majordomo-")]


async def test_expect_100_continue_is_answered_by_the_gateway_not_forwarded(
        gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    # curl sends Expect: 100-continue for any body over 1 KB; the gateway has the whole body before
    # it calls the upstream, so the upstream must not be asked to say 100 again.
    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * 4000}]})
    mock_upstream.clear()
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/chat/completions", data=body, expect100=True,
            headers={"X-Majordomo-Key": gateway.key, "Content-Type": "application/json"}) as response:
        assert response.status == 200
        assert (await response.json())["object"] == "chat.completion"
    [seen] = mock_upstream.requests
    assert seen.body == body
    assert "expect" not in seen.headers


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", CHAT, {}),
        ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}, {}),
        ("/v1/messages", MESSAGES, {}),
        ("/v1/messages", {**MESSAGES, "stream": True}, {}),
        ("/v1beta/models/gemini-2.0-flash:generateContent", GEMINI, {}),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", GEMINI, {}),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent", GEMINI, {}),
        ("/v1/chat/completions", CHAT, {"X-Mock-Status": "429"}),
        ("/v1/messages", MESSAGES, {"X-Mock-Status": "529"}),
    ],
)
async def test_response_status_headers_and_bytes_are_relayed_unchanged(
        gateway: GatewayProcess, mock_upstream: MockUpstream, path: str, body: dict,
        headers: dict[str, str]) -> None:
    mock_upstream.clear()
    response, received = await post(gateway, path, body, headers)
    [sent] = mock_upstream.responses
    assert response.status == sent.status
    assert received == sent.body
    assert response.headers["Content-Type"] == sent.headers["Content-Type"]
    request_id = response.headers["X-Majordomo-Request-Id"]
    row = await gateway.row(request_id)
    assert row["status_code"] == sent.status


# -- usage and cost in the row -----------------------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_openai_chat_usage_and_cost(gateway: GatewayProcess, stream: bool) -> None:
    body = {**CHAT, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    response, _ = await post(gateway, "/v1/chat/completions", body, {
        "Authorization": f"Bearer {OPENAI_KEY}", "X-Majordomo-Feature": "chat",
        **usage_header(input_tokens=1200, output_tokens=300, cached_tokens=1000),
    })
    assert response.status == 200
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["provider"], row["route"], row["model"], row["streamed"]) == ("openai", "openai", "gpt-4o", stream)
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"]) == (1200, 300, 1000)
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output per million tokens.
    expected = per_million(200, "2.50") + per_million(1000, "1.25") + per_million(300, "10")
    assert Decimal(str(row["total_cost"])).quantize(Decimal("1e-9")) == expected.quantize(Decimal("1e-9"))
    assert row["model_alias_found"] is True
    assert row["usage_source"] == "reported"
    assert row["raw_metadata"] == {"Feature": "chat"}
    assert row["majordomo_api_key_id"] == gateway.key_id
    if stream:
        assert row["time_to_first_token_ms"] is not None


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_anthropic_cache_writes_are_priced_by_ttl(gateway: GatewayProcess, stream: bool) -> None:
    response, _ = await post(gateway, "/v1/messages", {**MESSAGES, "stream": stream}, {
        "x-api-key": ANTHROPIC_KEY, "anthropic-version": "2023-06-01",
        **usage_header(input_tokens=10_000, output_tokens=500, cached_tokens=4000,
                       cache_creation_tokens=3000, cache_creation_1h_tokens=1000),
    })
    assert response.status == 200
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["provider"], row["model"], row["streamed"]) == ("anthropic", "claude-sonnet-4-20250514", stream)
    assert (row["input_tokens"], row["output_tokens"], row["cached_tokens"], row["cache_creation_tokens"],
            row["cache_creation_1h_tokens"]) == (10_000, 500, 4000, 3000, 1000)
    # Claude Sonnet 4: $3 input, $0.30 cache read, $3.75 5-minute write, $6 1-hour write, $15 output.
    expected = (per_million(3000, "3") + per_million(4000, "0.30") + per_million(2000, "3.75")
                + per_million(1000, "6") + per_million(500, "15"))
    assert Decimal(str(row["total_cost"])).quantize(Decimal("1e-9")) == expected.quantize(Decimal("1e-9"))


@pytest.mark.parametrize(
    "path",
    [
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    ],
    ids=["json", "sse", "json-array-stream"],
)
async def test_gemini_usage_with_thoughts_and_key_in_query(gateway: GatewayProcess, path: str) -> None:
    separator = "&" if "?" in path else "?"
    response, _ = await post(gateway, f"{path}{separator}key={GEMINI_KEY}", GEMINI, {
        "X-Majordomo-Feature": "gemini-native",
        **usage_header(input_tokens=2000, output_tokens=700, reasoning_tokens=400, cached_tokens=500),
    })
    assert response.status == 200
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["provider"], row["model"]) == ("gemini", "gemini-2.5-flash")
    assert (row["input_tokens"], row["output_tokens"], row["reasoning_tokens"], row["cached_tokens"]) == (
        2000, 700, 400, 500)
    assert GEMINI_KEY not in row["request_path"]
    assert "key=" not in row["request_path"]
    assert row["provider_api_key_hash"] is not None and len(row["provider_api_key_hash"]) == 64
    assert row["total_cost"] is not None and row["model_alias_found"] is True


async def test_gemini_openai_route_is_logged_as_gemini(gateway: GatewayProcess, mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    response, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "gemini-2.0-flash"}, {
        "Authorization": f"Bearer {GEMINI_KEY}", "X-Majordomo-Provider": "gemini-openai",
    })
    assert response.status == 200
    assert mock_upstream.requests[-1].path == "/v1beta/openai/chat/completions"
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert (row["provider"], row["route"], row["model"]) == ("gemini", "gemini-openai", "gemini-2.0-flash")
    assert row["input_tokens"] > 0 and row["total_cost"] is not None


async def test_unpriced_model_keeps_its_name_and_null_cost(gateway: GatewayProcess) -> None:
    response, _ = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "acme-custom-model-9000"},
                             {"X-Mock-Model": "acme-custom-model-9000"})
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["model"] == "acme-custom-model-9000"
    assert row["model_alias_found"] is False
    assert (row["input_cost"], row["output_cost"], row["total_cost"]) == (None, None, None)
    assert row["input_tokens"] > 0


# -- errors ------------------------------------------------------------------------------------

async def test_missing_unknown_and_revoked_keys_get_401_saying_which(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + "/v1/chat/completions", json=CHAT) as response:
        assert response.status == 401
        assert "Missing X-Majordomo-Key" in (await response.json())["error"]["message"]
    response, body = await post(gateway, "/v1/chat/completions", CHAT, key="mdm_sk_" + "x" * 43)
    assert response.status == 401
    assert "Invalid X-Majordomo-Key" in orjson.loads(body)["error"]["message"]
    created = orjson.loads(gateway.cli("keys", "create", "--name", "to-revoke", "--json").stdout)
    gateway.cli("keys", "revoke", created["id"])
    response, body = await post(gateway, "/v1/chat/completions", CHAT, key=created["key"])
    assert response.status == 401
    assert "Revoked X-Majordomo-Key" in orjson.loads(body)["error"]["message"]


async def test_unknown_route_and_provider_get_400_listing_what_is_supported(gateway: GatewayProcess) -> None:
    response, body = await post(gateway, "/api/generate", CHAT)
    assert response.status == 400
    message = orjson.loads(body)["error"]["message"]
    assert "/v1/chat/completions" in message and "/v1/messages" in message and "generateContent" in message
    response, body = await post(gateway, "/v1/chat/completions", CHAT, {"X-Majordomo-Provider": "bedrock"})
    assert response.status == 400
    assert "openai, anthropic, gemini, gemini-openai" in orjson.loads(body)["error"]["message"]


async def test_gemini_model_without_provider_header_gets_a_clear_400(gateway: GatewayProcess,
                                                                    mock_upstream: MockUpstream) -> None:
    mock_upstream.clear()
    response, body = await post(gateway, "/v1/chat/completions", {**CHAT, "model": "gemini-2.0-flash"},
                                {"Authorization": f"Bearer {GEMINI_KEY}"})
    assert response.status == 400
    message = orjson.loads(body)["error"]["message"]
    assert "X-Majordomo-Provider: gemini-openai" in message and "build_extra_headers_gemini" in message
    assert mock_upstream.requests == []  # never sent to OpenAI with a Gemini key


async def test_oversized_metadata_gets_400(gateway: GatewayProcess) -> None:
    response, body = await post(gateway, "/v1/chat/completions", CHAT, {"X-Majordomo-Feature": "x" * 5000})
    assert response.status == 400
    assert "X-Majordomo-Feature" in orjson.loads(body)["error"]["message"]


async def test_upstream_error_status_is_relayed_and_logged(gateway: GatewayProcess) -> None:
    response, body = await post(gateway, "/v1/messages", MESSAGES, {"X-Mock-Status": "400"})
    assert response.status == 400
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["status_code"] == 400
    assert row["error_message"] and "error" in row["error_message"]
    assert orjson.loads(body)["type"] == "error"


# -- streams that do not end well --------------------------------------------------------------

@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/messages", {**MESSAGES, "stream": True}),
        ("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse", GEMINI),
    ],
)
async def test_a_cut_upstream_stream_breaks_the_client_stream(gateway: GatewayProcess, path: str,
                                                              body: dict) -> None:
    headers = {"X-Majordomo-Key": gateway.key, "X-Mock-Scenario": "cut-stream", "X-Mock-Chunks": "6"}
    async with aiohttp.ClientSession() as session, \
            session.post(gateway.url + path, json=body, headers=headers) as response:
        assert response.status == 200
        request_id = response.headers["X-Majordomo-Request-Id"]
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    row = await gateway.row(request_id)
    assert row["status_code"] == 200
    assert "upstream stream broken" in row["error_message"]
    assert row["usage_source"] in ("missing", "reported")
    # The connection is dropped on purpose: no error line about an unfinished response.
    assert "without completing response" not in gateway.log_path.read_text()


async def test_a_cut_non_streamed_response_becomes_a_502(gateway: GatewayProcess) -> None:
    response, body = await post(gateway, "/v1/chat/completions", CHAT, {"X-Mock-Scenario": "cut-stream"})
    assert response.status == 502
    assert "closed the connection" in orjson.loads(body)["error"]["message"]
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["status_code"] == 502 and "upstream response broken" in row["error_message"]


async def test_in_stream_error_events_are_relayed_and_recorded(gateway: GatewayProcess) -> None:
    response, received = await post(gateway, "/v1/messages", {**MESSAGES, "stream": True},
                                    {"X-Mock-Scenario": "stream-error"})
    assert b"event: error" in received
    row = await gateway.row(response.headers["X-Majordomo-Request-Id"])
    assert row["error_message"]


async def test_stream_abandoned_by_the_client_still_gets_a_priced_row(gateway: GatewayProcess) -> None:
    headers = {"X-Majordomo-Key": gateway.key, "X-Mock-Scenario": "slow", "X-Mock-Delay-Ms": "100",
               "X-Mock-Chunks": "8", **usage_header(input_tokens=900, output_tokens=90)}
    body = {**MESSAGES, "stream": True}
    async with aiohttp.ClientSession() as session:
        response = await session.post(gateway.url + "/v1/messages", json=body, headers=headers)
        request_id = response.headers["X-Majordomo-Request-Id"]
        await response.content.readany()  # the first event, then the client hangs up
        response.close()
    row = await gateway.row(request_id, timeout=15)
    assert row["aborted"] is True
    assert (row["input_tokens"], row["output_tokens"]) == (900, 90)
    assert row["total_cost"] is not None


async def test_upstream_unreachable_is_502_with_a_row(mock_upstream: MockUpstream, tmp_path) -> None:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url="http://127.0.0.1:9",
                        workdir=tmp_path).start()
    try:
        response, body = await post(gw, "/v1/chat/completions", CHAT)
        assert response.status == 502
        assert "openai" in orjson.loads(body)["error"]["message"]
        row = await gw.row(response.headers["X-Majordomo-Request-Id"])
        assert (row["status_code"], row["provider"]) == (502, "openai")
    finally:
        gw.stop()


async def test_upstream_timeout_is_504_with_a_row(mock_upstream: MockUpstream, tmp_path) -> None:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"MAJORDOMO_PROXY_READ_TIMEOUT": "0.5"}).start()
    try:
        response, body = await post(gw, "/v1/messages", MESSAGES, {"X-Mock-Scenario": "hang"})
        assert response.status == 504
        assert "anthropic" in orjson.loads(body)["error"]["message"]
        row = await gw.row(response.headers["X-Majordomo-Request-Id"])
        assert (row["status_code"], row["provider"]) == (504, "anthropic")
    finally:
        gw.stop()


async def test_database_down_means_503_for_unknown_keys_and_readyz_says_so(tmp_path) -> None:
    gw = GatewayProcess(database_url="postgresql://postgres@127.0.0.1:9/none", upstream_url="http://127.0.0.1:9",
                        workdir=tmp_path)
    gw.key = "mdm_sk_" + "y" * 43  # the CLI cannot create one without a database
    gw.start()
    try:
        response, body = await post(gw, "/v1/chat/completions", CHAT)
        assert response.status == 503
        assert "database" in orjson.loads(body)["error"]["message"]
        async with aiohttp.ClientSession() as session, session.get(gw.url + "/readyz") as ready:
            assert ready.status == 503
            assert (await ready.json())["status"] == "error"
    finally:
        gw.stop()


async def test_key_usage_counters_and_cache_ttl_for_revocation(mock_upstream: MockUpstream, tmp_path) -> None:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"MAJORDOMO_AUTH_CACHE_TTL": "0.3"}).start()
    try:
        for _ in range(3):
            response, _ = await post(gw, "/v1/chat/completions", CHAT)
            assert response.status == 200
        await gw.row(response.headers["X-Majordomo-Request-Id"])
        listed = orjson.loads(gw.cli("keys", "get", gw.key_id, "--json").stdout)
        assert listed["request_count"] == 3 and listed["last_used_at"]
        gw.cli("keys", "revoke", gw.key_id)
        await asyncio.sleep(0.5)  # past the cache TTL
        response, _ = await post(gw, "/v1/chat/completions", CHAT)
        assert response.status == 401
    finally:
        gw.stop()


# -- secrets -----------------------------------------------------------------------------------

async def test_no_secret_reaches_a_row_or_the_log(fresh_gateway: GatewayProcess) -> None:
    gw = fresh_gateway
    await post(gw, "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {OPENAI_KEY}"})
    await post(gw, "/v1/messages", MESSAGES, {"x-api-key": ANTHROPIC_KEY})
    with pytest.raises(aiohttp.ClientPayloadError):
        await post(gw, "/v1/messages", {**MESSAGES, "stream": True},
                   {"Authorization": f"Bearer {ANTHROPIC_KEY}", "X-Mock-Scenario": "cut-stream"})
    await post(gw, f"/v1beta/models/gemini-2.0-flash:generateContent?key={GEMINI_KEY}", GEMINI)
    await post(gw, "/v1/chat/completions", CHAT, {"X-Mock-Status": "401", "Authorization": f"Bearer {OPENAI_KEY}"})
    await post(gw, "/v1/chat/completions", CHAT, key="mdm_sk_wrongwrongwrong")
    await asyncio.sleep(0.2)
    rows = await gw.query("SELECT * FROM llm_requests")
    assert len(rows) == 5
    dump = repr(rows) + gw.log_text()
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, GEMINI_KEY, gw.key, "mdm_sk_wrongwrongwrong"):
        assert secret not in dump


# -- a client slower than the upstream ---------------------------------------------------------

@pytest.mark.parametrize("gateway", ["sqlite"], indirect=True)  # the relay's behaviour, not the database's
async def test_a_slow_client_holds_the_stream_back_and_gets_every_byte_in_order(gateway: GatewayProcess) -> None:
    """The relay sends each upstream read on at once while the client keeps up; when the client's
    socket is full it waits (no unbounded buffering), then resumes in order."""
    import socket

    # ~6 MB of events: more than the kernel buffers between the gateway and its client can hold.
    pieces_sent = [f"<{i:04d}>" + "x" * 2000 for i in range(3000)]  # every piece says where it belongs
    text = "".join(pieces_sent)
    body = orjson.dumps({**CHAT, "stream": True, "stream_options": {"include_usage": True},
                         "messages": [{"role": "user", "content": f"[mock:text={text}] [mock:chunks=3000]"}]})
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"X-Majordomo-Key: {gateway.key}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that cannot take much at once
    sock.connect(("127.0.0.1", gateway.port))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, head + body)
    received = await loop.sock_recv(sock, 4096)
    while b"\r\n\r\n" not in received:
        received += await loop.sock_recv(sock, 4096)
    request_id = received.split(b"x-majordomo-request-id: ", 1)[1].split(b"\r\n", 1)[0].decode()

    await asyncio.sleep(1.0)  # the client stops reading; the stream is far larger than any buffer on the way
    assert await gateway.query(
        "SELECT count(*) FROM llm_requests WHERE id = " + ("?" if gateway.dialect == "sqlite" else "$1::uuid"),
        request_id) == [(0,)], "the stream finished while its client was not reading: it was buffered whole"

    while chunk := await loop.sock_recv(sock, 65536):
        received += chunk
    sock.close()
    payload = received.split(b"\r\n\r\n", 1)[1]
    events = _dechunk(payload).split(b"\n\n")
    pieces = []
    for event in events:
        if event.startswith(b"data: {"):
            data = orjson.loads(event[6:])
            if data.get("choices"):
                pieces.append(data["choices"][0]["delta"].get("content") or "")
    assert [p for p in pieces if p] == pieces_sent  # in order, none lost or repeated
    assert events[-2] == b"data: [DONE]"
    row = await gateway.row(request_id)
    assert (row["status_code"], row["usage_source"]) == (200, "reported")
    assert not row["aborted"] and row["streamed"]


def _dechunk(payload: bytes) -> bytes:
    out, rest = [], payload
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            return b"".join(out)
        out.append(rest[:size])
        rest = rest[size + 2:]
