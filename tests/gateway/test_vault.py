"""Proxy keys on the request path: real SDKs send only ``mdm_pk_...``; the upstream gets the stored key.

A real gateway process with ``MAJORDOMO_SECRETS_KEY``, on SQLite and on PostgreSQL, in front of the
repo's fake upstream; proxy keys are made with the real CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types
from majordomo_gateway.auth.secrets import generate_secrets_key

from tests.support import BIN, GatewayProcess, PostgresServer, assert_no_secret
from tests.support.gateway import latest_rows
from tests.support.upstream import MockUpstream

OPENAI_KEY = "sk-proj-vault-openai-5c1d7e0a9b2f"
ANTHROPIC_KEY = "sk-ant-api03-vault-anthropic-77e1c0d2"
GEMINI_KEY = "AIzaSyVault-gemini-3f9a1b7c5d"
PROVIDER_KEYS = {"openai": OPENAI_KEY, "anthropic": ANTHROPIC_KEY, "gemini": GEMINI_KEY}
MESSAGES: Any = [{"role": "user", "content": "Hello!"}]


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Vault:
    """A gateway with a secrets key, a Majordomo key (the gateway's own ``key``), and a proxy key
    holding a key for each of the three providers."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.proxy = create_proxy_key(gateway, "app-vault", gateway.key_id, PROVIDER_KEYS)

    def create_proxy_key(self, name: str, key_id: str, providers: dict[str, str]) -> dict[str, Any]:
        return create_proxy_key(self.gateway, name, key_id, providers)

    @property
    def key(self) -> str:
        return str(self.proxy["key"])


def create_proxy_key(gateway: GatewayProcess, name: str, key_id: str, providers: dict[str, str]) -> dict[str, Any]:
    created: dict[str, Any] = orjson.loads(
        gateway.cli("proxy-keys", "create", "--name", name, "--key", key_id, "--json").stdout)
    for provider, secret in providers.items():
        result = majordomo_stdin(gateway, secret, "proxy-keys", "set-provider", created["id"], provider)
        assert result.returncode == 0, result.stderr
    return created


def majordomo_stdin(gateway: GatewayProcess, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "majordomo"), *args], input=stdin, capture_output=True, text=True,
                          env=gateway.env(), cwd=gateway.workdir, timeout=60)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def vault(request: pytest.FixtureRequest, mock_upstream: MockUpstream,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Vault]:
    workdir = tmp_path_factory.mktemp(f"vault-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{workdir / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    process = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=workdir,
                             extra_env={"MAJORDOMO_SECRETS_KEY": generate_secrets_key(),
                                        "MAJORDOMO_LOG_LEVEL": "debug"}).start()
    yield Vault(process)
    process.stop()


