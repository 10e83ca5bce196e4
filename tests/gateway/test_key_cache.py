"""The key cache against a real database that goes away: stale-but-known keys keep working, briefly re-armed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import uuid_utils
from majordomo_gateway.auth import cache as cache_module
from majordomo_gateway.auth.cache import KeyCache, KeyStatus
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import open_database


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


async def test_outage_serves_known_keys_and_asks_the_database_at_most_once_a_second(
        tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    clock = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: clock[0])
    db = open_database(f"sqlite:///{tmp_path / 'k.db'}")
    await db.connect()
    await db.migrate()
    key = generate_key()
    await db.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key), display_prefix(key), datetime.now(UTC))
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
