"""Majordomo key lookups for the request path: cached, bounded, with negative entries.

The mechanics (single-flight lookups, refresh ahead of expiry, stale entries served through a
database outage, the change feed's ``mark_all_due``) are auth/lookup_cache.py's; this module says
what a Majordomo key's check is.  A key we have never seen while the database is down gets 503,
not 401; a revocation takes effect within the change feed's delay (about a second), and within
the TTL even without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from majordomo_gateway.auth.keys import KeyRecord, hash_secret
from majordomo_gateway.auth.lookup_cache import (
    REFRESH_AHEAD,
    RETRY_AFTER_FAILURE_SECONDS,
    STALE_GRACE_SECONDS,
    LookupCache,
)
from majordomo_gateway.storage.database import KeyStore

__all__ = ["REFRESH_AHEAD", "RETRY_AFTER_FAILURE_SECONDS", "STALE_GRACE_SECONDS", "KeyCache", "KeyCheck",
           "KeyStatus"]


class KeyStatus(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    REVOKED = "revoked"


@dataclass(slots=True)
class KeyCheck:
    status: KeyStatus
    key: KeyRecord | None = None


def key_check(record: KeyRecord | None) -> KeyCheck:
    """What a stored key (or its absence) means for a request presenting it."""
    if record is None:
        return KeyCheck(KeyStatus.UNKNOWN)
    if not record.active:
        return KeyCheck(KeyStatus.REVOKED, record)
    return KeyCheck(KeyStatus.VALID, record)


class KeyCache(LookupCache[KeyCheck]):
    def __init__(self, database: KeyStore, *, ttl: float = 10.0, max_size: int = 10_000) -> None:
        super().__init__(ttl=ttl, max_size=max_size)
        self.database = database

    async def check(self, presented_key: str) -> KeyCheck:
        """Raises DatabaseUnavailable only when the key is not cached and the database is down."""
        return await self.lookup(hash_secret(presented_key))

    async def _fetch(self, key_hash: str) -> KeyCheck:
        return key_check(await self.database.find_key_by_hash(key_hash))

    def _servable_stale(self, check: KeyCheck) -> bool:
        return check.status is KeyStatus.VALID

    def _is_negative(self, check: KeyCheck) -> bool:
        return check.status is KeyStatus.UNKNOWN

    def invalidate(self, key_id: str) -> None:
        """Forget a key (by id) now: used when this process revokes or changes it."""
        for key_hash, entry in list(self._entries.items()):
            if entry.check.key is not None and entry.check.key.id == key_id:
                self._drop(key_hash)
