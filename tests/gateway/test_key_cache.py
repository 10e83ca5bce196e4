"""The key cache against a real database that goes away: stale-but-known keys keep working, briefly re-armed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.auth import lookup_cache as cache_module
from majordomo_gateway.auth.cache import KeyCache, KeyStatus
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import DatabaseUnavailable, open_database


class CountingDatabase:
    """A real SQLite database whose lookups can be made to fail, counting how often it is asked."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.down = False
        self.lookups = 0

    async def find_key_by_hash(self, key_hash: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        if self.down:
            from majordomo_gateway.storage.database import DatabaseUnavailable

            raise DatabaseUnavailable("down for the test")
        return await self.inner.find_key_by_hash(key_hash)


@pytest.fixture
def clock(monkeypatch) -> list[float]:  # type: ignore[no-untyped-def]
    """The cache's clock, frozen; tests move it by hand."""
    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    return now


async def _database_with_key(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = open_database(f"sqlite:///{tmp_path / 'k.db'}")
    await db.connect()
    await db.migrate()
    key = generate_key()
    record = await db.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key), display_prefix(key),
                                 datetime.now(UTC))
    return db, key, record.id


async def test_outage_serves_known_keys_and_asks_the_database_at_most_once_a_second(
        tmp_path: Path, clock: list[float]) -> None:
    db, key, _ = await _database_with_key(tmp_path)
    counting = CountingDatabase(db)
    cache = KeyCache(counting, ttl=10)  # type: ignore[arg-type]
    assert (await cache.check(key)).status is KeyStatus.VALID
    assert (await cache.check("mdm_sk_unknown")).status is KeyStatus.UNKNOWN

    counting.down = True
    clock[0] += 11  # past the TTL, database down
    before = counting.lookups
    for _ in range(100):
        assert (await cache.check(key)).status is KeyStatus.VALID
    assert counting.lookups - before == 1  # re-armed after the failure, not one query per request
    clock[0] += 1.5
    assert (await cache.check(key)).status is KeyStatus.VALID
    assert counting.lookups - before == 2
    await db.close()


class GatedDatabase(CountingDatabase):
    """Lookups wait for ``gate``: lets a test hold a lookup in flight."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.gate = asyncio.Event()
        self.gate.set()
        self.answered = asyncio.Event()

    async def find_key_by_hash(self, key_hash: str):  # type: ignore[no-untyped-def]
        self.lookups += 1
        await self.gate.wait()
        record = await self.inner.find_key_by_hash(key_hash)
        self.answered.set()
        return record


async def test_requests_that_miss_together_share_one_lookup(tmp_path: Path) -> None:
    db, key, _ = await _database_with_key(tmp_path)
    gated = GatedDatabase(db)
    cache = KeyCache(gated, ttl=10)  # type: ignore[arg-type]
    gated.gate.clear()
    waiting = [asyncio.ensure_future(cache.check(key)) for _ in range(50)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()  # a client that hangs up does not cancel the others' lookup
    gated.gate.set()
    results = await asyncio.gather(*waiting[1:])
    assert {r.status for r in results} == {KeyStatus.VALID}
    assert gated.lookups == 1
    await db.close()


async def test_a_key_in_use_is_refreshed_ahead_of_expiry_and_revocation_still_lands_within_the_ttl(
        tmp_path: Path, clock: list[float]) -> None:
    db, key, key_id = await _database_with_key(tmp_path)
    gated = GatedDatabase(db)
    cache = KeyCache(gated, ttl=10)  # type: ignore[arg-type]
    assert (await cache.check(key)).status is KeyStatus.VALID
    assert gated.lookups == 1

    clock[0] += 5  # fresh, well before the refresh point: no query
    assert (await cache.check(key)).status is KeyStatus.VALID
    assert gated.lookups == 1

    await db.revoke_key(key_id, datetime.now(UTC))
    clock[0] += 3.5  # past 80% of the TTL: this request is answered from cache at once...
    gated.gate.clear()
    assert (await cache.check(key)).status is KeyStatus.VALID
    await asyncio.sleep(0)
    assert gated.lookups == 2  # ...while one refresh runs in the background
    assert (await cache.check(key)).status is KeyStatus.VALID
    assert gated.lookups == 2  # not one per request
    gated.answered.clear()
    gated.gate.set()
    await gated.answered.wait()
    # 8.5 s after the key was cached the revocation is known, inside the 10 s TTL.
    assert (await cache.check(key)).status is KeyStatus.REVOKED
    await db.close()


async def test_a_failed_background_refresh_is_not_retried_on_every_request(
        tmp_path: Path, clock: list[float]) -> None:
    db, key, _ = await _database_with_key(tmp_path)
    counting = CountingDatabase(db)
    cache = KeyCache(counting, ttl=10)  # type: ignore[arg-type]
    assert (await cache.check(key)).status is KeyStatus.VALID
    counting.down = True
    clock[0] += 8.5
    for _ in range(100):
        assert (await cache.check(key)).status is KeyStatus.VALID
        await asyncio.sleep(0)
    assert counting.lookups == 2  # the first load, then one failed refresh
    clock[0] += 1.1
    assert (await cache.check(key)).status is KeyStatus.VALID
    await asyncio.sleep(0)
    assert counting.lookups == 3
    await db.close()


async def test_a_flood_of_unknown_keys_never_evicts_a_known_good_one(tmp_path: Path, clock: list[float]) -> None:
    """Issue 18, point 9: random keys, before and during a database outage, leave a valid cached
    key working; unknown keys are remembered apart, bounded."""
    db, key, _ = await _database_with_key(tmp_path)
    counting = CountingDatabase(db)
    cache = KeyCache(counting, ttl=10, max_size=50)  # type: ignore[arg-type]
    assert (await cache.check(key)).status is KeyStatus.VALID
    for i in range(2000):  # database up: each is looked up, found unknown, and cached
        assert (await cache.check(f"mdm_sk_random{i}")).status is KeyStatus.UNKNOWN
        if i % 200 == 0:
            clock[0] += 0.01
    assert cache.negative_count <= cache.max_negative == 5
    assert (await cache.check("mdm_sk_random1999")).status is KeyStatus.UNKNOWN  # still answered from cache

    counting.down = True
    clock[0] += 11  # past the TTL: only a stale entry can answer now
    for i in range(500):
        with pytest.raises(DatabaseUnavailable):
            await cache.check(f"mdm_sk_during{i}")
    assert (await cache.check(key)).status is KeyStatus.VALID
    await db.close()
