"""CPU per request of the budget guard on the request path (issue 14, point 6; docs/performance.md).

Runs the request path's calls exactly as the pipeline makes them (``if budgets.active: await
budgets.admit(ex)``, then ``settle(ex)`` once the row is priced) in one process, without a
database (the refresh is a background task, off the path), for:

- no budgets or limits at all (``active`` False: one attribute test);
- 100 budgets and 100 rate limits, none covering the request;
- the same, one budget and one limit covering it (a hard budget far from its limit, so the view
  admits: the path most covered requests take).

    .venv/bin/python bench/budget_guard_cost.py [--iterations N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uuid_utils
from majordomo_gateway.budgets.guard import BudgetGuard
from majordomo_gateway.budgets.scope import parse_scope
from majordomo_gateway.config import BudgetSettings
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.proxy.exchange import Exchange
from majordomo_gateway.storage.records import BudgetRecord, RateLimitRecord

from tests.support.records import make_record

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)
BODY = b'{"model": "claude-sonnet-4-20250514", "max_tokens": 40, "messages": [{"role": "user", "content": "hi"}]}'


def _budget(scope: str) -> BudgetRecord:
    s = parse_scope(scope)
    return BudgetRecord(str(uuid_utils.uuid7()), s.text, s.kind, s.key, s.value, Decimal(1000), "day", "UTC", False,
                        (), None, NOW, NOW)


def _limit(scope: str) -> RateLimitRecord:
    s = parse_scope(scope)
    return RateLimitRecord(str(uuid_utils.uuid7()), s.text, s.kind, s.key, s.value, 10**9, 10**9, NOW, NOW)


def _guard(count: int, covering: bool) -> BudgetGuard:
    guard = BudgetGuard(None, PriceBook(None), BudgetSettings(), clock=lambda: NOW)  # type: ignore[arg-type]
    scopes = [f"metadata:User-Id=u-{i}" for i in range(count - 3)] + ["model:gpt-4o", "key:someone-else",
                                                                      "metadata:Team=*"]
    if covering:
        scopes[0] = "metadata:Feature=bench"
    if count:
        guard._load([_budget(s) for s in scopes], [_limit(s) for s in scopes])
    return guard


async def _per_request(guard: BudgetGuard, ex: Any, iterations: int) -> float:
    record = ex.record
    start = time.process_time()
    for _ in range(iterations):
        ex.record = replace(record, id="r")  # a fresh row per request, as the pipeline has
        if guard.active:
            await guard.admit(ex)
        if ex.budget_hold is not None:
            guard.settle(ex)
        guard._pending.clear()  # what the refresh does once the ledger has the rows
    return (time.process_time() - start) / iterations


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=50_000)
    args = parser.parse_args()
    record = make_record(None, at=NOW, raw_metadata={"Feature": "bench"})
    ex = Exchange(scope={}, receive=None, send=None, started=0.0, requested_at=NOW, body=BODY,  # type: ignore[arg-type]
                  record=record)
    cases = {"no budgets or limits": _guard(0, False), "100 budgets + 100 limits, uncovered": _guard(100, False),
             "100 budgets + 100 limits, covered by 1 + 1": _guard(100, True)}
    await _per_request(cases["no budgets or limits"], ex, 1000)  # warm up
    print(f"python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}, {args.iterations} requests each")
    for name, guard in cases.items():
        per = await _per_request(guard, ex, args.iterations)
        print(f"{name:45s} {per * 1e6:8.2f} µs CPU per request "
              f"(admitted against a budget: {guard.local_admissions + guard.exact_admissions})")


if __name__ == "__main__":
    asyncio.run(main())
