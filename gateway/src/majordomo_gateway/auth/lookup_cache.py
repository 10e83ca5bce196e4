"""The mechanics shared by the request path's credential caches (Majordomo keys, proxy keys).

A hit costs a dict lookup.  A miss costs one lookup (``_fetch``).  Unknown credentials are cached
too, so a client hammering with a bad one cannot turn into a query per request.  When the
database is down, a credential we have seen valid recently keeps working (stale entry) so that an
outage stops logging to the database, not traffic; one we have never seen raises
DatabaseUnavailable (the caller answers 503, not 401).

Negative entries (an unknown credential) are kept apart from the others, in a map of their own
bounded by ``max_negative``: a flood of random credentials evicts only other unknown ones, never
a credential known good, which must keep working through a database outage that follows.

One lookup per credential at a time: requests that miss together share it, so an expiring entry
under load costs one query, not one per request in flight.  An entry in use is refreshed in the
background when 80% of its TTL has passed, so under steady traffic no request waits on the
database for it.  ``mark_all_due`` (the change feed, storage/changes.py) makes every entry due
now: the next use of each waits for a fresh lookup, and a change made by another process is
seen within the feed's delay instead of the TTL.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Generic, TypeVar

from majordomo_gateway.storage.errors import DatabaseUnavailable

__all__ = ["NEGATIVE_SHARE", "REFRESH_AHEAD", "RETRY_AFTER_FAILURE_SECONDS", "STALE_GRACE_SECONDS", "LookupCache"]

# How long a known-good credential is honoured from cache while the database cannot be asked.
STALE_GRACE_SECONDS = 3600.0
# After a failed lookup, a stale entry is trusted this long before the database is asked again:
# otherwise every request during an outage would queue on the dead connection pool.
RETRY_AFTER_FAILURE_SECONDS = 1.0
# Share of the TTL after which an entry still in use is refreshed ahead of its expiry.
REFRESH_AHEAD = 0.8
# Unknown credentials remembered, at most (a share of max_size unless given).
NEGATIVE_SHARE = 0.1

C = TypeVar("C")


@dataclass(slots=True)
class _Entry(Generic[C]):
    expires: float
    check: C
    verified: float  # when the database last confirmed this entry
    refresh_at: float  # a hit after this starts a background refresh


class LookupCache(Generic[C]):
    """Checks by credential hash.  Subclasses say how to fetch one (``_fetch``) and which checks
    may be served stale during an outage (``_servable_stale``)."""

    def __init__(self, *, ttl: float, max_size: int, max_negative: int | None = None) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self.max_negative = max(1, int(max_size * NEGATIVE_SHARE)) if max_negative is None else max_negative
        self._entries: dict[str, _Entry[C]] = {}
        #: unknown credentials, apart: what a flood fills, without touching ``_entries``
        self._negative: dict[str, _Entry[C]] = {}
        self._lookups: dict[str, asyncio.Future[C]] = {}
        #: bumped by mark_all_due: a lookup that started before it must not store its (older) answer
        self._generation = 0

    async def _fetch(self, key_hash: str) -> C:
        raise NotImplementedError

    def _servable_stale(self, check: C) -> bool:
        raise NotImplementedError

    def _is_negative(self, check: C) -> bool:
        """Whether the check says the credential does not exist (kept in the bounded negative map)."""
        raise NotImplementedError

    async def lookup(self, key_hash: str) -> C:
        """Raises DatabaseUnavailable only when the hash is not cached and the database is down."""
        now = time.monotonic()
        entry = self._entries.get(key_hash)
        if entry is None:
            entry = self._negative.get(key_hash)
        if entry is not None and entry.expires > now:
            if entry.refresh_at <= now and key_hash not in self._lookups:
                self._lookup(key_hash)  # in the background; this request goes on with the entry
            return entry.check
        try:
            # shield: a client that hangs up must not cancel the lookup others are waiting on.
            return await asyncio.shield(self._lookup(key_hash))
        except DatabaseUnavailable:
            entry = self._entries.get(key_hash)
            if (entry is not None and self._servable_stale(entry.check)
                    and now - entry.verified < STALE_GRACE_SECONDS):
                entry.expires = entry.refresh_at = now + RETRY_AFTER_FAILURE_SECONDS
                return entry.check
            raise

    def _lookup(self, key_hash: str) -> asyncio.Future[C]:
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            # The generation now, not when the task first runs: a change in between must count.
            lookup = asyncio.ensure_future(self._fetch_and_store(key_hash, self._generation))
            self._lookups[key_hash] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(key_hash, done))
        return lookup

    def _lookup_done(self, key_hash: str, lookup: asyncio.Future[C]) -> None:
        if self._lookups.get(key_hash) is lookup:
            del self._lookups[key_hash]
        if not lookup.cancelled() and lookup.exception() is not None:
            # A failed refresh (nobody may be waiting on it) is retried no sooner than a failed lookup.
            entry = self._entries.get(key_hash)
            if entry is not None:
                entry.refresh_at = time.monotonic() + RETRY_AFTER_FAILURE_SECONDS

    async def _fetch_and_store(self, key_hash: str, generation: int) -> C:
        check = await self._fetch(key_hash)
        if generation == self._generation:
            self._store(key_hash, check, time.monotonic())
        return check

    def _store(self, key_hash: str, check: C, now: float) -> None:
        if self._is_negative(check):
            entries, bound = self._negative, self.max_negative
            self._entries.pop(key_hash, None)
        else:
            entries, bound = self._entries, self.max_size
            self._negative.pop(key_hash, None)
        entries.pop(key_hash, None)
        if len(entries) >= bound:
            # dicts keep insertion order: drop the oldest tenth in one go, not one per insert.
            for stale in list(entries)[: max(1, bound // 10)]:
                del entries[stale]
        entries[key_hash] = _Entry(now + self.ttl, check, now, now + self.ttl * REFRESH_AHEAD)

    def mark_all_due(self) -> None:
        """Something changed (another process may have revoked or edited a credential): every
        entry is looked up again on its next use.  Entries are kept, not dropped, so that a
        credential known valid still rides out a database outage that begins right after."""
        self._generation += 1
        # Lookups in flight may have read the database before the change: the next request asks anew.
        self._lookups.clear()
        for entry in self._entries.values():
            entry.expires = entry.refresh_at = 0.0
        # A credential unknown a moment ago may have just been created.
        self._negative.clear()

    def _drop(self, key_hash: str) -> None:
        self._entries.pop(key_hash, None)
        self._negative.pop(key_hash, None)

    def __len__(self) -> int:
        return len(self._entries) + len(self._negative)

    @property
    def negative_count(self) -> int:
        return len(self._negative)
