"""The real providers speak HTTPS: the gateway verifies them against the system trust store.

A mock upstream with a certificate from a throwaway CA; the gateway trusts that CA only through
SSL_CERT_FILE, the standard OpenSSL variable, exactly as an operator would point it at a
corporate CA bundle.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
import trustme
from multidict import CIMultiDict

from tests.support import GatewayProcess, assert_no_secret
from tests.support.upstream import MockUpstream

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
PROVIDER_KEY = "sk-tls-test-provider-key-0123456789"


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MockUpstream, Path]]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with MockUpstream(ssl_context=context) as mock:
        yield mock, ca_file


async def _post(gw: GatewayProcess, body: dict) -> tuple[int, CIMultiDict[str], bytes]:
    headers = {"X-Majordomo-Key": gw.key, "Authorization": f"Bearer {PROVIDER_KEY}",
               "X-Majordomo-Feature": "tls"}
    async with aiohttp.ClientSession() as session, \
            session.post(gw.url + "/v1/chat/completions", data=orjson.dumps(body), headers=headers) as response:
        return response.status, response.headers.copy(), await response.read()


async def test_https_upstream_json_and_stream_are_relayed_and_priced(tls_upstream, tmp_path) -> None:
    mock, ca_file = tls_upstream
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock.url, workdir=tmp_path,
                        extra_env={"SSL_CERT_FILE": str(ca_file)}).start()
    try:
        assert mock.url.startswith("https://")
        status, headers, body = await _post(gw, CHAT)
        assert status == 200
        assert orjson.loads(body)["object"] == "chat.completion"
        row = await gw.row(headers["X-Majordomo-Request-Id"])
        assert row["usage_source"] == "reported" and row["input_tokens"] > 0 and row["total_cost"] is not None

        status, headers, body = await _post(gw, {**CHAT, "stream": True})
        assert status == 200
        assert body.rstrip().endswith(b"data: [DONE]")
        row = await gw.row(headers["X-Majordomo-Request-Id"])
        assert row["streamed"] and row["usage_source"] == "reported" and row["output_tokens"] > 0
        assert mock.last_request.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    finally:
        gw.stop()


async def test_an_upstream_certificate_nobody_trusts_is_a_502_without_secrets(tls_upstream, tmp_path) -> None:
    mock, _ = tls_upstream
    # No SSL_CERT_FILE: the system store does not know the throwaway CA.
    env = {"SSL_CERT_FILE": str(tmp_path / "empty.pem")}
    (tmp_path / "empty.pem").write_text("")
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock.url, workdir=tmp_path,
                        extra_env=env).start()
    try:
        before = len(mock.requests)
        status, headers, body = await _post(gw, CHAT)
        assert status == 502
        assert orjson.loads(body)["error"]["code"] == "upstream_unreachable"
        row = await gw.row(headers["X-Majordomo-Request-Id"])
        assert row["status_code"] == 502
        assert "SSL" in row["error_message"]
        assert len(mock.requests) == before  # nothing was sent over an unverified connection
        assert_no_secret([body.decode(), str(row), gw.log_path.read_text()], [PROVIDER_KEY, gw.key])
    finally:
        gw.stop()
