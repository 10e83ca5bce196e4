"""`majordomo budgets ...` as an operator runs it, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from majordomo_gateway.periods import next_start, period_start
from majordomo_gateway.storage.database import open_database
from majordomo_gateway.storage.records import RequestRecord

from tests.support import PostgresServer, majordomo, run_sync
from tests.support.records import make_record


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    if request.param == "sqlite":
        env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'budgets.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        env["MAJORDOMO_DATABASE_URL"] = server.create()
    return env


def ok(env: dict[str, str], *args: str) -> object:
    result = majordomo(*args, "--json", env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    return orjson.loads(result.stdout)


def fails(env: dict[str, str], *args: str) -> str:
    result = majordomo(*args, env=env, check=False)
    assert result.returncode != 0 and not result.stdout
    return result.stderr


def insert(env: dict[str, str], rows: list[RequestRecord]) -> None:
    async def run() -> None:
        db = open_database(env["MAJORDOMO_DATABASE_URL"])
        await db.connect()
        try:
            await db.migrate()
            await db.insert_requests(rows)
        finally:
            await db.close()

    run_sync(run())


def test_budgets_lifecycle(env: dict[str, str]) -> None:
    now = datetime.now(UTC)
    key = ok(env, "keys", "create", "--name", "ci-bot")
    assert isinstance(key, dict)
    insert(env, [make_record(key["id"], at=now, raw_metadata={"User-Id": "u-1"}),
                 make_record(key["id"], at=now, raw_metadata={"User-Id": "u-2"}),
                 make_record(key["id"], at=now - timedelta(days=40), raw_metadata={"User-Id": "u-1"})])
    per_user = ok(env, "budgets", "create", "--scope", "metadata:user-id=*", "--limit-usd", "0.005",
                  "--period", "day", "--alert-at", "80,50,100", "--webhook", "https://hooks.example/services/SECRET")
    assert isinstance(per_user, dict)
    assert per_user["scope"] == "metadata:User-Id=*" and per_user["per_value"] is True
    assert per_user["alert_at"] == [50, 80, 100]
    assert per_user["webhook"] == "https://hooks.example/…"  # the path holds the webhook's secret
    assert per_user["spent"] == pytest.approx(0.003285)  # today's rows, counted at creation
    assert {v["value"]: v["spent"] for v in per_user["values"]} == {"u-1": pytest.approx(0.003285),
                                                                   "u-2": pytest.approx(0.003285)}
    start = period_start(now, "day", "UTC")
    assert per_user["period_start"] == start.isoformat()
    assert per_user["resets_at"] == next_start(start, "day", "UTC").isoformat()  # type: ignore[union-attr]
    by_name = ok(env, "budgets", "create", "--scope", "key:ci-bot", "--limit-usd", "20", "--period", "total",
                 "--soft")
    assert isinstance(by_name, dict)
    assert by_name["scope"] == f"key:{key['id']}" and by_name["soft"] is True and by_name["resets_at"] is None
    assert by_name["spent"] == pytest.approx(3 * 0.003285) and by_name["remaining"] == pytest.approx(20 - 3 * 0.003285)
    tokyo = ok(env, "budgets", "create", "--scope", "global", "--limit-usd", "1", "--period", "month",
               "--time-zone", "Asia/Tokyo")
    assert isinstance(tokyo, dict)
    assert tokyo["period_start"] == period_start(now, "month", "Asia/Tokyo").isoformat()

    listed = ok(env, "budgets", "list")
    assert isinstance(listed, list)
    assert [b["scope"] for b in listed] == ["metadata:User-Id=*", f"key:{key['id']}", "global"]
    assert {"scope", "limit_usd", "period", "spent", "remaining", "resets_at"} <= set(listed[0])
    text = majordomo("budgets", "list", env=env).stdout
    assert "metadata:User-Id=*" in text and "RESETS_AT" in text and "SECRET" not in text

    updated = ok(env, "budgets", "update", per_user["id"], "--limit-usd", "0.01", "--hard", "--no-webhook")
    assert isinstance(updated, dict)
    assert (updated["limit_usd"], updated["soft"], updated["webhook"]) == (0.01, False, None)
    reset = ok(env, "budgets", "reset", per_user["id"], "--value", "u-2")
    assert isinstance(reset, dict)
    assert reset["counters_reset"] == 1 and [v["value"] for v in reset["values"]] == ["u-1"]
    shown = ok(env, "budgets", "show", per_user["id"])
    assert isinstance(shown, dict) and shown["value_count"] == 1
    assert ok(env, "budgets", "delete", per_user["id"]) == {"id": per_user["id"], "scope": "metadata:User-Id=*",
                                                           "deleted": True}
    audit = ok(env, "audit")
    assert isinstance(audit, list)
    assert {"budget.create", "budget.update", "budget.reset", "budget.delete"} <= {a["action"] for a in audit}
    assert "SECRET" not in orjson.dumps(audit).decode()


def test_bad_input_is_refused_with_the_reason(env: dict[str, str]) -> None:
    assert "unknown scope 'team:x'" in fails(env, "budgets", "create", "--scope", "team:x", "--limit-usd", "1",
                                             "--period", "day")
    assert "metadata:User-Id=u-42" in fails(env, "budgets", "create", "--scope", "metadata:User-Id",
                                            "--limit-usd", "1", "--period", "day")
    assert "no Majordomo key with id or name 'nobody'" in fails(
        env, "budgets", "create", "--scope", "key:nobody", "--limit-usd", "1", "--period", "day")
    assert "not a number of US dollars" in fails(env, "budgets", "create", "--scope", "global", "--limit-usd",
                                                 "five", "--period", "day")
    assert "whole percentage" in fails(env, "budgets", "create", "--scope", "global", "--limit-usd", "1",
                                       "--period", "day", "--alert-at", "half")
    assert "unknown time zone 'Mars/Olympus'" in fails(env, "budgets", "create", "--scope", "global",
                                                       "--limit-usd", "1", "--period", "day",
                                                       "--time-zone", "Mars/Olympus")
    assert "http:// or https://" in fails(env, "budgets", "create", "--scope", "global", "--limit-usd", "1",
                                          "--period", "day", "--webhook", "ftp://x")
    ok(env, "budgets", "create", "--scope", "global", "--limit-usd", "1", "--period", "day")
    assert "exists already" in fails(env, "budgets", "create", "--scope", "global", "--limit-usd", "2",
                                     "--period", "day")
    assert "no budget nope" in fails(env, "budgets", "show", "nope")
    assert "nothing to change" in fails(env, "budgets", "update", "nope")
