"""The guide's SQL, verbatim, against rows the gateway wrote — on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from tests.support import GatewayProcess
from tests.support.client import MESSAGES, post, usage_header
from tests.support.guide import BY_STEP, PER_USER

FEATURES = "SELECT raw_metadata->>'Feature', SUM(total_cost) FROM llm_requests GROUP BY 1"


def sonnet_cost(input_tokens: int, output_tokens: int) -> Decimal:
    return (Decimal(input_tokens) * 3 + Decimal(output_tokens) * 15) / Decimal(1_000_000)


@pytest.mark.parametrize("fresh_gateway", ["sqlite", "postgres"], indirect=True)
async def test_guide_queries_return_the_right_aggregates(fresh_gateway: GatewayProcess) -> None:
    gw = fresh_gateway
    calls = [
        # (feature, step, user, input, output); header casing varies as different SDKs send it
        ("chat-bot", None, "alice", 1000, 100),
        ("chat-bot", None, "alice", 3000, 200),
        ("chat-bot", None, "bob", 500, 50),
        ("research", "query-gen", "alice", 2000, 300),
        ("research", "query-gen", "carol", 4000, 100),
        ("research", "synthesis", "carol", 8000, 900),
    ]
    expected_user: dict[str, list[Decimal]] = defaultdict(list)
    expected_step: dict[str, list[Decimal]] = defaultdict(list)
    expected_feature: dict[str, Decimal] = defaultdict(Decimal)
    for index, (feature, step, user, tokens_in, tokens_out) in enumerate(calls):
        headers = usage_header(input_tokens=tokens_in, output_tokens=tokens_out)
        if index % 2:
            headers.update({"x-majordomo-feature": feature, "x-majordomo-user-id": user,
                            "x-majordomo-session-id": f"s{index}"})
            if step:
                headers["x-majordomo-step"] = step
        else:
            headers.update({"X-Majordomo-Feature": feature, "X-Majordomo-User-Id": user,
                            "X-Majordomo-Session-Id": f"s{index}"})
            if step:
                headers["X-Majordomo-Step"] = step
        response, _ = await post(gw, "/v1/messages", MESSAGES, headers)
        assert response.status == 200
        last_id = response.headers["X-Majordomo-Request-Id"]
        cost = sonnet_cost(tokens_in, tokens_out)
        expected_feature[feature] += cost
        if feature == "chat-bot":
            expected_user[user].append(cost)
        if feature == "research":
            expected_step[step].append(cost)  # type: ignore[index]
    await gw.row(last_id)

    per_user = await gw.query(PER_USER)
    assert [(u, n) for u, n, _ in per_user] == [("alice", 2), ("bob", 1)]  # ordered by cost, descending
    for user, _, total in per_user:
        assert Decimal(str(total)) == pytest.approx(sum(expected_user[user]), abs=Decimal("1e-9"))

    by_step = {step: (avg, total) for step, avg, total in await gw.query(BY_STEP)}
    assert set(by_step) == {"query-gen", "synthesis"}
    for step, costs in expected_step.items():
        avg, total = by_step[step]
        assert Decimal(str(total)) == pytest.approx(sum(costs), abs=Decimal("1e-9"))
        assert Decimal(str(avg)) == pytest.approx(sum(costs) / len(costs), abs=Decimal("1e-9"))

    features = {feature: Decimal(str(total)) for feature, total in await gw.query(FEATURES)}
    assert features == pytest.approx(dict(expected_feature), abs=Decimal("1e-9"))

    sessions = await gw.query("SELECT raw_metadata->>'Session-Id' FROM llm_requests ORDER BY id")
    assert [s for (s,) in sessions] == [f"s{i}" for i in range(len(calls))]
