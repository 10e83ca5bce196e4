"""The columns both backends read, named once, the SQL they share, and the row -> record mapping.

Statements are written once with ``:name`` parameters and rendered per dialect (``?`` for SQLite,
``$n`` for PostgreSQL); rows are read by column name, so adding a column cannot shift another.
Only what is really dialect-specific stays in the backends: the batch insert (each has its own
fast path), the bulk cost update, migrations and connection handling.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import orjson

from majordomo_gateway.storage.records import COLUMNS, KeyRecord, UnpricedModel, UsageRow
from majordomo_gateway.usage import Usage

__all__ = [
    "COLUMNS", "KEY_COLUMNS", "USAGE_ROW_COLUMNS", "Dialect", "KeyQueries", "NamedRow", "Query", "cost_value",
    "encode_list", "key_queries", "key_record", "render", "unpriced_model", "unpriced_models_query", "usage_row",
    "usage_rows_query",
]

# api_keys columns as KeyRecord holds them (key_hash is only ever compared, never read back).
KEY_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(KeyRecord) if f.init)
_KEY_TIMES = ("created_at", "updated_at", "revoked_at", "last_used_at", "expires_at")
_KEY_LISTS = ("allowed_providers", "allowed_models")
_USAGE_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Usage))
_COSTS = ("input_cost", "output_cost", "total_cost")
USAGE_ROW_COLUMNS: tuple[str, ...] = ("id", "provider", "model", "requested_at", *_USAGE_COLUMNS, *_COSTS,
                                      "model_alias_found")


class NamedRow(Protocol):
    """A result row readable by column name: ``sqlite3.Row`` and ``asyncpg.Record`` both are."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(slots=True, frozen=True)
class Dialect:
    """What differs between the backends in the statements below, and in the values they return."""

    name: str
    numbered_parameters: bool  # $1, $2 ... (PostgreSQL) rather than ? (SQLite)
    id_text: str  # the id column as text: PostgreSQL ids are uuid, and a malformed id must not raise
    returning_keys: bool  # whether writes to api_keys return the row (else it is read back)
    decode_time: Callable[[Any], datetime | None]


def cost_value(value: object) -> Decimal | None:
    """A stored cost as a Decimal (SQLite hands back REAL, PostgreSQL NUMERIC)."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def key_record(row: NamedRow, dialect: Dialect) -> KeyRecord:
    values = {name: row[name] for name in KEY_COLUMNS}
    for name in _KEY_TIMES:
        values[name] = dialect.decode_time(values[name])
    for name in _KEY_LISTS:
        text = values[name]
        values[name] = None if text is None else tuple(orjson.loads(text))
    owner = values["owner_user_id"]
    values["owner_user_id"] = None if owner is None else str(owner)  # PostgreSQL hands back uuid.UUID
    return KeyRecord(**values)


def encode_list(values: tuple[str, ...] | None) -> str | None:
    """A key's allowed providers or models as stored: a JSON array, or NULL for "any"."""
    return None if values is None else orjson.dumps(list(values)).decode()


def usage_row(row: NamedRow, dialect: Dialect) -> UsageRow:
    return UsageRow(
        id=row["id"], provider=row["provider"], model=row["model"],
        requested_at=dialect.decode_time(row["requested_at"]),  # type: ignore[arg-type]  # NOT NULL column
        usage=Usage(**{name: row[name] for name in _USAGE_COLUMNS}),
        input_cost=cost_value(row["input_cost"]), output_cost=cost_value(row["output_cost"]),
        total_cost=cost_value(row["total_cost"]), model_alias_found=bool(row["model_alias_found"]),
    )


def unpriced_model(row: NamedRow, dialect: Dialect) -> UnpricedModel:
    return UnpricedModel(
        provider=row["provider"], model=row["model"], requests=row["requests"],
        first_seen=dialect.decode_time(row["first_seen"]),  # type: ignore[arg-type]  # from NOT NULL values
        last_seen=dialect.decode_time(row["last_seen"]),  # type: ignore[arg-type]
    )


