"""Proxy keys on the request path: which Majordomo key a ``mdm_pk_`` key stands for, and the
provider key to send in its place.

Lookups go through the same cache mechanics as Majordomo keys (auth/lookup_cache.py): a hit is a
dict lookup, a miss is three indexed queries (the proxy key, its Majordomo key, its provider keys,
all still encrypted).  Provider keys are decrypted on first use and kept, decrypted, only in this
process's memory, in a bounded map keyed by the stored ciphertext: a changed key has a new
ciphertext (new nonce), so it can never be answered from an old entry, and the change feed drops
the map altogether (``mark_all_due``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from majordomo_gateway.auth.cache import KeyCheck, KeyStatus, key_check
from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.auth.lookup_cache import LookupCache
from majordomo_gateway.auth.proxy_keys import proxy_key_context
from majordomo_gateway.auth.secrets import Keyring, SealedValue, SecretsError
from majordomo_gateway.storage.database import KeyStore, ProxyKeyStore
from majordomo_gateway.storage.records import ProxyKeyRecord

__all__ = ["ProxyKeyCheck", "ProxyKeyVault", "StoredProviderKey"]

# Decrypted provider keys kept per process: one per (proxy key, provider) in use.
MAX_DECRYPTED = 10_000


class VaultStore(KeyStore, ProxyKeyStore, Protocol):
    """What the vault reads: proxy keys, their provider keys, and the Majordomo keys they name."""


@dataclass(frozen=True, slots=True)
class StoredProviderKey:
    provider: str
    sealed: SealedValue
    #: SHA-256 of the provider key, as the request rows record it
    key_hash: str


@dataclass(slots=True)
class ProxyKeyCheck:
    status: KeyStatus
    proxy_key: ProxyKeyRecord | None = None
    #: the check of the Majordomo key the proxy key names (requests are recorded under it)
    owner: KeyCheck = field(default_factory=lambda: KeyCheck(KeyStatus.UNKNOWN))
    providers: Mapping[str, StoredProviderKey] = field(default_factory=dict)


class ProxyKeyVault(LookupCache[ProxyKeyCheck]):
    """``keyring`` is None when ``MAJORDOMO_SECRETS_KEY`` is unset or unusable; ``keyring_error``
    then says why, and proxy-key requests are answered with it."""

    def __init__(self, database: VaultStore, keyring: Keyring | None, *, keyring_error: str = "",
                 ttl: float = 10.0, max_size: int = 10_000, max_decrypted: int = MAX_DECRYPTED) -> None:
        super().__init__(ttl=ttl, max_size=max_size)
        self.database = database
        self.keyring = keyring
        self.keyring_error = keyring_error
        self.max_decrypted = max_decrypted
        self._decrypted: dict[str, str] = {}

    @classmethod
    def from_environment(cls, database: VaultStore, *, ttl: float = 10.0, max_size: int = 10_000) -> ProxyKeyVault:
        try:
            keyring: Keyring | None = Keyring.from_environment()
            error = ""
        except SecretsError as exc:
            keyring, error = None, str(exc)
        return cls(database, keyring, keyring_error=error, ttl=ttl, max_size=max_size)

    async def check(self, presented_key: str) -> ProxyKeyCheck:
        """Raises DatabaseUnavailable only when the key is not cached and the database is down."""
        return await self.lookup(hash_secret(presented_key))

    async def _fetch(self, key_hash: str) -> ProxyKeyCheck:
        record = await self.database.proxy_keys.find_by_hash(key_hash)
        if record is None:
            return ProxyKeyCheck(KeyStatus.UNKNOWN)
        if record.revoked_at is not None:
            return ProxyKeyCheck(KeyStatus.REVOKED, record)
        owner = key_check(await self.database.get_key(record.majordomo_api_key_id))
        stored = {p.provider: StoredProviderKey(p.provider, SealedValue(p.secret_key_id, p.ciphertext),
                                                p.provider_key_hash)
                  for p in await self.database.proxy_keys.providers(record.id)}
        return ProxyKeyCheck(KeyStatus.VALID, record, owner, stored)

    def _servable_stale(self, check: ProxyKeyCheck) -> bool:
        return check.status is KeyStatus.VALID and check.owner.status is KeyStatus.VALID

    def _is_negative(self, check: ProxyKeyCheck) -> bool:
        return check.status is KeyStatus.UNKNOWN

    def provider_key(self, proxy_key: ProxyKeyRecord, stored: StoredProviderKey) -> str:
        """The provider key in clear.  SecretsError when it cannot be decrypted (no keyring, a
        secrets key that is not configured, a stored value that was altered)."""
        plain = self._decrypted.get(stored.sealed.blob)
        if plain is not None:
            return plain
        if self.keyring is None:
            raise SecretsError(self.keyring_error)
        plain = self.keyring.open(stored.sealed, proxy_key_context(proxy_key.id, stored.provider))
        decrypted = self._decrypted
        if len(decrypted) >= self.max_decrypted:
            for old in list(decrypted)[: max(1, self.max_decrypted // 10)]:
                del decrypted[old]
        decrypted[stored.sealed.blob] = plain
        return plain

    def mark_all_due(self) -> None:
        super().mark_all_due()
        self._decrypted.clear()

    @property
    def decrypted_count(self) -> int:
        return len(self._decrypted)