async def _row(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    return await gateway.row(request_id)


def _openai(gateway: GatewayProcess, api_key: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=api_key, max_retries=0,
                              default_headers=headers or None)


async def test_openai_sdk_with_only_a_proxy_key(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    raw = await _openai(gateway, vault.key).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES)
    assert raw.parse().choices[0].message.content
    assert mock_upstream.last_request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    row = await _row(gateway, raw.headers["x-majordomo-request-id"])
    assert row["majordomo_api_key_id"] == gateway.key_id
    assert row["provider_api_key_hash"] == sha256(OPENAI_KEY)
    assert row["provider_api_key_alias"] == "app-vault"
    assert (row["provider"], row["status_code"], row["input_tokens"] > 0) == ("openai", 200, True)


async def test_openai_sdk_stream_with_a_proxy_key(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    stream = await _openai(gateway, vault.key).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None
    assert mock_upstream.last_request.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    request_id = stream.response.headers["x-majordomo-request-id"]
    row = await _row(gateway, request_id)
    assert (row["streamed"], row["provider_api_key_hash"]) == (True, sha256(OPENAI_KEY))


async def test_anthropic_sdk_with_only_a_proxy_key(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=vault.key, max_retries=0)
    raw = await client.messages.with_raw_response.create(model="claude-sonnet-4-20250514", max_tokens=32,
                                                         messages=MESSAGES)
    assert (await raw.parse()).content
    seen = mock_upstream.last_request
    # this SDK generation sends its key as a bearer token; older ones (and curl examples) as x-api-key
    assert (seen.header("x-api-key") or seen.headers["authorization"].removeprefix("Bearer ")) == ANTHROPIC_KEY
    assert vault.key not in repr(seen.headers)
    row = await _row(gateway, raw.headers["x-majordomo-request-id"])
    assert (row["provider"], row["majordomo_api_key_id"]) == ("anthropic", gateway.key_id)
    assert (row["provider_api_key_hash"], row["provider_api_key_alias"]) == (sha256(ANTHROPIC_KEY), "app-vault")


async def test_anthropic_x_api_key_header(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + "/v1/messages", headers={"x-api-key": vault.key, "anthropic-version": "2023-06-01"},
            json={"model": "claude-sonnet-4-20250514", "max_tokens": 8, "messages": MESSAGES}) as response:
        assert response.status == 200, await response.text()
        request_id = response.headers["X-Majordomo-Request-Id"]
    seen = mock_upstream.last_request
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in seen.headers
    row = await _row(gateway, request_id)
    assert (row["provider_api_key_hash"], row["provider_api_key_alias"]) == (sha256(ANTHROPIC_KEY), "app-vault")


async def test_google_genai_sdk_with_only_a_proxy_key(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    client = genai.Client(api_key=vault.key, http_options=genai_types.HttpOptions(base_url=gateway.url))
    answer = await client.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
    assert answer.text
    seen = mock_upstream.last_request
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    [row] = [r for r in await _rows_since(gateway, 1)]
    assert (row["provider"], row["majordomo_api_key_id"]) == ("gemini", gateway.key_id)
    assert (row["provider_api_key_hash"], row["provider_api_key_alias"]) == (sha256(GEMINI_KEY), "app-vault")


async def _rows_since(gateway: GatewayProcess, count: int) -> list[dict[str, Any]]:
    return await latest_rows(gateway, count)


async def test_gemini_key_in_the_query_string(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    path = f"/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key={vault.key}"
    async with aiohttp.ClientSession() as session, session.post(
            gateway.url + path, json={"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}) as response:
        assert response.status == 200, await response.text()
        await response.read()
        request_id = response.headers["X-Majordomo-Request-Id"]
    seen = mock_upstream.last_request
    assert seen.query_params == {"alt": "sse", "key": GEMINI_KEY}
    row = await _row(gateway, request_id)
    assert row["provider_api_key_hash"] == sha256(GEMINI_KEY)
    assert row["request_path"] == "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"


async def test_translated_and_openai_compatible_routes_use_their_providers_key(
        vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    # OpenAI's SDK to Claude: the Anthropic key goes upstream, as x-api-key.
    translated = _openai(gateway, vault.key, **{"X-Majordomo-Provider": "anthropic-openai"})
    answer = await translated.chat.completions.create(model="claude-sonnet-4-20250514", messages=MESSAGES)
    assert answer.choices[0].message.content
    assert mock_upstream.last_request.headers["x-api-key"] == ANTHROPIC_KEY
    # OpenAI's SDK to Gemini's OpenAI-compatible API: the Gemini key, as a bearer token.
    compatible = _openai(gateway, vault.key, **{"X-Majordomo-Provider": "gemini-openai"})
    await compatible.chat.completions.create(model="gemini-2.5-flash", messages=MESSAGES)
    assert mock_upstream.last_request.headers["authorization"] == f"Bearer {GEMINI_KEY}"
    first, second = await _rows_since(gateway, 2)
    assert (first["route"], first["provider_api_key_hash"]) == ("anthropic-openai", sha256(ANTHROPIC_KEY))
    assert (second["route"], second["provider_api_key_hash"]) == ("gemini-openai", sha256(GEMINI_KEY))


async def test_majordomo_key_sent_along_must_be_the_proxy_keys_own(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    mock_upstream.clear()
    together = _openai(gateway, vault.key, **{"X-Majordomo-Key": gateway.key})
    assert (await together.chat.completions.create(model="gpt-4o", messages=MESSAGES)).choices
    other = orjson.loads(gateway.cli("keys", "create", "--name", "someone-else", "--json").stdout)
    mismatched = _openai(gateway, vault.key, **{"X-Majordomo-Key": other["key"]})
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await mismatched.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.status_code == 403 and caught.value.code == "proxy_key_mismatch"
    unknown = _openai(gateway, vault.key, **{"X-Majordomo-Key": "mdm_sk_not-a-key"})
    with pytest.raises(openai.AuthenticationError):
        await unknown.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert len(mock_upstream.requests) == 1  # neither refusal reached the upstream


async def test_a_provider_without_a_stored_key_is_a_400_that_says_so(vault: Vault,
                                                                      mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    only_openai = vault.create_proxy_key("openai-only", gateway.key_id, {"openai": OPENAI_KEY})
    mock_upstream.clear()
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=only_openai["key"], max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.create(model="claude-sonnet-4-20250514", max_tokens=8, messages=MESSAGES)
    message = caught.value.response.json()["error"]["message"]
    assert "no anthropic key stored" in message and f"set-provider {only_openai['id']} anthropic" in message
    assert not mock_upstream.requests


async def test_revoked_proxy_key_and_revoked_majordomo_key_get_401(vault: Vault,
                                                                   mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    short_lived = vault.create_proxy_key("short-lived", gateway.key_id, {"openai": OPENAI_KEY})
    client = _openai(gateway, short_lived["key"])
    assert (await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)).choices
    gateway.cli("proxy-keys", "revoke", short_lived["id"])
    caught = await _refused(client)
    assert caught.code == "revoked_proxy_key"

    owner = orjson.loads(gateway.cli("keys", "create", "--name", "owner-to-revoke", "--json").stdout)
    owned = vault.create_proxy_key("owned", owner["id"], {"openai": OPENAI_KEY})
    client = _openai(gateway, owned["key"])
    assert (await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)).choices
    gateway.cli("keys", "revoke", owner["id"])
    caught = await _refused(client)
    assert caught.code == "revoked_majordomo_key"
    assert "proxy key belongs to" in caught.message
    mock_upstream.clear()
    with pytest.raises(openai.AuthenticationError):
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert not mock_upstream.requests
    with pytest.raises(openai.AuthenticationError) as caught:
        await _openai(gateway, "mdm_pk_never-issued").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.code == "invalid_proxy_key"


async def _refused(client: openai.AsyncOpenAI, within: float = 12.0) -> openai.AuthenticationError:
    """The 401 a revocation made by another process leads to, once this gateway has seen it."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        except openai.AuthenticationError as error:
            return error
        assert asyncio.get_running_loop().time() < deadline, "the revocation was not seen"
        await asyncio.sleep(0.1)


async def test_changing_a_stored_key_takes_effect(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    rotated = vault.create_proxy_key("rotated", gateway.key_id, {"openai": "sk-before-rotation-0001"})
    client = _openai(gateway, rotated["key"])
    await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert mock_upstream.last_request.headers["authorization"] == "Bearer sk-before-rotation-0001"
    result = majordomo_stdin(gateway, "sk-after-rotation-0002", "proxy-keys", "set-provider", rotated["id"], "openai")
    assert result.returncode == 0, result.stderr
    for _ in range(60):  # the change feed makes this prompt; the key cache's TTL bounds it anyway
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        if mock_upstream.last_request.headers["authorization"] == "Bearer sk-after-rotation-0002":
            break
        await asyncio.sleep(0.2)
    assert mock_upstream.last_request.headers["authorization"] == "Bearer sk-after-rotation-0002"


def _dump(gateway: GatewayProcess) -> bytes:
    """Everything the database holds, as a dump (PostgreSQL) or its files (SQLite)."""
    if gateway.dialect == "sqlite":
        path = Path(gateway.database_url[len("sqlite:///"):])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    out = subprocess.run(["pg_dump", gateway.database_url], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


async def test_no_provider_key_in_clear_anywhere(vault: Vault, mock_upstream: MockUpstream) -> None:
    gateway = vault.gateway
    # errors on the way: every error body this test can provoke is checked too
    bodies: list[str] = []
    async with aiohttp.ClientSession() as session:
        for headers in ({"Authorization": f"Bearer {vault.key}", "X-Mock-Status": "500"},
                        {"Authorization": f"Bearer {vault.key}", "X-Majordomo-Key": "mdm_sk_wrong"},
                        {"Authorization": f"Bearer {vault.key}", "X-Majordomo-Provider": "nope"}):
            async with session.post(gateway.url + "/v1/chat/completions", headers=headers,
                                    json={"model": "gpt-4o", "messages": MESSAGES}) as response:
                bodies.append(await response.text())
    await _rows_since(gateway, 1)
    dump = _dump(gateway)
    assert b"proxy_key_providers" in dump or gateway.dialect == "sqlite"
    for secret in PROVIDER_KEYS.values():
        assert secret.encode() not in dump, "a provider key is in the database in clear"
    assert_no_secret([gateway.log_text(), *bodies], list(PROVIDER_KEYS.values()))
    assert_no_secret([gateway.log_text()], [vault.key])


async def test_without_a_secrets_key_proxy_keys_fail_and_plain_keys_work(
        mock_upstream: MockUpstream, tmp_path: Path) -> None:
    secrets_key = generate_secrets_key()
    url = f"sqlite:///{tmp_path / 'majordomo.db'}"
    setup = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path,
                           extra_env={"MAJORDOMO_SECRETS_KEY": secrets_key})
    created = orjson.loads(setup.cli("keys", "create", "--name", "plain", "--json").stdout)
    made = create_proxy_key(setup, "app", created["id"], {"openai": OPENAI_KEY})
    gateway = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path,
                             key=created["key"], key_id=created["id"]).start()
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            await _openai(gateway, made["key"]).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert "MAJORDOMO_SECRETS_KEY" in caught.value.message
        assert caught.value.code == "secrets_key_missing"
        plain = _openai(gateway, OPENAI_KEY, **{"X-Majordomo-Key": created["key"]})
        assert (await plain.chat.completions.create(model="gpt-4o", messages=MESSAGES)).choices
        gem = genai.Client(api_key=made["key"], http_options=genai_types.HttpOptions(base_url=gateway.url))
        with pytest.raises(genai_errors.ServerError) as gem_error:
            await gem.aio.models.generate_content(model="gemini-2.5-flash", contents="Hello!")
        assert "MAJORDOMO_SECRETS_KEY" in str(gem_error.value.message)
    finally:
        gateway.stop()
