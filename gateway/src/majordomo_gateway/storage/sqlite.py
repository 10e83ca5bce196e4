"""The embedded default: one SQLite file that users can open with ``sqlite3`` and query directly.

sqlite3 is synchronous, so every call runs on one dedicated thread: the event loop never waits on
disk, and a single connection means no writer contention inside the process (WAL mode lets other
processes, such as the CLI or a user's ``sqlite3`` shell, read and write alongside).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from majordomo_gateway.periods import period_start_text
from majordomo_gateway.storage.admin import admin_tables
from majordomo_gateway.storage.budgets import BudgetTable, Statement, Then, counter_value_sql, match_sql, period_sql
from majordomo_gateway.storage.changes import SQLiteChangeFeed
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
from majordomo_gateway.storage.migration import load_migrations, split_statements
from majordomo_gateway.storage.proxy_keys import ProxyKeyTable
from majordomo_gateway.storage.records import (
    COLUMNS,
    CostUpdate,
    InsertResult,
    KeyRecord,
    RequestRecord,
    UnpricedModel,
    UsageRow,
    has_nul,
    without_nul,
)
from majordomo_gateway.timebuckets import bucket_start

T = TypeVar("T")

_INSERT = (
    f"INSERT OR IGNORE INTO llm_requests ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)
_BOOL_INDEXES = tuple(COLUMNS.index(c) for c in ("streamed", "aborted", "model_alias_found"))
_TIME_INDEXES = tuple(COLUMNS.index(c) for c in ("requested_at", "responded_at"))
_COST_INDEXES = tuple(COLUMNS.index(c) for c in ("input_cost", "output_cost", "total_cost"))
_METADATA_INDEX = COLUMNS.index("raw_metadata")

def _cost_param(value: Any) -> str | None:
    return None if value is None else str(value)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_ts(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


DIALECT = Dialect("sqlite", numbered_parameters=False, id_text="id", returning_keys=False,
                  decode_time=_parse_ts)
_KEYS = key_queries(DIALECT)
# The budget ledger, from the rows just inserted (their ids, as a JSON array), in the insert's
# transaction (storage/budgets.py).
_COUNT_SPEND = (
    "INSERT INTO budget_spend (budget_id, scope_value, period_start, spent, requests) "
    f"SELECT b.id, {counter_value_sql()} AS v, {period_sql(DIALECT)} AS p, coalesce(sum(r.total_cost), 0), "
    f"count(*) FROM llm_requests r JOIN budgets b ON {match_sql(DIALECT)} "
    "WHERE r.id IN (SELECT value FROM json_each(?)) GROUP BY b.id, v, p "
    "ON CONFLICT (budget_id, scope_value, period_start) DO UPDATE SET "
    "spent = budget_spend.spent + excluded.spent, requests = budget_spend.requests + excluded.requests"
)
_UNPRICED = unpriced_models_query(DIALECT)
_REQUESTED_AT = COLUMNS.index("requested_at")
# Re-pricing: before the rows change, each budget counter they were counted in moves by the
# change of their cost (counters that exist only).  ? is a JSON array of [id, new total cost].
_ADJUST_SPEND = (
    "UPDATE budget_spend SET spent = spent + delta.d FROM ("
    f"SELECT b.id AS budget_id, {counter_value_sql()} AS v, {period_sql(DIALECT)} AS p, "
    "sum(coalesce(CAST(u.value ->> 1 AS NUMERIC), 0) - coalesce(r.total_cost, 0)) AS d "
    f"FROM json_each(?) u JOIN llm_requests r ON r.id = u.value ->> 0 JOIN budgets b ON {match_sql(DIALECT)} "
    "GROUP BY 1, 2, 3) AS delta "
    "WHERE budget_spend.budget_id = delta.budget_id AND budget_spend.scope_value = delta.v "
    "AND budget_spend.period_start = delta.p AND delta.d <> 0"
)


def _rows(conn: sqlite3.Connection, query: Query, args: Sequence[Any]) -> list[sqlite3.Row]:
    cursor = conn.execute(query.sql, args)
    cursor.row_factory = sqlite3.Row  # by name, for this read only: other callers keep plain tuples
    return cursor.fetchall()


def _key(conn: sqlite3.Connection, query: Query, args: Sequence[Any]) -> KeyRecord | None:
    rows = _rows(conn, query, args)
    return key_record(rows[0], DIALECT) if rows else None


def _params(record: RequestRecord) -> list[Any]:
    if has_nul(record):
        # SQLite would keep the NUL, but length() and ->> stop at it; store what
        # PostgreSQL stores, so the two databases read the same.
        record = without_nul(record)
    values = list(record.as_tuple())
    for index in _BOOL_INDEXES:
        values[index] = int(values[index])
    for index in _TIME_INDEXES:
        values[index] = _ts(values[index])
    for index in _COST_INDEXES:
        if values[index] is not None:
            values[index] = str(values[index])
    values[_METADATA_INDEX] = orjson.dumps(values[_METADATA_INDEX]).decode()
    return values


class SQLiteDatabase:
    dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self.proxy_keys = ProxyKeyTable(self, DIALECT, _ts)
        self.users, self.sessions, self.audit = admin_tables(self, DIALECT, _ts)
        self.budgets = BudgetTable(self, DIALECT, _ts)

    async def rows(self, query: Query, args: Sequence[Any]) -> list[NamedRow]:
        return await self._run(lambda conn: list(_rows(conn, query, args)))

    async def atomically(self, statements: Sequence[Statement], *, lock_requests: bool = False,
                         then: Then | None = None) -> list[list[NamedRow]]:
        # BEGIN IMMEDIATE takes the write lock: no other writer (the row writer included) runs
        # until COMMIT, which is what lock_requests asks for.  ``then`` runs on this thread, so it
        # must only read what it is given.
        def run(conn: sqlite3.Connection) -> list[list[NamedRow]]:
            conn.execute("BEGIN IMMEDIATE")
            try:
                results: list[list[NamedRow]] = [list(_rows(conn, query, args)) for query, args in statements]
                if then is not None:
                    results += [list(_rows(conn, query, args)) for query, args in then(results)]
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return results

        return await self._run(run)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise DatabaseUnavailable("the SQLite database is not open")
        conn = self._conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(f"SQLite {self.path}: {exc}") from exc
        except sqlite3.IntegrityError as exc:
            raise ConstraintViolation(str(exc)) from exc

    async def connect(self) -> None:
        if self._conn is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="majordomo-sqlite")

        def open_conn() -> sqlite3.Connection:
            parent = Path(self.path).parent
            parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable across process crashes (only an OS crash can lose
            # the last transactions), which is the guarantee the writer's design relies on.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.create_function("majordomo_bucket", 3, bucket_start, deterministic=True)
            conn.create_function("majordomo_period_start", 3, period_start_text, deterministic=True)
            return conn

        try:
            self._conn = await asyncio.get_running_loop().run_in_executor(self._executor, open_conn)
        except sqlite3.Error as exc:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise DatabaseUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc

    async def close(self) -> None:
        if self._conn is None or self._executor is None:
            return
        conn, executor = self._conn, self._executor
        await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)
        self._conn = None
        self._executor = None

    def change_feed(self) -> SQLiteChangeFeed:
        return SQLiteChangeFeed(self.path)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def migrate(self) -> list[str]:
        migrations = load_migrations("sqlite")

        def apply(conn: sqlite3.Connection) -> list[str]:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            applied = []
            for migration in migrations:
                if migration.version in done:
                    continue
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # Another process may have migrated while we waited for the lock.
                    if conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
                    ).fetchone():
                        conn.execute("COMMIT")
                        continue
                    for statement in split_statements(migration.sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (migration.version, migration.name, _ts(datetime.now(UTC))),
                    )
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                applied.append(f"{migration.version:04d}_{migration.name}")
            return applied

        return await self._run(apply)

    async def insert_requests(self, records: Sequence[RequestRecord]) -> InsertResult:
        params = [_params(record) for record in records]

        def insert(conn: sqlite3.Connection) -> InsertResult:
            uses: Counter[str] = Counter()
            last_used: dict[str, str] = {}
            inserted = 0
            new_ids: list[str] = []
            conn.execute("BEGIN IMMEDIATE")
            try:
                for row, record in zip(params, records, strict=True):
                    if conn.execute(_INSERT, row).rowcount != 1:
                        continue
                    inserted += 1
                    new_ids.append(record.id)
                    key_id = record.majordomo_api_key_id
                    if key_id is not None:
                        uses[key_id] += 1
                        stamp = row[_REQUESTED_AT]
                        last_used[key_id] = max(last_used.get(key_id, stamp), stamp)
                for key_id, count in uses.items():
                    conn.execute(
                        "UPDATE api_keys SET request_count = request_count + ?, "
                        "last_used_at = max(coalesce(last_used_at, ''), ?) WHERE id = ?",
                        (count, last_used[key_id], key_id),
                    )
                if new_ids:
                    conn.execute(_COUNT_SPEND, (orjson.dumps(new_ids).decode(),))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return InsertResult(inserted=inserted, duplicates=len(params) - inserted)

        return await self._run(insert)

    async def find_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        return await self._run(lambda conn: _key(conn, _KEYS.find_by_hash, _KEYS.find_by_hash.args(key_hash=key_hash)))

    async def create_key(self, key_id: str, name: str, description: str | None, key_hash: str,
                         key_prefix: str, now: datetime, *, owner_user_id: str | None = None,
                         expires_at: datetime | None = None, allowed_providers: tuple[str, ...] | None = None,
                         allowed_models: tuple[str, ...] | None = None) -> KeyRecord:
        args = _KEYS.create.args(key_id=key_id, name=name, description=description, key_hash=key_hash,
                                 key_prefix=key_prefix, now=_ts(now), owner_user_id=owner_user_id,
                                 expires_at=_ts(expires_at), allowed_providers=encode_list(allowed_providers),
                                 allowed_models=encode_list(allowed_models))

        def create(conn: sqlite3.Connection) -> KeyRecord:
            conn.execute(_KEYS.create.sql, args)
            return _key(conn, _KEYS.get, _KEYS.get.args(key_id=key_id))  # type: ignore[return-value]

        return await self._run(create)

    async def list_keys(self) -> list[KeyRecord]:
        return await self._run(lambda conn: [key_record(r, DIALECT) for r in _rows(conn, _KEYS.list, ())])

    async def get_key(self, key_id: str) -> KeyRecord | None:
        return await self._run(lambda conn: _key(conn, _KEYS.get, _KEYS.get.args(key_id=key_id)))

    async def update_key(self, key_id: str, *, name: str | None, description: str | None,
                         now: datetime) -> KeyRecord | None:
        return await self._write_key(_KEYS.update.sql, _KEYS.update.args(
            key_id=key_id, name=name, description=description, now=_ts(now)), key_id)

    async def revoke_key(self, key_id: str, now: datetime) -> KeyRecord | None:
        return await self._write_key(_KEYS.revoke.sql, _KEYS.revoke.args(key_id=key_id, now=_ts(now)), key_id)

    async def set_key_rules(self, key_id: str, *, owner_user_id: str | None, expires_at: datetime | None,
                            allowed_providers: tuple[str, ...] | None, allowed_models: tuple[str, ...] | None,
                            now: datetime) -> KeyRecord | None:
        return await self._write_key(_KEYS.set_rules.sql, _KEYS.set_rules.args(
            key_id=key_id, owner_user_id=owner_user_id, expires_at=_ts(expires_at),
            allowed_providers=encode_list(allowed_providers), allowed_models=encode_list(allowed_models),
            now=_ts(now)), key_id)

    async def _write_key(self, sql: str, args: Sequence[Any], key_id: str) -> KeyRecord | None:
        def write(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute(sql, args)
            return _key(conn, _KEYS.get, _KEYS.get.args(key_id=key_id))

        return await self._run(write)

    async def usage_rows(self, *, after_id: str | None, since: datetime | None, model: str | None,
                         limit: int) -> list[UsageRow]:
        query = usage_rows_query(DIALECT, after_id=bool(after_id), since=since is not None, model=model is not None)
        args = query.args(after_id=after_id, since=_ts(since), model=model, limit=limit)
        return await self._run(lambda conn: [usage_row(r, DIALECT) for r in _rows(conn, query, args)])

    async def update_costs(self, updates: Sequence[CostUpdate]) -> int:
        params = [(_cost_param(u.input_cost), _cost_param(u.output_cost), _cost_param(u.total_cost),
                   int(u.model_alias_found), u.id) for u in updates]

        new_costs = orjson.dumps([[u.id, _cost_param(u.total_cost)] for u in updates]).decode()

        def update(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_ADJUST_SPEND, (new_costs,))
                cursor = conn.executemany(
                    "UPDATE llm_requests SET input_cost = ?, output_cost = ?, total_cost = ?, "
                    "model_alias_found = ? WHERE id = ?", params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return cursor.rowcount

        return await self._run(update) if params else 0

    async def aggregate(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            cursor = conn.execute(sql, tuple(args))
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

        return await self._run(read)

    async def unpriced_models(self) -> list[UnpricedModel]:
        return await self._run(lambda conn: [unpriced_model(r, DIALECT) for r in _rows(conn, _UNPRICED, ())])
