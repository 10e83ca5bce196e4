"""log.format: json gives one JSON access-log line per request, with no secret in any line; the
default text log stays readable lines without them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import GatewayProcess
from tests.support.client import post, usage_header

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
PROVIDER_KEY = "sk-proj-access-log-secret-0123456789"


def _lines(gw: GatewayProcess, want: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = [orjson.loads(line) for line in gw.log_text().splitlines() if line.strip()]
        access = [line for line in lines if line["logger"] == "majordomo.access"]
        if len(access) >= want or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.fixture
def json_gateway(mock_upstream: Any, tmp_path: Path) -> Any:
    gw = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'majordomo.db'}", upstream_url=mock_upstream.url,
                        workdir=tmp_path, extra_env={"MAJORDOMO_LOG_FORMAT": "json"}).start()
    yield gw
    gw.stop()


async def test_one_json_access_line_per_request_without_secrets(json_gateway: GatewayProcess) -> None:
    gw = json_gateway
    auth = {"Authorization": f"Bearer {PROVIDER_KEY}"}
    response, _ = await post(gw, "/v1/chat/completions", CHAT,
                             {**auth, **usage_header(input_tokens=12, output_tokens=4), "X-Majordomo-Feature": "faq"})
    assert response.status == 200
    first_id = response.headers["X-Majordomo-Request-Id"]
    response, _ = await post(gw, "/v1/chat/completions?key=AIza-query-secret", {**CHAT, "stream": True}, auth)
    assert response.status == 200
    second_id = response.headers["X-Majordomo-Request-Id"]
    response, _ = await post(gw, "/v1/chat/completions", CHAT, auth, key="mdm_sk_not_a_real_key")
    assert response.status == 401
    lines = _lines(gw, 3)  # every line of the log is JSON, uvicorn's included (else loads() fails)
    assert any(line["logger"].startswith("uvicorn") for line in lines)
    access = {line["request_id"]: line for line in lines if line["logger"] == "majordomo.access"}
    assert set(access) == {first_id, second_id}  # a 401 has no row, and no access line
    first = access[first_id]
    assert first["message"] == "POST /v1/chat/completions 200" and first["level"] == "info"
    assert (first["status"], first["provider"], first["model"]) == (200, "openai", first["model"])
    assert first["model"].startswith("gpt-4o")
    assert (first["input_tokens"], first["output_tokens"], first["usage_source"]) == (12, 4, "reported")
    assert first["cost_usd"] > 0 and first["duration_ms"] > 0 and first["metadata"] == {"Feature": "faq"}
    row = await gw.row(first_id)
    assert first["cost_usd"] == pytest.approx(float(row["total_cost"]))
    assert access[second_id]["streamed"] is True and access[second_id]["time_to_first_token_ms"] is not None
    assert "key=" not in access[second_id]["path"]
    text = gw.log_text()
    for secret in (PROVIDER_KEY, gw.key, "AIza-query-secret", "mdm_sk_not_a_real_key"):
        assert secret not in text


async def test_the_text_log_stays_readable(fresh_gateway: GatewayProcess) -> None:
    response, _ = await post(fresh_gateway, "/v1/chat/completions", CHAT, {"Authorization": f"Bearer {PROVIDER_KEY}"})
    assert response.status == 200
    await fresh_gateway.row(response.headers["X-Majordomo-Request-Id"])
    lines = [line for line in fresh_gateway.log_text().splitlines() if line.strip()]
    assert lines and not any(line.lstrip().startswith("{") for line in lines)
    assert not any("majordomo.access" in line for line in lines)
    assert any("Majordomo Gateway on http://" in line for line in lines)
