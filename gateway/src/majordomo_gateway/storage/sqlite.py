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

from majordomo_gateway.auth.keys import KeyRecord
from majordomo_gateway.storage.database import (
    CostUpdate,
    DatabaseUnavailable,
    InsertResult,
    UnpricedModel,
    UsageRow,
    cost_value,
    load_migrations,
)
from majordomo_gateway.storage.records import COLUMNS, RequestRecord, has_nul, without_nul
from majordomo_gateway.usage import Usage

T = TypeVar("T")

_INSERT = (
    f"INSERT OR IGNORE INTO llm_requests ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)
_KEY_COLUMNS = (
    "id, name, description, key_prefix, created_at, updated_at, revoked_at, last_used_at, request_count"
)
_BOOL_INDEXES = tuple(COLUMNS.index(c) for c in ("streamed", "aborted", "model_alias_found"))
_TIME_INDEXES = tuple(COLUMNS.index(c) for c in ("requested_at", "responded_at"))
_COST_INDEXES = tuple(COLUMNS.index(c) for c in ("input_cost", "output_cost", "total_cost"))
_METADATA_INDEX = COLUMNS.index("raw_metadata")
USAGE_ROW_COLUMNS = (
    "id, provider, model, requested_at, input_tokens, output_tokens, cached_tokens, cache_creation_tokens, "
    "cache_creation_1h_tokens, reasoning_tokens, web_search_requests, input_cost, output_cost, total_cost, "
    "model_alias_found"
)


def _usage_row(row: sqlite3.Row | tuple[Any, ...]) -> UsageRow:
    return UsageRow(
        id=row[0], provider=row[1], model=row[2],
        requested_at=_parse_ts(row[3]),  # type: ignore[arg-type]
        usage=Usage(*row[4:11]),
        input_cost=cost_value(row[11]), output_cost=cost_value(row[12]), total_cost=cost_value(row[13]),
        model_alias_found=bool(row[14]),
    )


def _cost_param(value: Any) -> str | None:
    return None if value is None else str(value)


def _ts(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _parse_ts(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _key(row: sqlite3.Row | tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        id=row[0], name=row[1], description=row[2], key_prefix=row[3],
        created_at=_parse_ts(row[4]),  # type: ignore[arg-type]
        updated_at=_parse_ts(row[5]),  # type: ignore[arg-type]
        revoked_at=_parse_ts(row[6]), last_used_at=_parse_ts(row[7]), request_count=row[8],
    )


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

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._executor is None or self._conn is None:
            raise DatabaseUnavailable("the SQLite database is not open")
        conn = self._conn
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.OperationalError as exc:
            raise DatabaseUnavailable(f"SQLite {self.path}: {exc}") from exc

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
                    for statement in _statements(migration.sql):
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
            conn.execute("BEGIN IMMEDIATE")
            try:
                for row, record in zip(params, records, strict=True):
                    if conn.execute(_INSERT, row).rowcount != 1:
                        continue
                    inserted += 1
                    key_id = record.majordomo_api_key_id
                    if key_id is not None:
                        uses[key_id] += 1
                        stamp = row[COLUMNS.index("requested_at")]
                        last_used[key_id] = max(last_used.get(key_id, stamp), stamp)
                for key_id, count in uses.items():
                    conn.execute(
                        "UPDATE api_keys SET request_count = request_count + ?, "
                        "last_used_at = max(coalesce(last_used_at, ''), ?) WHERE id = ?",
                        (count, last_used[key_id], key_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return InsertResult(inserted=inserted, duplicates=len(params) - inserted)

        return await self._run(insert)

    async def find_key_by_hash(self, key_hash: str) -> KeyRecord | None:
        def find(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            return None if row is None else _key(row)

        return await self._run(find)

    async def create_key(self, key_id: str, name: str, description: str | None, key_hash: str,
                         key_prefix: str, now: datetime) -> KeyRecord:
        def create(conn: sqlite3.Connection) -> KeyRecord:
            conn.execute(
                "INSERT INTO api_keys (id, name, description, key_hash, key_prefix, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, name, description, key_hash, key_prefix, _ts(now), _ts(now)),
            )
            return _key(conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone())

        return await self._run(create)

    async def list_keys(self) -> list[KeyRecord]:
        return await self._run(
            lambda conn: [_key(r) for r in conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at")]
        )

    async def get_key(self, key_id: str) -> KeyRecord | None:
        def get(conn: sqlite3.Connection) -> KeyRecord | None:
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else _key(row)

        return await self._run(get)

    async def update_key(self, key_id: str, *, name: str | None, description: str | None,
                         now: datetime) -> KeyRecord | None:
        def update(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute(
                "UPDATE api_keys SET name = coalesce(?, name), description = coalesce(?, description), "
                "updated_at = ? WHERE id = ?",
                (name, description, _ts(now), key_id),
            )
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else _key(row)

        return await self._run(update)

    async def revoke_key(self, key_id: str, now: datetime) -> KeyRecord | None:
        def revoke(conn: sqlite3.Connection) -> KeyRecord | None:
            conn.execute(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, ?), updated_at = ? WHERE id = ?",
                (_ts(now), _ts(now), key_id),
            )
            row = conn.execute(f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return None if row is None else _key(row)

        return await self._run(revoke)


    async def usage_rows(self, *, after_id: str | None, since: datetime | None, model: str | None,
                         limit: int) -> list[UsageRow]:
        sql = f"SELECT {USAGE_ROW_COLUMNS} FROM llm_requests WHERE usage_source = 'reported' AND id > ?"
        params: list[Any] = [after_id or ""]
        if since is not None:
            sql += " AND requested_at >= ?"
            params.append(_ts(since))
        if model is not None:
            sql += " AND model = ?"
            params.append(model)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        return await self._run(lambda conn: [_usage_row(r) for r in conn.execute(sql, params)])

    async def update_costs(self, updates: Sequence[CostUpdate]) -> int:
        params = [(_cost_param(u.input_cost), _cost_param(u.output_cost), _cost_param(u.total_cost),
                   int(u.model_alias_found), u.id) for u in updates]

        def update(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                cursor = conn.executemany(
                    "UPDATE llm_requests SET input_cost = ?, output_cost = ?, total_cost = ?, "
                    "model_alias_found = ? WHERE id = ?", params)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return cursor.rowcount

        return await self._run(update) if params else 0

    async def unpriced_models(self) -> list[UnpricedModel]:
        def query(conn: sqlite3.Connection) -> list[UnpricedModel]:
            rows = conn.execute(
                "SELECT provider, model, COUNT(*), MIN(requested_at), MAX(requested_at) FROM llm_requests "
                "WHERE model_alias_found = 0 AND usage_source = 'reported' "
                "GROUP BY provider, model ORDER BY provider, COUNT(*) DESC, model"
            ).fetchall()
            return [UnpricedModel(r[0], r[1], r[2], _parse_ts(r[3]), _parse_ts(r[4]))  # type: ignore[arg-type]
                    for r in rows]

        return await self._run(query)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (our migrations have no semicolons inside literals)."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [part.strip() for part in "\n".join(lines).split(";") if part.strip()]