# -- statements --------------------------------------------------------------------------------
_PARAMETER = re.compile(r"(?<![:\w]):([a-z_]+)")  # :name, not the ::type of a cast


@dataclass(slots=True, frozen=True)
class Query:
    """A statement rendered for one dialect, and the order its parameters go in."""

    sql: str
    names: tuple[str, ...]

    def args(self, **values: Any) -> tuple[Any, ...]:
        return tuple(values[name] for name in self.names)


def render(template: str, dialect: Dialect) -> Query:
    names: list[str] = []

    def parameter(match: re.Match[str]) -> str:
        name = match.group(1)
        if not dialect.numbered_parameters:
            names.append(name)
            return "?"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = template.format(
        id=dialect.id_text,
        key_columns=_select(KEY_COLUMNS, dialect),
        usage_columns=_select(USAGE_ROW_COLUMNS, dialect),
    )
    return Query(_PARAMETER.sub(parameter, text), tuple(names))


def _select(columns: tuple[str, ...], dialect: Dialect) -> str:
    return ", ".join(f"{dialect.id_text} AS id" if name == "id" and dialect.id_text != "id" else name
                     for name in columns)


@dataclass(slots=True, frozen=True)
class KeyQueries:
    find_by_hash: Query
    get: Query
    list: Query
    create: Query
    update: Query
    revoke: Query
    set_rules: Query


def key_queries(dialect: Dialect) -> KeyQueries:
    returning = " RETURNING {key_columns}" if dialect.returning_keys else ""
    return KeyQueries(
        find_by_hash=render("SELECT {key_columns} FROM api_keys WHERE key_hash = :key_hash", dialect),
        get=render("SELECT {key_columns} FROM api_keys WHERE {id} = :key_id", dialect),
        list=render("SELECT {key_columns} FROM api_keys ORDER BY created_at", dialect),
        create=render(
            "INSERT INTO api_keys (id, name, description, key_hash, key_prefix, created_at, updated_at, "
            "owner_user_id, expires_at, allowed_providers, allowed_models) "
            "VALUES (:key_id, :name, :description, :key_hash, :key_prefix, :now, :now, :owner_user_id, "
            ":expires_at, :allowed_providers, :allowed_models)" + returning, dialect),
        update=render(
            "UPDATE api_keys SET name = coalesce(:name, name), description = coalesce(:description, description), "
            "updated_at = :now WHERE {id} = :key_id" + returning, dialect),
        revoke=render(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, :now), updated_at = :now "
            "WHERE {id} = :key_id" + returning, dialect),
        # Every rule at once (the caller merges what it keeps): NULL is a value here ("any"),
        # so coalesce() as in `update` could not clear one.
        set_rules=render(
            "UPDATE api_keys SET owner_user_id = :owner_user_id, expires_at = :expires_at, "
            "allowed_providers = :allowed_providers, allowed_models = :allowed_models, updated_at = :now "
            "WHERE {id} = :key_id" + returning, dialect),
    )


def usage_rows_query(dialect: Dialect, *, after_id: bool, since: bool, model: bool) -> Query:
    conditions = ["usage_source = 'reported'"]
    if after_id:
        conditions.append("id > :after_id" + ("::uuid" if dialect.numbered_parameters else ""))
    if since:
        conditions.append("requested_at >= :since")
    if model:
        conditions.append("model = :model")
    return render("SELECT {usage_columns} FROM llm_requests WHERE " + " AND ".join(conditions)
                  + " ORDER BY id LIMIT :limit", dialect)


def unpriced_models_query(dialect: Dialect) -> Query:
    return render(
        "SELECT provider, model, COUNT(*) AS requests, MIN(requested_at) AS first_seen, "
        "MAX(requested_at) AS last_seen FROM llm_requests "
        "WHERE NOT model_alias_found AND usage_source = 'reported' "
        "GROUP BY provider, model ORDER BY provider, COUNT(*) DESC, model", dialect)

