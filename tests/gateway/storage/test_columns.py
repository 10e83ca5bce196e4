"""The shared statements and the by-name row mapping, rendered for each dialect and run on both databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.columns import KEY_COLUMNS, key_record, render
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.postgres import DIALECT as POSTGRES
from majordomo_gateway.storage.records import CostUpdate
from majordomo_gateway.storage.sqlite import DIALECT as SQLITE

from tests.support.postgres import PostgresServer
from tests.support.records import NOW, make_record


def test_parameters_render_per_dialect_and_casts_are_left_alone() -> None:
    template = "SELECT {id} FROM t WHERE a = :a AND b::text = :b AND c = :a"
    sqlite = render(template, SQLITE)
    assert sqlite.sql == "SELECT id FROM t WHERE a = ? AND b::text = ? AND c = ?"
    assert sqlite.args(a=1, b=2) == (1, 2, 1)
    postgres = render(template, POSTGRES)
    assert postgres.sql == "SELECT id::text FROM t WHERE a = $1 AND b::text = $2 AND c = $1"
    assert postgres.args(b=2, a=1) == (1, 2)


def test_key_rows_map_by_column_name_not_position() -> None:
    values = {"id": "k", "name": "n", "description": None, "key_prefix": "mdm_sk_abcd",
              "created_at": NOW, "updated_at": NOW, "revoked_at": None, "last_used_at": None, "request_count": 3,
              "owner_user_id": None, "expires_at": None, "allowed_providers": None, "allowed_models": '["gpt-4o*"]'}
    shuffled = dict(reversed(list(values.items())))
    record = key_record(shuffled, POSTGRES)
    assert (record.id, record.request_count, record.created_at) == ("k", 3, NOW)
    assert record.allowed_models == ("gpt-4o*",) and record.allowed_providers is None
    assert set(KEY_COLUMNS) == set(values)
    text_times = {**values, "created_at": NOW.isoformat(), "updated_at": NOW.isoformat()}
    assert key_record(text_times, SQLITE).updated_at == NOW


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    db = open_database(url)
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


async def test_usage_rows_filters_and_pages_the_same_on_both(database: Database) -> None:
    later = NOW + timedelta(hours=1)
    rows = [make_record(None), make_record(None, at=later), make_record(None, model="gpt-4o", at=later),
            make_record(None, usage_source="none")]
    await database.insert_requests(rows)
    everything = await database.usage_rows(after_id=None, since=None, model=None, limit=10)
    assert [r.id for r in everything] == sorted(r.id for r in rows[:3])
    first = everything[0]
    assert first.usage.input_tokens == 1000 and first.usage.cached_tokens == 200
    assert first.total_cost == Decimal("0.0032850000") and first.model_alias_found
    assert first.requested_at == NOW
    page = await database.usage_rows(after_id=everything[0].id, since=None, model=None, limit=1)
    assert [r.id for r in page] == [everything[1].id]
    since = await database.usage_rows(after_id=None, since=later, model="gpt-4o", limit=10)
    assert [r.id for r in since] == [rows[2].id]


async def test_unpriced_models_counts_rows_without_a_price(database: Database) -> None:
    late = datetime(2026, 11, 28, tzinfo=UTC)
    await database.insert_requests([
        make_record(None, model="mystery", model_alias_found=False),
        make_record(None, model="mystery", model_alias_found=False, at=late),
        make_record(None, model="known"),
    ])
    [unpriced] = await database.unpriced_models()
    assert (unpriced.provider, unpriced.model, unpriced.requests) == ("anthropic", "mystery", 2)
    assert (unpriced.first_seen, unpriced.last_seen) == (NOW, late)
    [row] = [r for r in await database.usage_rows(after_id=None, since=None, model="known", limit=5)]
    assert await database.update_costs([CostUpdate(row.id, None, None, None, False)]) == 1
    assert len(await database.unpriced_models()) == 2


async def test_key_writes_return_the_row_on_both(database: Database) -> None:
    key = generate_key()
    created = await database.create_key(str(uuid_utils.uuid7()), "k", "d", hash_secret(key), display_prefix(key), NOW)
    assert await database.find_key_by_hash(hash_secret(key)) == created
    assert await database.get_key("not-a-uuid") is None  # a malformed id is not found, not an error
    later = NOW + timedelta(minutes=1)
    updated = await database.update_key(created.id, name=None, description="new", now=later)
    assert updated is not None and (updated.name, updated.description, updated.updated_at) == ("k", "new", later)
    assert await database.revoke_key("00000000-0000-0000-0000-000000000000", later) is None
    assert [k.id for k in await database.list_keys()] == [created.id]
