"""``majordomo report`` on seeded rows in a real SQLite file and a real PostgreSQL database: every
number is checked against sums computed here from the rows themselves."""

from __future__ import annotations

import csv
import io
import os
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from majordomo_gateway.storage.database import open_database
from majordomo_gateway.storage.records import RequestRecord

from tests.support import PostgresServer, majordomo

NOW = datetime.now(UTC).replace(microsecond=0)
FEATURES = ["summarize", "chat", "search", None]
USERS = ["u-1", "u-2", "u-3", None]
MODELS = [("openai", "gpt-4.1"), ("anthropic", "claude-sonnet-4-20250514"), ("gemini", "gemini-2.5-flash"),
          ("local", "llama-3")]


@dataclass
class Seeded:
    url: str
    records: list[RequestRecord]
    key_names: dict[str, str]


def _records(key_ids: list[str]) -> list[RequestRecord]:
    rng = random.Random(20261204)
    records = []
    for i in range(400):
        provider, model = rng.choice(MODELS)
        feature, user = rng.choice(FEATURES), rng.choice(USERS)
        metadata = {k: v for k, v in (("Feature", feature), ("User-Id", user)) if v is not None}
        if rng.random() < 0.5:
            metadata["Team"] = rng.choice(["core", "growth"])
        when = NOW - timedelta(days=rng.uniform(0, 40))
        status = rng.choice([200] * 8 + [400, 429, 500])
        reported = status == 200
        priced = reported and provider != "local"
        cost = Decimal(rng.randint(1, 10**7)) / Decimal(10**10) if priced else None
        records.append(RequestRecord(
            id=f"0190a0a0-0000-7000-8000-{i:012d}", majordomo_api_key_id=rng.choice(key_ids),
            provider_api_key_hash=None, provider_api_key_alias=None, provider=provider, route=provider, model=model,
            request_path="/v1/chat/completions", request_method="POST", requested_at=when,
            responded_at=when + timedelta(seconds=1), response_time_ms=1000.0, streamed=rng.random() < 0.3,
            aborted=rng.random() < 0.1, input_tokens=rng.randint(0, 5000) if reported else 0,
            output_tokens=rng.randint(0, 900) if reported else 0, cached_tokens=rng.randint(0, 100),
            cache_creation_tokens=rng.randint(0, 50), reasoning_tokens=rng.randint(0, 30), total_cost=cost,
            input_cost=cost, output_cost=Decimal(0) if priced else None,
            usage_source="reported" if reported else "none", status_code=status, raw_metadata=metadata))
    return records


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
async def seeded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Seeded]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('report') / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    database = open_database(url)
    await database.connect()
    await database.migrate()
    names = {}
    for index, name in enumerate(["backend", "batch-jobs"]):
        key_id = f"0190a0a0-0000-7000-9000-{index:012d}"
        await database.create_key(key_id, name, None, f"hash-{index}", "mdm_sk_x", NOW)
        names[key_id] = name
    records = _records(list(names))
    await database.insert_requests(records)
    await database.close()
    yield Seeded(url, records, names)


