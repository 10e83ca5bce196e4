"""`majordomo limits ...` as an operator runs it, and rate limits enforced by real `majordomo serve`
processes sharing one PostgreSQL database (docs/budgets.md, "Rate limits")."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.support import GatewayProcess, PostgresServer, majordomo
from tests.support.client import usage_header
from tests.support.upstream import MockUpstream

BODY = orjson.dumps({"model": "gpt-4o-mini", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    if request.param == "sqlite":
        env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'limits.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        env["MAJORDOMO_DATABASE_URL"] = server.create()
    return env


def ok(env: dict[str, str], *args: str) -> object:
    result = majordomo(*args, "--json", env=env, check=False)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


def fails(env: dict[str, str], *args: str) -> str:
    result = majordomo(*args, env=env, check=False)
    assert result.returncode != 0 and not result.stdout
    return result.stderr


def test_limits_lifecycle(env: dict[str, str]) -> None:
    key = ok(env, "keys", "create", "--name", "ci-bot")
    assert isinstance(key, dict)
    per_user = ok(env, "limits", "create", "--scope", "metadata:user-id=*", "--rpm", "60", "--tpm", "100000")
    assert isinstance(per_user, dict)
    assert (per_user["scope"], per_user["per_value"], per_user["rpm"], per_user["tpm"], per_user["window"]) == \
        ("metadata:User-Id=*", True, 60, 100000, "minute")
    by_name = ok(env, "limits", "create", "--scope", "key:ci-bot", "--rpm", "10")
    assert isinstance(by_name, dict) and by_name["scope"] == f"key:{key['id']}" and by_name["tpm"] is None
    listed = ok(env, "limits", "list")
    assert isinstance(listed, list) and [x["scope"] for x in listed] == ["metadata:User-Id=*", f"key:{key['id']}"]
    text = majordomo("limits", "list", env=env).stdout
    assert "metadata:User-Id=*" in text and "RPM" in text and "minute (UTC)" in text
    updated = ok(env, "limits", "update", by_name["id"], "--tpm", "5000", "--rpm", "")
    assert isinstance(updated, dict) and (updated["rpm"], updated["tpm"]) == (None, 5000)
    assert ok(env, "limits", "show", by_name["id"]) == updated
    assert ok(env, "limits", "delete", by_name["id"]) == {"id": by_name["id"], "scope": f"key:{key['id']}",
                                                         "deleted": True}
    audit = ok(env, "audit")
    assert isinstance(audit, list)
    assert {"limit.create", "limit.update", "limit.delete"} <= {a["action"] for a in audit}


def test_bad_limits_are_refused_with_the_reason(env: dict[str, str]) -> None:
    assert "give --rpm N, --tpm N or both" in fails(env, "limits", "create", "--scope", "global")
    assert "not a whole number per minute" in fails(env, "limits", "create", "--scope", "global", "--rpm", "lots")
    assert "at least 1" in fails(env, "limits", "create", "--scope", "global", "--tpm", "0")
    assert "unknown scope 'team:x'" in fails(env, "limits", "create", "--scope", "team:x", "--rpm", "1")
    ok(env, "limits", "create", "--scope", "model:gpt-4o", "--rpm", "5")
    assert "has a rate limit already" in fails(env, "limits", "create", "--scope", "model:gpt-4o", "--rpm", "6")
    assert "no rate limit nope" in fails(env, "limits", "show", "nope")


async def _post(session: aiohttp.ClientSession, gw: GatewayProcess, feature: str,
                delay_ms: int = 0) -> tuple[int, dict[str, str], bytes]:
    headers = {"X-Majordomo-Key": gw.key, "Content-Type": "application/json", "Authorization": "Bearer sk-test",
               "X-Majordomo-Feature": feature, "X-Mock-Initial-Delay-Ms": str(delay_ms),
               **usage_header(input_tokens=10, output_tokens=40)}
    async with session.post(gw.url + "/v1/chat/completions", data=BODY, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def _rows(gw: GatewayProcess, count: int) -> list[tuple[int, str | None]]:
    for _ in range(300):
        rows = await gw.query("SELECT status_code, error_message FROM llm_requests ORDER BY requested_at")
        if len(rows) >= count:
            return [(int(r[0]), r[1]) for r in rows]
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} rows")


def _away_from_a_minute_boundary(seconds: float) -> None:
    """Counts are per fixed UTC minute: keep the test inside one."""
    into = time.time() % 60
    if into > 60 - seconds:
        time.sleep(60 - into + 0.2)


@pytest.mark.slow
async def test_rate_limits_across_two_serve_processes(postgres: PostgresServer, mock_upstream: MockUpstream,
                                                      tmp_path: Path) -> None:
    url = postgres.create()
    env = {"MAJORDOMO_SERVER_WORKERS": "2"}
    first = GatewayProcess(url, mock_upstream.url, tmp_path / "a", extra_env=env).start()
    second = GatewayProcess(url, mock_upstream.url, tmp_path / "b", extra_env=env, key=first.key,
                            key_id=first.key_id).start()
    try:
        first.cli("limits", "create", "--scope", "metadata:Feature=steady", "--rpm", "6")
        first.cli("limits", "create", "--scope", "metadata:Feature=burst", "--rpm", "5")
        await asyncio.sleep(1.0)  # every worker has loaded the limits
        _away_from_a_minute_boundary(25)
        async with aiohttp.ClientSession() as session:
            # One at a time, alternating processes, slower than the exchange (budgets.refresh_interval):
            # exactly the limit is served, whichever process a request reaches.
            steady = []
            for i in range(9):
                steady.append(await _post(session, (first, second)[i % 2], "steady"))
                await asyncio.sleep(0.6)
            assert [s for s, _, _ in steady] == [200] * 6 + [429] * 3
            _, headers, body = steady[-1]
            retry_after = int(headers["Retry-After"])
            assert 1 <= retry_after <= 60
            error = orjson.loads(body)["error"]
            assert error["code"] == "rate_limit_exceeded" and error["scope"] == "metadata:Feature=steady"
            assert "6 requests per minute" in error["message"] and f"Retry in {retry_after} s" in error["message"]
            # All at once over 2 x 2 workers: each process admits from its own count until the next
            # exchange, so at most processes x rpm (docs/budgets.md) and at least the limit.
            burst = await asyncio.gather(*(_post(session, (first, second)[i % 2], "burst", 200) for i in range(30)))
            served = [s for s, _, _ in burst].count(200)
            assert [s for s, _, _ in burst].count(429) == 30 - served
            print(f"burst: {served} of 30 served against --rpm 5 over 4 processes")
            assert 5 <= served <= 4 * 5
            await asyncio.sleep(1.0)
            assert [(await _post(session, gw, "burst"))[0] for gw in (first, second)] == [429, 429]
        rows = await _rows(first, 9 + 30 + 2)
        refused = [message for status, message in rows if status == 429]
        assert len(refused) == 3 + (30 - served) + 2
        assert all(m and m.startswith("rate limited: metadata:Feature=") for m in refused)
        [(requests,)] = await first.query(
            "SELECT sum(u.requests) FROM rate_usage u JOIN rate_limits l ON l.id = u.limit_id "
            "WHERE l.scope = 'metadata:Feature=steady'")
        assert requests == 6  # admissions only, every process's, added once
    finally:
        first.stop()
        second.stop()
