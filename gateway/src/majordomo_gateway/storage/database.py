"""The storage interface, split by role, and how to open a backend for a URL.

Callers depend on the role they use: the writer on ``RequestLog`` (with ``Connection`` to probe and
reconnect), key checks on ``KeyStore``, re-pricing on ``CostStore``.  ``Database`` is all of them,
which both backends implement.  New roles (budgets, rollups) get their own Protocol here and join
``Database`` once both backends have them.

The backends import only ``records``, ``columns``, ``errors`` and ``migration``, never this
module, so ``open_database`` can import them without a cycle (lazily: asyncpg loads only for
PostgreSQL URLs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from majordomo_gateway.storage.admin import AuditTable, SessionTable, UserTable
from majordomo_gateway.storage.budgets import BudgetTable
from majordomo_gateway.storage.changes import ChangeFeed
from majordomo_gateway.storage.columns import cost_value
from majordomo_gateway.storage.errors import DatabaseUnavailable
from majordomo_gateway.storage.migration import MIGRATIONS_DIR, Migration, load_migrations
from majordomo_gateway.storage.proxy_keys import ProxyKeyTable
from majordomo_gateway.storage.records import (
    CostUpdate,
    InsertResult,
    KeyRecord,
    RequestRecord,
    UnpricedModel,
    UsageRow,
)

__all__ = [
    "MIGRATIONS_DIR", "AdminStore", "BudgetStore", "Connection", "CostStore", "CostUpdate", "Database",
    "DatabaseUnavailable",
    "InsertResult", "KeyChanges", "KeyStore", "LoggingDatabase", "Migration", "RequestLog", "UnpricedModel",
    "UsageRow", "cost_value",
    "load_migrations", "open_database", "sqlite_path",
]


class Connection(Protocol):
    dialect: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query succeeds."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...


class RequestLog(Protocol):
    async def insert_requests(self, records: Sequence[RequestRecord]) -> InsertResult:
        """Insert rows idempotently (by id) and, for new rows only, bump their keys' usage counters."""
        ...


class LoggingDatabase(Connection, RequestLog, Protocol):
    """What the row writer needs: the request log, and a connection to probe and re-open."""


class KeyStore(Protocol):
    async def find_key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    async def create_key(self, key_id: str, name: str, description: str | None, key_hash: str,
                         key_prefix: str, now: datetime, *, owner_user_id: str | None = None,
                         expires_at: datetime | None = None, allowed_providers: tuple[str, ...] | None = None,
                         allowed_models: tuple[str, ...] | None = None) -> KeyRecord: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def update_key(self, key_id: str, *, name: str | None, description: str | None,
                         now: datetime) -> KeyRecord | None: ...

    async def revoke_key(self, key_id: str, now: datetime) -> KeyRecord | None: ...

    async def set_key_rules(self, key_id: str, *, owner_user_id: str | None, expires_at: datetime | None,
                            allowed_providers: tuple[str, ...] | None, allowed_models: tuple[str, ...] | None,
                            now: datetime) -> KeyRecord | None:
        """Set the owner, expiry and allowed providers/models together (None: no owner, never, any)."""
        ...


class CostStore(Protocol):
    """Re-pricing stored rows."""

    async def usage_rows(self, *, after_id: str | None, since: datetime | None, model: str | None,
                         limit: int) -> list[UsageRow]:
        """Rows with reported usage, in id order, after ``after_id``; optionally only those
        requested at or after ``since`` and for ``model``."""
        ...

    async def update_costs(self, updates: Sequence[CostUpdate]) -> int:
        """Set the costs (and model_alias_found) of rows by id, in one transaction; rows updated."""
        ...

    async def unpriced_models(self) -> list[UnpricedModel]:
        """Models with reported usage that had no price, per provider, most requested first."""
        ...


class ReportStore(Protocol):
    """Aggregates for reports (reports/usage.py builds the statement for ``Connection.dialect``)."""

    async def aggregate(self, sql: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        """Run a read-only statement; rows as dicts by column name.  On SQLite the statement may
        call ``majordomo_bucket(requested_at, period, tz)`` (timebuckets.bucket_start)."""
        ...


class ProxyKeyStore(Protocol):
    """Proxy keys and their encrypted provider keys (storage/proxy_keys.py)."""

    proxy_keys: ProxyKeyTable


class AdminStore(Protocol):
    """Users, their sessions and the audit log (storage/admin.py)."""

    users: UserTable
    sessions: SessionTable
    audit: AuditTable


class BudgetStore(Protocol):
    """Budgets, their ledger and holds, and rate limits (storage/budgets.py)."""

    budgets: BudgetTable


class KeyChanges(Protocol):
    """How a process learns that another changed a key or a proxy key (storage/changes.py)."""

    def change_feed(self) -> ChangeFeed: ...


class Database(LoggingDatabase, KeyStore, CostStore, ReportStore, ProxyKeyStore, AdminStore, BudgetStore, KeyChanges,
               Protocol):
    """Every role: what a backend implements."""


def open_database(url: str) -> Database:
    """A backend for the URL (not yet connected).  ``sqlite:///path`` or ``postgresql://...``."""
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        from majordomo_gateway.storage.sqlite import SQLiteDatabase

        return SQLiteDatabase(sqlite_path(url))
    if scheme in ("postgresql", "postgres"):
        from majordomo_gateway.storage.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ValueError(f"unsupported database URL scheme {scheme!r}: use sqlite:///path or postgresql://...")


def sqlite_path(url: str) -> str:
    """``sqlite:///majordomo.db`` → ``majordomo.db`` (relative); ``sqlite:////abs/x.db`` → ``/abs/x.db``."""
    if not url.startswith("sqlite:///"):
        raise ValueError(f"SQLite URLs look like sqlite:///relative.db or sqlite:////absolute.db, not {url!r}")
    path = url[len("sqlite:///"):]
    if not path:
        raise ValueError("the SQLite URL names no file: use sqlite:///majordomo.db")
    return path
