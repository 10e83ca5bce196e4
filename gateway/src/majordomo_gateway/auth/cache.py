"""Key lookups for the request path: cached, bounded, with negative entries.

A hit costs a dict lookup.  A miss costs one indexed query.  Unknown keys are cached too, so a
client hammering with a bad key cannot turn into a query per request.  When the database is down,
a key we have seen active recently keeps working (stale entry) so that an outage stops logging
to the database, not traffic; a key we have never seen gets 503, not 401.

One lookup per key at a time: requests that miss together share it, so an expiring key under
load costs one query, not one per request in flight.  A key in use is refreshed in the background
when 80% of its TTL has passed, so under steady traffic no request waits on the database for it,
and a revocation still takes effect within the TTL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum

from majordomo_gateway.auth.keys import KeyRecord, hash_secret
from majordomo_gateway.storage.database import KeyStore
from majordomo_gateway.storage.errors import DatabaseUnavailable

# How long a known-good key is honoured from cache while the database cannot be asked.
STALE_GRACE_SECONDS = 3600.0
# After a failed lookup, a stale entry is trusted this long before the database is asked again:
# otherwise every request during an outage would queue on the dead connection pool.
RETRY_AFTER_FAILURE_SECONDS = 1.0
# Share of the TTL after which a key still in use is refreshed ahead of its expiry.
REFRESH_AHEAD = 0.8


class KeyStatus(Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    REVOKED = "revoked"


@dataclass(slots=True)
class KeyCheck:
    status: KeyStatus
    key: KeyRecord | None = None


@dataclass(slots=True)
class _Entry:
    expires: float
    check: KeyCheck
    verified: float  # when the database last confirmed this entry
    refresh_at: float  # a hit after this starts a background refresh


class KeyCache:
    def __init__(self, database: KeyStore, *, ttl: float = 10.0, max_size: int = 10_000) -> None:
        self.database = database
        self.ttl = ttl
        self.max_size = max_size
        self._entries: dict[str, _Entry] = {}
        self._lookups: dict[str, asyncio.Future[KeyCheck]] = {}

    async def check(self, presented_key: str) -> KeyCheck:
        """Raises DatabaseUnavailable only when the key is not cached and the database is down."""
        key_hash = hash_secret(presented_key)
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is not None and entry.expires > now:
            if entry.refresh_at <= now and key_hash not in self._lookups:
                self._lookup(key_hash)  # in the background; this request goes on with the entry
            return entry.check
        try:
            # shield: a client that hangs up must not cancel the lookup others are waiting on.
            return await asyncio.shield(self._lookup(key_hash))
        except DatabaseUnavailable:
            entry = self._entries.get(key_hash)
            if (entry is not None and entry.check.status is KeyStatus.VALID
                    and now - entry.verified < STALE_GRACE_SECONDS):
                entry.expires = entry.refresh_at = now + RETRY_AFTER_FAILURE_SECONDS
                return entry.check
            raise

    def _lookup(self, key_hash: str) -> asyncio.Future[KeyCheck]:
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            lookup = asyncio.ensure_future(self._fetch(key_hash))
            self._lookups[key_hash] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(key_hash, done))
        return lookup

    def _lookup_done(self, key_hash: str, lookup: asyncio.Future[KeyCheck]) -> None:
        self._lookups.pop(key_hash, None)
        if not lookup.cancelled() and lookup.exception() is not None:
            # A failed refresh (nobody may be waiting on it) is retried no sooner than a failed lookup.
            entry = self._entries.get(key_hash)
            if entry is not None:
                entry.refresh_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS

    async def _fetch(self, key_hash: str) -> KeyCheck:
        record = await self.database.find_key_by_hash(key_hash)
        if record is None:
            check = KeyCheck(KeyStatus.UNKNOWN)
        elif not record.active:
            check = KeyCheck(KeyStatus.REVOKED, record)
        else:
            check = KeyCheck(KeyStatus.VALID, record)
        self._store(key_hash, check, time.monotonic())
        return check

    def _store(self, key_hash: str, check: KeyCheck, now: float) -> None:
        entries = self._entries
        entries.pop(key_hash, None)
        if len(entries) >= self.max_size:
            # dicts keep insertion order: drop the oldest tenth in one go, not one per insert.
            for stale in list(entries)[: max(1, self.max_size // 10)]:
                del entries[stale]
        entries[key_hash] = _Entry(now + self.ttl, check, now, now + self.ttl * REFRESH_AHEAD)

    def invalidate(self, key_id: str) -> None:
        """Forget a key (by id) now: used when this process revokes or changes it."""
        for key_hash, entry in list(self._entries.items()):
            if entry.check.key is not None and entry.check.key.id == key_id:
                del self._entries[key_hash]
