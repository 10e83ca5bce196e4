"""The storage interface shared by the SQLite and PostgreSQL backends, and how to open one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from majordomo_gateway.auth.keys import KeyRecord
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.usage import Usage

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


class DatabaseUnavailable(Exception):
    """The database could not be reached or did not answer; the caller decides what that means."""


@dataclass(slots=True, frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str) -> list[Migration]:
    migrations = []
    for path in sorted((MIGRATIONS_DIR / dialect).glob("*.sql")):
        version_text, _, name = path.stem.partition("_")
        migrations.append(Migration(int(version_text), name, path.read_text(encoding="utf-8")))
    return migrations


@dataclass(slots=True)
class InsertResult:
    """How many rows were new (a replayed row already present counts as a duplicate, not an error)."""

    inserted: int
    duplicates: int


@dataclass(slots=True, frozen=True)
class UsageRow:
    """What re-pricing a stored row needs: its raw usage numbers and the costs it holds now."""

    id: str
    provider: str
    model: str | None
    requested_at: datetime
    usage: Usage
    input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    model_alias_found: bool


@dataclass(slots=True, frozen=True)
class CostUpdate:
    id: str
    input_cost: Decimal | None
    output_cost: Decimal | None
    total_cost: Decimal | None
    model_alias_found: bool


@dataclass(slots=True, frozen=True)
class UnpricedModel:
    """A (provider, model) seen with reported usage but no price, and how often."""

    provider: str
    model: str | None
    requests: int
    first_seen: datetime
    last_seen: datetime


def cost_value(value: object) -> Decimal | None:
    """A stored cost as a Decimal (SQLite hands back REAL, PostgreSQL NUMERIC)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


class Database(Protocol):
    dialect: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query succeeds."""
        ...

    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied."""
        ...

    async def insert_requests(self, records: Sequence[RequestRecord]) -> InsertResult:
        """Insert rows idempotently (by id) and, for new rows only, bump their keys' usage counters."""
        ...

    async def find_key_by_hash(self, key_hash: str) -> KeyRecord | None: ...

    async def create_key(self, key_id: str, name: str, description: str | None, key_hash: str,
                         key_prefix: str, now: datetime) -> KeyRecord: ...

    async def list_keys(self) -> list[KeyRecord]: ...

    async def get_key(self, key_id: str) -> KeyRecord | None: ...

    async def update_key(self, key_id: str, *, name: str | None, description: str | None,
                         now: datetime) -> KeyRecord | None: ...

    async def revoke_key(self, key_id: str, now: datetime) -> KeyRecord | None: ...

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
