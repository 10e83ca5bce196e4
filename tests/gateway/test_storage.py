"""Both backends against real databases: migrations, idempotent inserts, key counters, keys CRUD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.records import RequestRecord

from tests.support import PostgresServer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def make_record(key_id: str | None, *, at: datetime = NOW, **changes: object) -> RequestRecord:
    record = RequestRecord(
        id=str(uuid_utils.uuid7()), majordomo_api_key_id=key_id, provider_api_key_hash="h" * 64,
        provider_api_key_alias=None, provider="anthropic", route="anthropic", model="claude-sonnet-4-20250514",
        request_path="/v1/messages", request_method="POST", requested_at=at,
        responded_at=at + timedelta(milliseconds=250), response_time_ms=250.0, input_tokens=1000,
        output_tokens=50, cached_tokens=200, input_cost=Decimal("0.0025350000"),
        output_cost=Decimal("0.00075"), total_cost=Decimal("0.0032850000"), model_alias_found=True,
        usage_source="reported", status_code=200, raw_metadata={"Feature": "chat", "User-Id": "u1"},
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    db = open_database(url)
    await db.connect()
    assert await db.migrate() == ["0001_initial"]
    assert await db.migrate() == []  # idempotent
    yield db
    await db.close()


async def test_insert_is_idempotent_and_counts_key_use_once(database: Database) -> None:
    key = generate_key()
    record = await database.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key),
                                       display_prefix(key), NOW)
    later = NOW + timedelta(minutes=5)
    rows = [make_record(record.id), make_record(record.id, at=later), make_record(None)]
    first = await database.insert_requests(rows)
    assert (first.inserted, first.duplicates) == (3, 0)
    replay = await database.insert_requests(rows)  # a spool replay of rows already written
    assert (replay.inserted, replay.duplicates) == (0, 3)
    stored = await database.find_key_by_hash(hash_secret(key))
    assert stored is not None
    assert stored.request_count == 2
    assert stored.last_used_at == later


async def test_costs_are_exact_and_metadata_is_queryable(database: Database) -> None:
    await database.insert_requests([make_record(None), make_record(None, raw_metadata={"Feature": "other"})])
    conn_query = (
        "SELECT raw_metadata->>'Feature', SUM(total_cost), COUNT(*) FROM llm_requests GROUP BY 1 ORDER BY 1"
    )
    if database.dialect == "sqlite":
        rows = await database._run(lambda c: c.execute(conn_query).fetchall())  # type: ignore[attr-defined]
        assert rows == [("chat", pytest.approx(0.003285), 1), ("other", pytest.approx(0.003285), 1)]
    else:
        rows = await database._fetch(conn_query)  # type: ignore[attr-defined]
        assert [tuple(r) for r in rows] == [("chat", Decimal("0.0032850000"), 1),
                                            ("other", Decimal("0.0032850000"), 1)]


async def test_key_lifecycle(database: Database) -> None:
    key = generate_key()
    assert key.startswith("mdm_sk_") and len(key) == len("mdm_sk_") + 43
    created = await database.create_key(str(uuid_utils.uuid7()), "dev", "laptop", hash_secret(key),
                                        display_prefix(key), NOW)
    assert created.active and created.request_count == 0
    assert [k.id for k in await database.list_keys()] == [created.id]
    updated = await database.update_key(created.id, name="renamed", description=None, now=NOW)
    assert updated is not None and (updated.name, updated.description) == ("renamed", "laptop")
    revoked = await database.revoke_key(created.id, NOW)
    assert revoked is not None and not revoked.active
    assert await database.get_key("00000000-0000-0000-0000-000000000000") is None
    assert await database.find_key_by_hash(hash_secret("mdm_sk_unknown")) is None
