"""PostgreSQL for production: asyncpg, JSONB metadata with a GIN index, exact NUMERIC costs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from majordomo_gateway.storage.admin import admin_tables
from majordomo_gateway.storage.budgets import BudgetTable, Statement, Then, counter_value_sql, match_sql, period_sql
from majordomo_gateway.storage.changes import PostgresChangeFeed
from majordomo_gateway.storage.columns import (
    Dialect,
    NamedRow,
    Query,
    encode_list,
    key_queries,
    key_record,
    unpriced_model,
    unpriced_models_query,
    usage_row,
    usage_rows_query,
)
from majordomo_gateway.storage.errors import ConstraintViolation, DatabaseUnavailable
from majordomo_gateway.storage.migration import load_migrations
from majordomo_gateway.storage.proxy_keys import ProxyKeyTable
from majordomo_gateway.storage.records import (
    COLUMNS,
    CostUpdate,
    InsertResult,
    KeyRecord,
    RequestRecord,
    UnpricedModel,
    UsageRow,
    encode_extra,
    has_nul,
    without_nul,
)

# Column types for the batch insert.  The whole batch travels as ONE jsonb parameter (an array of row
# arrays, serialized by orjson in C): asyncpg's per-element encoding of one array per column cost
# several times more per row on the event loop (docs/stack-choice.md), and PostgreSQL parses the
# JSON in its own process instead.  One round trip per batch, and ON CONFLICT keeps replays of the
# spool idempotent (COPY cannot skip duplicates).
_PG_TYPES: dict[str, str] = {
    "id": "uuid", "majordomo_api_key_id": "uuid", "provider_api_key_hash": "text",
    "provider_api_key_alias": "text", "provider": "text", "route": "text", "model": "text",
    "request_path": "text", "request_method": "text", "requested_at": "timestamptz",
    "responded_at": "timestamptz", "response_time_ms": "float8", "time_to_first_token_ms": "float8",
    "streamed": "bool", "aborted": "bool", "input_tokens": "int8", "output_tokens": "int8",
    "cached_tokens": "int8", "cache_creation_tokens": "int8", "cache_creation_1h_tokens": "int8",
    "reasoning_tokens": "int8", "web_search_requests": "int8", "input_cost": "numeric",
    "output_cost": "numeric", "total_cost": "numeric", "model_alias_found": "bool",
    "usage_source": "text", "status_code": "int4", "error_message": "text", "raw_metadata": "jsonb",
}
assert tuple(_PG_TYPES) == COLUMNS, "keep _PG_TYPES in the column order of RequestRecord"


def _timestamp(value: Any) -> datetime | None:
    return value  # type: ignore[no-any-return]  # asyncpg decodes timestamptz itself


DIALECT = Dialect("postgres", numbered_parameters=True, id_text="id::text", returning_keys=True,
                  decode_time=_timestamp)


def _element(index: int, pg_type: str) -> str:
    # ->> yields SQL NULL for JSON null and the unescaped text otherwise; costs arrive as JSON strings
    # (Decimal -> str), so ::numeric keeps every digit.
    return f"(e->{index})" if pg_type == "jsonb" else f"(e->>{index})::{pg_type}"


_INSERT = (
    f"INSERT INTO llm_requests ({', '.join(COLUMNS)}) "
    f"SELECT {', '.join(_element(i, t) for i, t in enumerate(_PG_TYPES.values()))} "
    "FROM jsonb_array_elements($1::jsonb) AS e "
    "ON CONFLICT (id) DO NOTHING RETURNING majordomo_api_key_id, requested_at, model, raw_metadata, total_cost"
)
# One statement, one round trip, atomic: insert the batch, then bump each key's counters by the
# rows that were really new (RETURNING skips replayed duplicates, so counts stay exact).
_INSERT_AND_COUNT = (
    f"WITH inserted AS ({_INSERT}), "
    "per_key AS (SELECT majordomo_api_key_id AS key_id, count(*) AS uses, max(requested_at) AS last_used "
    "FROM inserted WHERE majordomo_api_key_id IS NOT NULL GROUP BY 1), "
    "touched AS (UPDATE api_keys SET request_count = api_keys.request_count + per_key.uses, "
    "last_used_at = GREATEST(api_keys.last_used_at, per_key.last_used) "
    "FROM per_key WHERE api_keys.id = per_key.key_id RETURNING 1), "
    # The budget ledger, from the same rows (storage/budgets.py), in a fixed order so that two
    # writers adding to the same counters lock them in the same order (no deadlock).
    "spend AS (INSERT INTO budget_spend (budget_id, scope_value, period_start, spent, requests) "
    f"SELECT b.id, {counter_value_sql()} AS v, {period_sql(DIALECT)} AS p, coalesce(sum(r.total_cost), 0), "
    f"count(*) FROM inserted r JOIN budgets b ON {match_sql(DIALECT)} GROUP BY b.id, v, p ORDER BY b.id, v, p "
    "ON CONFLICT (budget_id, scope_value, period_start) DO UPDATE SET "
    "spent = budget_spend.spent + excluded.spent, requests = budget_spend.requests + excluded.requests "
    "RETURNING 1) "
    "SELECT count(*) FROM inserted"
)
_CONNECTION_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
                      asyncpg.CannotConnectNowError, TimeoutError)


# Re-pricing moves each budget counter the row was counted in by the change of its cost (only
# counters that exist: a row of a period no budget counted stays uncounted).  ``old`` locks the
# rows, so a concurrent re-price waits and then reads the cost this one wrote.
_UPDATE_COSTS = (
    "WITH u AS (SELECT * FROM unnest($1::uuid[], $2::numeric[], $3::numeric[], $4::numeric[], $5::bool[]) "
    "AS u(id, input_cost, output_cost, total_cost, found)), "
    "old AS (SELECT r.id, r.total_cost FROM llm_requests r JOIN u ON r.id = u.id ORDER BY r.id FOR UPDATE OF r), "
    # upd reads old (so old runs first: a row this statement updated could not be locked after)
    "upd AS (UPDATE llm_requests AS r SET input_cost = u.input_cost, output_cost = u.output_cost, "
    "total_cost = u.total_cost, model_alias_found = u.found FROM u JOIN old ON old.id = u.id WHERE r.id = u.id "
    "RETURNING r.id, r.majordomo_api_key_id, r.requested_at, r.model, r.raw_metadata, r.total_cost, "
    "old.total_cost AS old_cost), "
    "delta AS (SELECT b.id AS budget_id, " + counter_value_sql() + " AS v, " + period_sql(DIALECT) + " AS p, "
    "sum(coalesce(r.total_cost, 0) - coalesce(r.old_cost, 0)) AS d "
    "FROM upd r JOIN budgets b ON " + match_sql(DIALECT) + " GROUP BY 1, 2, 3), "
    "adjusted AS (UPDATE budget_spend s SET spent = s.spent + delta.d FROM delta "
    "WHERE s.budget_id = delta.budget_id AND s.scope_value = delta.v AND s.period_start = delta.p "
    "AND delta.d <> 0 RETURNING 1) "
    "SELECT count(*) FROM upd"
)


_KEYS = key_queries(DIALECT)
_UNPRICED = unpriced_models_query(DIALECT)


class PostgresDatabase:
    dialect = "postgres"

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._min_size = min_size
        self._max_size = max_size
        self.proxy_keys = ProxyKeyTable(self, DIALECT, lambda moment: moment)
        self.users, self.sessions, self.audit = admin_tables(self, DIALECT, lambda moment: moment)
        self.budgets = BudgetTable(self, DIALECT, lambda moment: moment)

    def change_feed(self) -> PostgresChangeFeed:
        return PostgresChangeFeed(self.url)

    async def rows(self, query: Query, args: Sequence[Any]) -> list[NamedRow]:
        return list(await self._fetch(query.sql, *args))

    async def atomically(self, statements: Sequence[Statement], *, lock_requests: bool = False,
                         then: Then | None = None) -> list[list[NamedRow]]:
        try:
            async with self._require_pool().acquire() as conn, conn.transaction():
                if lock_requests:
                    # SHARE blocks inserts (ROW EXCLUSIVE), not reads: a writer's batch waits, and its
                    # statement, whose snapshot is taken once it has the lock, sees what we commit.
                    await conn.execute("LOCK TABLE llm_requests IN SHARE MODE")
                results: list[list[NamedRow]] = [list(await conn.fetch(query.sql, *args))
                                                 for query, args in statements]
                if then is not None:
                    results += [list(await conn.fetch(query.sql, *args)) for query, args in then(results)]
                return results
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise ConstraintViolation(str(exc)) from exc

    async def connect(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.url, min_size=self._min_size, max_size=self._max_size, timeout=10,
                command_timeout=30,
            )
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {_describe(exc)}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise DatabaseUnavailable("PostgreSQL is not connected")
        return self._pool

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        try:
            rows: list[asyncpg.Record] = await self._require_pool().fetch(query, *args)
            return rows
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise ConstraintViolation(str(exc)) from exc

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def migrate(self) -> list[str]:
        pool = self._require_pool()
        applied: list[str] = []
        try:
            async with pool.acquire() as conn, conn.transaction():
                # One migrator at a time across processes (several workers start together).
                await conn.execute("SELECT pg_advisory_xact_lock(7680001)")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
                )
                done = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for migration in load_migrations("postgres"):
                    if migration.version in done:
                        continue
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations VALUES ($1, $2, now())", migration.version, migration.name
                    )
                    applied.append(f"{migration.version:04d}_{migration.name}")
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        return applied

    async def insert_requests(self, records: Sequence[RequestRecord]) -> InsertResult:
        try:
            inserted = await self._require_pool().fetchval(_INSERT_AND_COUNT, _batch_json(records))
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        return InsertResult(inserted=inserted, duplicates=len(records) - inserted)

    async def _key(self, query: Query, **values: Any) -> KeyRecord | None:
        rows = await self._fetch(query.sql, *query.args(**values))
        return key_record(rows[0], DIALECT) if rows else None

    async def find_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._key(_KEYS.find_by_hash, key_hash=key_hash)

    async def create_key(self, key_id: str, name: str, description: str | None, key_hash: str,
                         key_prefix: str, now: datetime, *, owner_user_id: str | None = None,
                         expires_at: datetime | None = None, allowed_providers: tuple[str, ...] | None = None,
                         allowed_models: tuple[str, ...] | None = None) -> KeyRecord:
        created = await self._key(_KEYS.create, key_id=key_id, name=name, description=description,
                                  key_hash=key_hash, key_prefix=key_prefix, now=now, owner_user_id=owner_user_id,
                                  expires_at=expires_at, allowed_providers=encode_list(allowed_providers),
                                  allowed_models=encode_list(allowed_models))
        assert created is not None  # INSERT ... RETURNING returns the row or raises
        return created

    async def set_key_rules(self, key_id: str, *, owner_user_id: str | None, expires_at: datetime | None,
                            allowed_providers: tuple[str, ...] | None, allowed_models: tuple[str, ...] | None,
                            now: datetime) -> KeyRecord | None:
        return await self._key(_KEYS.set_rules, key_id=key_id, owner_user_id=owner_user_id, expires_at=expires_at,
                               allowed_providers=encode_list(allowed_providers),
                               allowed_models=encode_list(allowed_models), now=now)

    async def list_keys(self) -> list[KeyRecord]:
        return [key_record(r, DIALECT) for r in await self._fetch(_KEYS.list.sql)]

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._key(_KEYS.get, key_id=key_id)

    async def update_key(self, key_id: str, *, name: str | None, description: str | None,
                         now: datetime) -> KeyRecord | None:
        return await self._key(_KEYS.update, key_id=key_id, name=name, description=description, now=now)

    async def revoke_key(self, key_id: str, now: datetime) -> KeyRecord | None:
        return await self._key(_KEYS.revoke, key_id=key_id, now=now)

    async def usage_rows(self, *, after_id: str | None, since: datetime | None, model: str | None,
                         limit: int) -> list[UsageRow]:
        query = usage_rows_query(DIALECT, after_id=after_id is not None, since=since is not None,
                                 model=model is not None)
        rows = await self._fetch(query.sql, *query.args(after_id=after_id, since=since, model=model, limit=limit))
        return [usage_row(r, DIALECT) for r in rows]

    async def update_costs(self, updates: Sequence[CostUpdate]) -> int:
        if not updates:
            return 0
        columns = ([u.id for u in updates], [u.input_cost for u in updates], [u.output_cost for u in updates],
                   [u.total_cost for u in updates], [u.model_alias_found for u in updates])
        try:
            async with self._require_pool().acquire() as conn:
                updated: int = await conn.fetchval(_UPDATE_COSTS, *columns)
        except _CONNECTION_ERRORS as exc:
            raise DatabaseUnavailable(f"PostgreSQL: {_describe(exc)}") from exc
        return updated

    async def aggregate(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        return [dict(row) for row in await self._fetch(sql, *args)]

    async def unpriced_models(self) -> list[UnpricedModel]:
        return [unpriced_model(r, DIALECT) for r in await self._fetch(_UNPRICED.sql)]


def _batch_json(records: Sequence[RequestRecord]) -> str:
    payload = orjson.dumps([r.as_tuple() for r in records], default=encode_extra)
    # orjson writes U+0000 as the escape \u0000, which jsonb refuses (the row would be set aside, never
    # stored).  The search also matches a literal backslash before "u0000" (written \\u0000), so the rare
    # slow path cleans the values, never the bytes, and such strings are stored unchanged.
    if b"\\u0000" in payload:
        payload = orjson.dumps([(without_nul(r) if has_nul(r) else r).as_tuple() for r in records],
                               default=encode_extra)
    return payload.decode()


def _describe(exc: BaseException) -> str:
    # asyncpg messages never contain the password, but the DSN might end up in OSError text on
    # some paths; the class name plus message is what an operator needs.
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