def report(seeded: Seeded, *args: str, check: bool = True) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    result = majordomo("report", *args, "--database-url", seeded.url, env=env, check=False)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def expected(records: list[RequestRecord], key: Callable[[RequestRecord], tuple[Any, ...]],
             since: datetime = NOW - timedelta(days=30)) -> dict[tuple[Any, ...], dict[str, Any]]:
    groups: dict[tuple[Any, ...], dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    for r in records:
        if r.requested_at < since:
            continue
        g = groups[key(r)]
        g["requests"] += 1
        g["input_tokens"] += r.input_tokens
        g["output_tokens"] += r.output_tokens
        g["cached_tokens"] += r.cached_tokens
        g["cache_write_tokens"] += r.cache_creation_tokens
        g["reasoning_tokens"] += r.reasoning_tokens
        if r.total_cost is not None:
            g["cost_usd"] = g.get("cost_usd", Decimal(0)) + r.total_cost
        g["unpriced"] += int(r.usage_source == "reported" and r.total_cost is None)
        g["errors"] += int(r.status_code >= 400)
        g["aborted"] += int(r.aborted)
    return groups


def assert_rows_match(rows: list[dict[str, Any]], want: dict[tuple[Any, ...], dict[str, Any]],
                      labels: list[str]) -> None:
    assert len(rows) == len(want)
    for row in rows:
        group = want[tuple(row[label] for label in labels)]
        for name in ("requests", "input_tokens", "output_tokens", "cached_tokens", "cache_write_tokens",
                     "reasoning_tokens", "unpriced", "errors", "aborted"):
            assert row[name] == group[name], (labels, row, name)
        if group.get("cost_usd") is None:
            assert row["cost_usd"] is None
        else:
            assert abs(Decimal(str(row["cost_usd"])) - group["cost_usd"]) < Decimal("1e-9")


async def test_group_by_feature_matches_the_rows(seeded: Seeded) -> None:
    rows = orjson.loads(report(seeded, "--group-by", "feature", "--json").stdout)
    assert_rows_match(rows, expected(seeded.records, lambda r: (r.raw_metadata.get("Feature"),)), ["feature"])
    costs = [row["cost_usd"] for row in rows if row["cost_usd"] is not None]
    assert costs == sorted(costs, reverse=True)  # highest cost first
    assert rows[-1]["cost_usd"] is None or None not in [row["cost_usd"] for row in rows[:-1]]


async def test_several_dimensions_columns_and_any_metadata_key(seeded: Seeded) -> None:
    rows = orjson.loads(report(seeded, "--group-by", "model", "--group-by", "TEAM", "--group-by", "key",
                               "--group-by", "status", "--since", "40d", "--json").stdout)
    want = expected(seeded.records, lambda r: (r.model, r.raw_metadata.get("Team"),
                                               seeded.key_names[r.majordomo_api_key_id or ""], r.status_code),
                    since=NOW - timedelta(days=40, minutes=5))
    assert_rows_match(rows, want, ["model", "TEAM", "key", "status"])


async def test_where_and_limit(seeded: Seeded) -> None:
    rows = orjson.loads(report(seeded, "--group-by", "user", "--where", "feature=summarize",
                               "--where", "provider=openai", "--json").stdout)
    subset = [r for r in seeded.records if r.raw_metadata.get("Feature") == "summarize" and r.provider == "openai"]
    assert_rows_match(rows, expected(subset, lambda r: (r.raw_metadata.get("User-Id"),)), ["user"])
    limited = orjson.loads(report(seeded, "--group-by", "user", "--limit", "2", "--json").stdout)
    assert limited == orjson.loads(report(seeded, "--group-by", "user", "--json").stdout)[:2]
    errors = orjson.loads(report(seeded, "--group-by", "status", "--where", "status=429", "--json").stdout)
    assert [row["status"] for row in errors] == [429]


async def test_every_day_in_a_time_zone(seeded: Seeded) -> None:
    zone = ZoneInfo("America/New_York")
    rows = orjson.loads(report(seeded, "--group-by", "provider", "--every", "day", "--tz", "America/New_York",
                               "--json").stdout)

    def day(r: RequestRecord) -> tuple[Any, ...]:
        local = r.requested_at.astimezone(zone)
        start = datetime(local.year, local.month, local.day, tzinfo=zone)
        return (r.provider, start.isoformat())

    assert_rows_match(rows, expected(seeded.records, day), ["provider", "bucket"])
    buckets = [row["bucket"] for row in rows]
    assert buckets == sorted(buckets, key=datetime.fromisoformat)
    weeks = orjson.loads(report(seeded, "--every", "week", "--json").stdout)
    assert all(datetime.fromisoformat(w["bucket"]).weekday() == 0 for w in weeks)  # ISO weeks start on Monday
    assert sum(w["requests"] for w in weeks) == sum(1 for r in seeded.records
                                                    if r.requested_at >= NOW - timedelta(days=30))


async def test_csv_and_table(seeded: Seeded) -> None:
    as_json = orjson.loads(report(seeded, "--group-by", "feature", "--json").stdout)
    parsed = list(csv.DictReader(io.StringIO(report(seeded, "--group-by", "feature", "--csv").stdout)))
    assert [row["feature"] or None for row in parsed] == [row["feature"] for row in as_json]
    assert [int(row["requests"]) for row in parsed] == [row["requests"] for row in as_json]
    assert list(parsed[0]) == ["feature", "requests", "input_tokens", "output_tokens", "cached_tokens",
                               "cache_write_tokens", "reasoning_tokens", "cost_usd", "unpriced", "errors", "aborted"]
    table = report(seeded, "--group-by", "feature").stdout
    assert "summarize" in table and "total" in table
    total_requests = sum(row["requests"] for row in as_json)
    assert f"{total_requests:,}" in table


async def test_bad_input_is_refused_with_a_reason(seeded: Seeded) -> None:
    cases = [
        (["--since", "last tuesday"], "cannot read 'last tuesday' as a time"),
        (["--tz", "Mars/Olympus", "--every", "day"], "unknown time zone 'Mars/Olympus'"),
        (["--where", "feature"], "write DIM=VALUE"),
        (["--where", "status=ok"], "a status is a number"),
        (["--group-by", "model", "--group-by", "MODEL"], "given twice"),
        (["--since", "2026-12-01", "--until", "2026-11-01"], "--since must be earlier than --until"),
    ]
    for args, message in cases:
        result = report(seeded, *args, check=False)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)


async def test_empty_range_says_so(seeded: Seeded, tmp_path: Path) -> None:
    assert orjson.loads(report(seeded, "--since", "2000-01-01", "--until", "2000-01-02", "--json").stdout) == []
    assert "no requests" in report(seeded, "--since", "2000-01-01", "--until", "2000-01-02").stdout
