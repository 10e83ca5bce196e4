"""The proxy_keys and proxy_key_providers tables, on either backend.

The statements are written once (``:name`` parameters, rendered per dialect) and run through the
backend's ``rows()``: SQLite (3.35+) and PostgreSQL both support ``RETURNING``, so a write answers
with the row it wrote and nothing here depends on which database it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Protocol

from majordomo_gateway.storage.columns import Dialect, NamedRow, Query, render
from majordomo_gateway.storage.records import ProviderSecretRecord, ProxyKeyRecord

__all__ = ["ProxyKeyTable", "RowSource"]

_KEY_COLUMNS = tuple(f.name for f in fields(ProxyKeyRecord))
_SECRET_COLUMNS = tuple(f.name for f in fields(ProviderSecretRecord))
_TIMES = ("created_at", "updated_at", "revoked_at")
_IDS = ("id", "majordomo_api_key_id", "proxy_key_id")


class RowSource(Protocol):
    """How a backend runs one rendered statement and hands back its rows (by column name)."""

    async def rows(self, query: Query, args: Sequence[Any]) -> list[NamedRow]: ...


def _values(row: NamedRow, names: tuple[str, ...], dialect: Dialect) -> dict[str, Any]:
    values = {name: row[name] for name in names}
    for name in names:
        if name in _TIMES:
            values[name] = dialect.decode_time(values[name])
        elif name in _IDS:
            values[name] = str(values[name])  # PostgreSQL hands back uuid.UUID
    return values


class ProxyKeyTable:
    def __init__(self, source: RowSource, dialect: Dialect, encode_time: Any) -> None:
        self._source = source
        self._dialect = dialect
        self._time = encode_time
        keys, secrets = ", ".join(_KEY_COLUMNS), ", ".join(_SECRET_COLUMNS)
        # Ids compared as text: a mistyped id is "not found", never a uuid syntax error.
        pk = "id::text" if dialect.numbered_parameters else "id"
        ref = "proxy_key_id::text" if dialect.numbered_parameters else "proxy_key_id"
        self._create = render(
            "INSERT INTO proxy_keys (id, name, majordomo_api_key_id, key_hash, key_prefix, created_at, updated_at) "
            f"VALUES (:id, :name, :key_id, :key_hash, :key_prefix, :now, :now) RETURNING {keys}", dialect)
        self._get = render(f"SELECT {keys} FROM proxy_keys WHERE {pk} = :id", dialect)
        self._find = render(f"SELECT {keys} FROM proxy_keys WHERE key_hash = :key_hash", dialect)
        self._list = render(f"SELECT {keys} FROM proxy_keys ORDER BY created_at, id", dialect)
        self._revoke = render(
            "UPDATE proxy_keys SET revoked_at = coalesce(revoked_at, :now), updated_at = :now "
            f"WHERE {pk} = :id RETURNING {keys}", dialect)
        self._set_secret = render(
            f"INSERT INTO proxy_key_providers ({secrets}) VALUES (:id, :provider, :secret_key_id, :ciphertext, "
            ":provider_key_hash, :now, :now) ON CONFLICT (proxy_key_id, provider) DO UPDATE SET "
            "secret_key_id = excluded.secret_key_id, ciphertext = excluded.ciphertext, "
            "provider_key_hash = excluded.provider_key_hash, updated_at = excluded.updated_at "
            f"RETURNING {secrets}", dialect)
        self._touch = render(f"UPDATE proxy_keys SET updated_at = :now WHERE {pk} = :id RETURNING {keys}", dialect)
        self._remove_secret = render(
            f"DELETE FROM proxy_key_providers WHERE {ref} = :id AND provider = :provider RETURNING {secrets}",
            dialect)
        self._secrets_of = render(
            f"SELECT {secrets} FROM proxy_key_providers WHERE {ref} = :id ORDER BY provider", dialect)
        self._all_secrets = render(f"SELECT {secrets} FROM proxy_key_providers ORDER BY proxy_key_id, provider",
                                   dialect)
        self._reseal = render(
            "UPDATE proxy_key_providers SET secret_key_id = :secret_key_id, ciphertext = :ciphertext "
            f"WHERE {ref} = :id AND provider = :provider AND secret_key_id = :old_key_id RETURNING {secrets}",
            dialect)

    async def _run(self, query: Query, **values: Any) -> list[NamedRow]:
        for name in ("now",):
            if name in values:
                values[name] = self._time(values[name])
        return await self._source.rows(query, query.args(**values))

    def _key(self, rows: list[NamedRow]) -> ProxyKeyRecord | None:
        return ProxyKeyRecord(**_values(rows[0], _KEY_COLUMNS, self._dialect)) if rows else None

    def _secret(self, row: NamedRow) -> ProviderSecretRecord:
        return ProviderSecretRecord(**_values(row, _SECRET_COLUMNS, self._dialect))

    async def create(self, proxy_key_id: str, name: str, majordomo_key_id: str, key_hash: str, key_prefix: str,
                     now: datetime) -> ProxyKeyRecord:
        created = self._key(await self._run(self._create, id=proxy_key_id, name=name, key_id=majordomo_key_id,
                                            key_hash=key_hash, key_prefix=key_prefix, now=now))
        assert created is not None  # INSERT ... RETURNING returns the row or raises
        return created

    async def get(self, proxy_key_id: str) -> ProxyKeyRecord | None:
        return self._key(await self._run(self._get, id=proxy_key_id))

    async def find_by_hash(self, key_hash: str) -> ProxyKeyRecord | None:
        return self._key(await self._run(self._find, key_hash=key_hash))

    async def all(self) -> list[ProxyKeyRecord]:
        return [ProxyKeyRecord(**_values(r, _KEY_COLUMNS, self._dialect)) for r in await self._run(self._list)]

    async def revoke(self, proxy_key_id: str, now: datetime) -> ProxyKeyRecord | None:
        return self._key(await self._run(self._revoke, id=proxy_key_id, now=now))

    async def set_provider(self, proxy_key_id: str, provider: str, secret_key_id: str, ciphertext: str,
                           provider_key_hash: str, now: datetime) -> ProviderSecretRecord:
        [row] = await self._run(self._set_secret, id=proxy_key_id, provider=provider, secret_key_id=secret_key_id,
                                ciphertext=ciphertext, provider_key_hash=provider_key_hash, now=now)
        await self._run(self._touch, id=proxy_key_id, now=now)  # a change the key caches can see
        return self._secret(row)

    async def remove_provider(self, proxy_key_id: str, provider: str, now: datetime) -> bool:
        removed = await self._run(self._remove_secret, id=proxy_key_id, provider=provider)
        if removed:
            await self._run(self._touch, id=proxy_key_id, now=now)
        return bool(removed)

    async def providers(self, proxy_key_id: str) -> list[ProviderSecretRecord]:
        return [self._secret(r) for r in await self._run(self._secrets_of, id=proxy_key_id)]

    async def all_providers(self) -> list[ProviderSecretRecord]:
        return [self._secret(r) for r in await self._run(self._all_secrets)]

    async def reseal(self, secret: ProviderSecretRecord, secret_key_id: str, ciphertext: str) -> bool:
        """Replace one value's encryption, unless it changed since it was read (then False)."""
        rows = await self._run(self._reseal, id=secret.proxy_key_id, provider=secret.provider,
                               secret_key_id=secret_key_id, ciphertext=ciphertext, old_key_id=secret.secret_key_id)
        return bool(rows)
