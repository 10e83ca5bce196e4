"""Key rules on the proxy path: an expired key gets 401 saying so; a provider or model outside the
key's rules gets 403 naming the rule, in the provider's error shape, through the real SDKs."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import asyncpg
import openai
import orjson
import pytest
import uuid_utils
from majordomo_gateway.app import Gateway
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.config import load_settings

from tests.support import GatewayProcess
from tests.support.client import post

MESSAGES = [{"role": "user", "content": "Hi"}]


def create_key(gw: GatewayProcess, *options: str) -> dict[str, Any]:
    created: dict[str, Any] = orjson.loads(gw.cli("keys", "create", "--name", "ruled", "--json", *options).stdout)
    return created


async def execute(gw: GatewayProcess, sql: str, *args: Any) -> None:
    """A committed write, as an operator's SQL shell would make it."""
    if gw.dialect == "sqlite":
        path = gw.database_url[len("sqlite:///"):]

        def run() -> None:
            with sqlite3.connect(path, timeout=10) as conn:
                conn.execute(sql.replace("$1", "?").replace("$2", "?"), args)

        await asyncio.to_thread(run)
        return
    conn = await asyncpg.connect(gw.database_url)
    try:
        await conn.execute(sql.replace("$2", "$2::uuid"), *args)
    finally:
        await conn.close()


async def test_provider_and_model_rules_answer_403_naming_the_rule(gateway: GatewayProcess) -> None:
    key = create_key(gateway, "--allow-provider", "openai", "--allow-model", "gpt-4o*")
    headers = {"X-Majordomo-Key": key["key"]}
    client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="sk-test-0123456789", max_retries=0,
                                default_headers=headers)
    allowed = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert allowed.choices
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
    error = caught.value
    assert error.status_code == 403 and error.code == "model_not_allowed"
    assert "gpt-4o*" in error.message and "allowed_models" in error.message and "gpt-4.1" in error.message
    assert error.response.json()["error"]["type"] == "permission_error"
    # The refused request has its row: whose, which model, and why.
    row = await gateway.row(error.response.headers["x-majordomo-request-id"])
    assert (row["status_code"], row["model"], row["majordomo_api_key_id"]) == (403, "gpt-4.1", key["id"])
    assert "allowed_models" in row["error_message"]
    assert row["total_cost"] is None and row["input_tokens"] == 0

    claude = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-ant-test-0123456789", max_retries=0,
                                      default_headers=headers)
    with pytest.raises(anthropic.PermissionDeniedError) as refused:
        await claude.messages.create(model="claude-sonnet-4-20250514", max_tokens=16,
                                     messages=MESSAGES)  # type: ignore[arg-type]
    body = refused.value.response.json()
    assert body["type"] == "error" and body["error"]["type"] == "permission_error"
    assert body["error"]["code"] == "provider_not_allowed"
    assert "provider(s) openai (allowed_providers), not anthropic" in body["error"]["message"]


async def test_an_expired_key_gets_401_saying_expired(gateway: GatewayProcess) -> None:
    key = create_key(gateway, "--expires", "30d")
    response, _ = await post(gateway, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
                             {"Authorization": "Bearer sk-test"}, key=key["key"])
    assert response.status == 200
    expired = create_key(gateway, "--expires", "1d")
    past = datetime.now(UTC) - timedelta(minutes=1)
    await execute(gateway, "UPDATE api_keys SET expires_at = $1 WHERE id = $2",
                  past.isoformat() if gateway.dialect == "sqlite" else past, expired["id"])
    response, raw = await post(gateway, "/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES},
                               {"Authorization": "Bearer sk-test"}, key=expired["key"])
    body = orjson.loads(raw)
    assert response.status == 401
    assert body["error"]["code"] == "expired_majordomo_key"
    assert "expired at" in body["error"]["message"] and expired["key"] not in raw.decode()


async def test_expiry_follows_the_gateway_clock_in_process(tmp_path: Path) -> None:
    """The same check in-process: a key valid now is expired once the gateway's clock passes it.
    The path routes nowhere, so nothing ever goes upstream: a valid key gets past authentication
    to the routing error (400), an expired one stops at it (401)."""
    now = datetime.now(UTC)
    clock = [now]
    settings = load_settings(None, environ={}, database_url=f"sqlite:///{tmp_path / 'm.db'}",
                             **{"writer.spool_dir": str(tmp_path / "spool")})
    gateway = Gateway(settings, clock=lambda: clock[0])
    await gateway.startup()
    try:
        key = generate_key()
        await gateway.database.create_key(str(uuid_utils.uuid7()), "soon", None, hash_secret(key),
                                          display_prefix(key), now, expires_at=now + timedelta(hours=1))
        headers = [(b"x-majordomo-key", key.encode()), (b"content-type", b"application/json")]
        clock[0] = now + timedelta(minutes=59)
        assert (await _call(gateway, headers))[0] == 400
        clock[0] = now + timedelta(hours=1)
        status, body = await _call(gateway, headers)
        assert status == 401 and b"expired_majordomo_key" in body
    finally:
        await gateway.shutdown()


async def _call(app: Gateway, headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes]:
    scope = {"type": "http", "method": "POST", "path": "/nowhere", "raw_path": b"/nowhere",
             "query_string": b"", "headers": headers}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b'{"model":"gpt-4o"}', "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])
