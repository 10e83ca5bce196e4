"""``majordomo demo``: planned traffic through the real gateway (a real uvicorn socket, the real
pipeline, writer and database), with only the provider simulated."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest
from majordomo_gateway.demo.traffic import FEATURES, ReplayClock, plan_week

from tests.support import BIN, PostgresServer, free_port, majordomo

DEMO = ("demo", "--no-serve", "--port", "0", "--speed", "20", "--seconds", "2", "--json")


def test_the_plan_is_seeded_ordered_and_shaped_like_a_working_week() -> None:
    end = datetime(2026, 12, 5, 18, tzinfo=UTC)
    calls = plan_week(3000, 7, end, seed=7)
    assert calls == plan_week(3000, 7, end, seed=7)
    assert calls != plan_week(3000, 7, end, seed=8)
    assert len(calls) == 3000
    assert [c.at for c in calls] == sorted(c.at for c in calls)
    assert all(end - timedelta(days=7) <= c.at < end for c in calls)
    per_day = Counter(c.at.date() for c in calls)
    weekdays = [n for day, n in per_day.items() if day.weekday() < 5 and day != end.date()]
    weekend = [n for day, n in per_day.items() if day.weekday() >= 5 and day != end.date()]
    assert min(weekdays) > max(weekend)
    afternoons = sum(1 for c in calls if 12 <= c.at.hour < 18)
    nights = sum(1 for c in calls if 0 <= c.at.hour < 6)
    assert afternoons > 3 * nights
    users = Counter(dict(c.metadata)["User-Id"] for c in calls)
    assert users.most_common(1)[0][1] > 10 * (len(calls) / len(users))  # a few heavy users
    assert {dict(c.metadata)["Feature"] for c in calls} == {f.name for f in FEATURES}
    outcomes = Counter(c.outcome for c in calls)
    assert outcomes["ok"] > 0.9 * len(calls)
    assert {"rate_limited", "server_error", "abandon"} <= set(outcomes)
    assert all(c.outcome != "abandon" or c.step.stream for c in calls)


def test_demo_records_every_call_through_the_gateway(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    url = f"sqlite:///{db}"
    result = majordomo(*DEMO, "--requests", "400", "--database-url", url, cwd=tmp_path)
    summary = orjson.loads(result.stdout)
    assert summary["requests_sent"] == 400
    assert summary["rows"] == 400
    assert summary["statuses"]["200"] > 350
    assert set(summary["statuses"]) - {"200"}, "some calls fail, as the plan says"

    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM llm_requests").fetchall()
        keys = {r["name"] for r in conn.execute("SELECT name FROM api_keys")}
    assert len(rows) == 400
    assert keys == {"web-app", "batch-jobs", "dev-tools"}
    times = [datetime.fromisoformat(r["requested_at"]) for r in rows]
    assert max(times) - min(times) > timedelta(days=5), "the replay spreads rows over the week"
    assert max(times) <= datetime.now(UTC)
    assert {r["provider"] for r in rows} == {"openai", "anthropic", "gemini"}
    ok = [r for r in rows if r["status_code"] == 200 and not r["aborted"]]
    assert all(r["input_tokens"] > 0 for r in ok)
    # Usage read by the gateway's own parsers, streams included, and priced (but not the in-house model).
    streamed = [r for r in ok if r["model"] in ("claude-sonnet-4-5", "gemini-2.5-flash") and r["output_tokens"]]
    assert streamed
    assert all(r["total_cost"] is not None for r in ok if r["model"] != "acme-support-llm-v1")
    legacy = [r for r in ok if r["model"] == "acme-support-llm-v1"]
    assert legacy and all(r["total_cost"] is None for r in legacy)
    assert any(r["cached_tokens"] for r in ok) and any(r["reasoning_tokens"] for r in ok)
    abandoned = summary["abandoned_streams"]
    assert sum(1 for r in rows if r["aborted"]) == abandoned
    refused = [r for r in rows if r["status_code"] >= 400]
    assert refused and all(r["total_cost"] is None and r["error_message"] for r in refused)
    metadata = [orjson.loads(r["raw_metadata"]) for r in rows]
    assert all({"Feature", "Step", "User-Id", "Session-Id", "Team"} <= set(m) for m in metadata)

    # The summary is `majordomo report`'s numbers over the same database.
    report = orjson.loads(majordomo("report", "--group-by", "feature", "--since", "8d", "--json",
                                    "--database-url", url).stdout)
    assert {r["feature"]: r["requests"] for r in report} == {r["feature"]: r["requests"] for r in summary["by_feature"]}
    total = sum(Decimal(str(r["cost_usd"])) for r in report if r["cost_usd"] is not None)
    assert abs(total - Decimal(str(summary["total_cost_usd"]))) < Decimal("1e-6")


def test_demo_never_writes_into_a_database_that_holds_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    majordomo(*DEMO, "--requests", "20", "--database-url", url, cwd=tmp_path)
    again = majordomo(*DEMO, "--requests", "20", "--database-url", url, cwd=tmp_path, check=False)
    assert again.returncode == 1
    assert "fresh database" in again.stderr
    # Without --database-url it uses (and replaces) ./majordomo-demo.db, never ./majordomo.db.
    (tmp_path / "majordomo.db").write_bytes(b"not touched")
    for _ in range(2):
        majordomo(*DEMO, "--requests", "20", cwd=tmp_path)
    assert (tmp_path / "majordomo.db").read_bytes() == b"not touched"
    with sqlite3.connect(tmp_path / "majordomo-demo.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0] == 20


def test_demo_on_postgresql_refuses_a_used_database(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create()
    summary = orjson.loads(majordomo(*DEMO, "--requests", "150", "--database-url", url, cwd=tmp_path).stdout)
    assert summary["rows"] == 150
    again = majordomo(*DEMO, "--requests", "10", "--database-url", url, cwd=tmp_path, check=False)
    assert again.returncode == 1 and "already holds 150 requests" in again.stderr


@pytest.mark.parametrize("flag", ["--requests", "--days"])
def test_demo_refuses_nonsense_numbers(flag: str, tmp_path: Path) -> None:
    result = majordomo("demo", flag, "0", cwd=tmp_path, check=False)
    assert result.returncode == 2 and f"{flag} must be a positive number" in result.stderr


def test_demo_ends_with_the_dashboard_and_a_login_that_works(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    process = subprocess.Popen([str(BIN / "majordomo"), "demo", "--requests", "120", "--speed", "20", "--seconds",
                                "1", "--port", str(port), "--database-url", url], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("log in as" in line for line in lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            lines.append(process.stdout.readline())
        text = "".join(lines)
        assert f"Dashboard: http://127.0.0.1:{port}/dashboard" in text
        found = re.search(r"log in as (\S+) with the password (\S+)", text)
        assert found is not None, text
        email, password = found.groups()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            assert client.get("/api/v1/overview").status_code == 401
            assert client.post("/api/v1/admin/login", json={"email": email, "password": password}).status_code == 200
            answer = client.get("/api/v1/overview", params={"since": "8d"})
            assert answer.status_code == 200, (answer.status_code, answer.text)
            overview = answer.json()
        assert overview["totals"]["requests"] == 120 and overview["user"]["role"] == "admin"
    finally:
        process.terminate()
        process.wait(timeout=30)
    # The password is in the demo's output only: the database holds its argon2 hash.
    with sqlite3.connect(tmp_path / "demo.db") as conn:
        [(stored,)] = conn.execute("SELECT password_hash FROM users").fetchall()
    assert stored.startswith("$argon2id$") and password not in stored
    summary = orjson.loads(majordomo(*DEMO, "--requests", "10", "--database-url", f"sqlite:///{tmp_path / 'b.db'}",
                                     cwd=tmp_path).stdout)
    assert summary["login"]["email"] == "demo@example.com" and len(summary["login"]["password"]) >= 16
    assert summary["dashboard_url"].endswith("/dashboard")


def test_the_replay_clock_is_the_real_clock_again_once_the_replay_ends() -> None:
    # A short plan can end days before the present: what follows the replay (a dashboard login, whose
    # session expiry is stamped by this clock) must not be stamped in the past.
    clock = ReplayClock()
    clock.start(datetime.now(UTC) - timedelta(days=7), factor=1.0)
    assert datetime.now(UTC) - clock() > timedelta(days=6)
    clock.stop()
    assert abs(datetime.now(UTC) - clock()) < timedelta(seconds=5)
