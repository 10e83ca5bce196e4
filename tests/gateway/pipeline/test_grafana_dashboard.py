"""deploy/grafana/majordomo-gateway.json: every query names a metric the gateway really serves."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from majordomo_gateway.metrics.definitions import all_names

from tests.support.metrics import parse

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "majordomo-gateway.json"
METRIC = re.compile(r"\bmajordomo_[a-z0-9_]+")
CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
ANSWER = (b'{"id":"c","object":"chat.completion","model":"gpt-4o-mini","choices":[],'
          b'"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}')


def _expressions() -> list[str]:
    board = orjson.loads(DASHBOARD.read_bytes())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def _family(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


async def test_every_expression_names_a_served_metric(in_process: Any, canned: Any, call: Any) -> None:
    in_process.upstream.answers.append(canned.json(ANSWER))
    assert (await in_process.post("/v1/chat/completions", CHAT)).status == 200
    reply = await call(in_process.gateway, "GET", "/metrics", [])
    served = parse(reply.body.decode())
    used = {name for expr in _expressions() for name in METRIC.findall(expr)}
    assert len(used) >= 15, used  # the dashboard covers requests, tokens, cost, latency and the writer
    unknown = sorted(used - all_names())
    assert not unknown, f"the dashboard queries metrics the gateway does not define: {unknown}"
    missing = sorted(n for n in used if n not in served.names() and _family(n) not in served.types)
    assert not missing, f"the dashboard queries metrics /metrics does not serve: {missing}"
    # And what the gateway defines, the dashboard shows (a new metric gets a panel).
    shown = {_family(n) for n in used}
    assert not sorted({_family(n) for n in all_names()} - shown)


def test_the_dashboard_is_importable() -> None:
    board = orjson.loads(DASHBOARD.read_bytes())
    assert board["uid"] == "majordomo-gateway" and board["title"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
