"""Both backends against real databases: migrations, idempotent inserts, key counters, keys CRUD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import uuid_utils
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.migration import load_migrations
from majordomo_gateway.storage.records import COLUMNS, truncate_message

from tests.support import PostgresServer
from tests.support.records import NOW, make_record


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'm.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    db = open_database(url)
    await db.connect()
    # A fresh database gets every shipped migration, in order.
    assert await db.migrate() == [f"{m.version:04d}_{m.name}" for m in load_migrations(db.dialect)]
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


async def fetch_rows(database: Database, sql: str) -> list[tuple[object, ...]]:
    if database.dialect == "sqlite":
        return await database._run(lambda c: c.execute(sql).fetchall())  # type: ignore[attr-defined]
    return [tuple(r) for r in await database._fetch(sql)]  # type: ignore[attr-defined]


async def test_nul_is_stored_as_replacement_character_on_both_databases(database: Database) -> None:
    # PostgreSQL refuses U+0000 in text and jsonb (the rows ended up in *.rejected files); SQLite kept
    # it, but its functions stop there (length() and ->> saw "gpt").  Both now store U+FFFD.
    key = generate_key()
    api_key = await database.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key),
                                        display_prefix(key), NOW)
    with_nul = make_record(api_key.id, model="gpt\x00x", error_message="upstream said \x00\x00 boom",
                           provider_api_key_alias="team\x00a", raw_metadata={"Feature": "chat\x00", "K\x00": "v"})
    literal = "back\\u0000slash"  # a backslash then "u0000": six ordinary characters, not a NUL
    escaped = make_record(api_key.id, model=literal, raw_metadata={"Feature": literal})
    clean = make_record(api_key.id)
    batch = [with_nul, escaped, clean]
    assert (await database.insert_requests(batch)).inserted == 3
    assert (await database.insert_requests(batch)).inserted == 0  # replay: counted once
    assert with_nul.model == "gpt\x00x"  # the caller's record is not rewritten
    # A batch whose only suspect is the literal takes the slow path and must leave it as it is.
    only_literal = make_record(None, error_message=literal, raw_metadata={literal: literal})
    assert (await database.insert_requests([only_literal])).inserted == 1

    rows = dict(await fetch_rows(database, (
        "SELECT id::text, json_build_array(model, length(model), error_message, provider_api_key_alias, "
        "raw_metadata->>'Feature', raw_metadata) FROM llm_requests"
    ) if database.dialect == "postgres" else (
        "SELECT id, json_array(model, length(model), error_message, provider_api_key_alias, "
        "raw_metadata->>'Feature', json(raw_metadata)) FROM llm_requests"
    )))
    assert {k: orjson.loads(v) for k, v in rows.items()} == {
        with_nul.id: ["gpt\ufffdx", 5, "upstream said \ufffd\ufffd boom", "team\ufffda", "chat\ufffd",
                      {"Feature": "chat\ufffd", "K\ufffd": "v"}],
        escaped.id: [literal, len(literal), None, None, literal, {"Feature": literal}],
        clean.id: ["claude-sonnet-4-20250514", 24, None, None, "chat", {"Feature": "chat", "User-Id": "u1"}],
        only_literal.id: ["claude-sonnet-4-20250514", 24, literal, None, None, {literal: literal}],
    }
    stored = await database.find_key_by_hash(hash_secret(key))
    assert stored is not None and stored.request_count == 3


async def test_empty_batch_inserts_nothing(database: Database) -> None:
    result = await database.insert_requests([])
    assert (result.inserted, result.duplicates) == (0, 0)


def test_truncate_message_replaces_nul() -> None:
    assert truncate_message("a\x00b") == "a\ufffdb"
    assert truncate_message("\x00" * 10, limit=5) == "\ufffd" * 4 + "…"


@pytest.fixture
async def postgres_database(postgres: PostgresServer) -> AsyncIterator[Database]:
    db = open_database(postgres.create())
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


async def test_values_round_trip_exactly_on_postgres(postgres_database: Database) -> None:
    key = generate_key()
    api_key = await postgres_database.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key),
                                                 display_prefix(key), NOW)
    ist = timezone(timedelta(hours=5, minutes=30))
    full = make_record(
        api_key.id, at=datetime(2026, 11, 27, 23, 59, 59, 999999, tzinfo=ist),
        provider_api_key_alias="équipe ☕", model="modèle-🦙", response_time_ms=0.1 + 0.2,
        time_to_first_token_ms=1e-7, streamed=True, aborted=True, input_tokens=2**62, output_tokens=0,
        reasoning_tokens=7, web_search_requests=3, input_cost=Decimal("1234567890.0123456789"),
        output_cost=Decimal("1E-10"), total_cost=Decimal("-0.0000000001"), model_alias_found=False,
        usage_source="missing", status_code=499, error_message='quote " backslash \\ newline \n tab \t é',
        raw_metadata={"Feature": "café ☕", "Emoji-👩‍💻": "🚀 \"quoted\" \\ x", "Empty": ""},
    )
    bare = make_record(None, at=NOW.replace(microsecond=1), provider_api_key_hash=None, model=None,
                       response_time_ms=123456.789012345, input_cost=None, output_cost=None, total_cost=None,
                       raw_metadata={})
    assert (await postgres_database.insert_requests([full, bare])).inserted == 2

    def text(column: str) -> str:
        return {"id": "id::text", "majordomo_api_key_id": "majordomo_api_key_id::text",
                "raw_metadata": "raw_metadata::text"}.get(column, column)

    rows = {r[0]: r for r in await fetch_rows(
        postgres_database, f"SELECT {', '.join(text(c) for c in COLUMNS)} FROM llm_requests")}
    for record in (full, bare):
        expected = list(record.as_tuple())
        stored = list(rows[record.id])
        expected[-1] = record.raw_metadata
        stored[-1] = orjson.loads(stored[-1])
        assert stored == expected
    stored_full = rows[full.id]
    # Equal is not enough for costs: every digit and the column's scale must survive.
    assert [str(stored_full[COLUMNS.index(c)]) for c in ("input_cost", "output_cost", "total_cost")] == [
        "1234567890.0123456789", "1E-10", "-1E-10"]
    assert stored_full[COLUMNS.index("requested_at")].isoformat() == "2026-11-27T18:29:59.999999+00:00"

