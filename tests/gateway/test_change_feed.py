"""The change feed on its own, against real databases: what counts as a change, and a lost
PostgreSQL connection (re-opened, then a full re-check, then notifications again)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uuid_utils
from majordomo_gateway.auth.cache import KeyCache, KeyStatus
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage import changes
from majordomo_gateway.storage.database import Database, open_database

from tests.support import PG_ADMIN_URL, PostgresServer
from tests.support.records import make_record

NOW = datetime(2026, 3, 1, tzinfo=UTC)


class Seen:
    """Counts the feed's calls; ``wait`` for the next one."""

    def __init__(self) -> None:
        self.count = 0
        self._event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self._event.set()

    async def wait(self, timeout: float = 3.0) -> float:
        started = time.monotonic()
        await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()
        return time.monotonic() - started

    async def quiet(self, seconds: float = 0.8) -> bool:
        """True when no call came for ``seconds``."""
        self._event.clear()
        try:
            await asyncio.wait_for(self._event.wait(), seconds)
        except TimeoutError:
            return True
        return False


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        db = open_database(f"sqlite:///{tmp_path / 'feed.db'}")
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        db = open_database(server.create())
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


async def _feed(database: Database, seen: Seen) -> asyncio.Task[None]:
    task = asyncio.ensure_future(database.change_feed().run(seen))
    if database.dialect == "postgres":
        await seen.wait()  # the first LISTEN re-checks everything once
    else:
        await asyncio.sleep(changes.POLL_INTERVAL * 2)  # its first read of the counter
    return task


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_key_changes_are_reported_and_usage_counters_are_not(database: Database) -> None:
    key = generate_key()
    record = await database.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key), display_prefix(key), NOW)
    seen = Seen()
    task = await _feed(database, seen)
    try:
        # The writer bumps request_count and last_used_at with every batch: not a change.
        await database.insert_requests([make_record(record.id) for _ in range(3)])
        assert await seen.quiet(), "request rows must not look like key changes"
        await database.update_key(record.id, name="renamed", description=None, now=NOW + timedelta(seconds=1))
        assert await seen.wait() < 1.0
        await database.revoke_key(record.id, NOW + timedelta(seconds=2))
        assert await seen.wait() < 1.0
        proxy = await database.proxy_keys.create(str(uuid_utils.uuid7()), "p", record.id, "h" * 64, "mdm_pk_abcd", NOW)
        assert await seen.quiet(), "a new proxy key changes nothing cached"
        await database.proxy_keys.set_provider(proxy.id, "openai", "kid", "ciphertext", "h" * 64, NOW)
        assert await seen.wait() < 1.0
        await database.proxy_keys.revoke(proxy.id, NOW)
        assert await seen.wait() < 1.0
    finally:
        await _stop(task)


async def _terminate_listeners(url: str) -> int:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN_URL)
    try:
        rows: list[Any] = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
            name)
        return len(rows)
    finally:
        await admin.close()


async def test_a_lost_listening_connection_is_reopened_and_everything_rechecked(
        postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # long enough for the revocation below to commit before the feed is back
    monkeypatch.setattr(changes, "RETRY_INTERVAL", 0.5)
    url = postgres.create()
    database = open_database(url)
    await database.connect()
    await database.migrate()
    key = generate_key()
    record = await database.create_key(str(uuid_utils.uuid7()), "k", None, hash_secret(key), display_prefix(key), NOW)
    cache = KeyCache(database, ttl=3600)
    assert (await cache.check(key)).status is KeyStatus.VALID
    seen = Seen()
    task = await _feed(database, seen)
    try:
        assert await _terminate_listeners(url) == 1
        # A revocation made while the feed was away sends a notification nobody hears ...
        await database.revoke_key(record.id, NOW)
        # ... so the re-opened feed re-checks everything.
        await seen.wait(timeout=5)
        cache.mark_all_due()
        assert (await cache.check(key)).status is KeyStatus.REVOKED
        # and it listens again
        await database.update_key(record.id, name="after", description=None, now=NOW + timedelta(seconds=1))
        assert await seen.wait() < 1.0
    finally:
        await _stop(task)
        await database.close()


async def test_sqlite_feed_survives_a_missing_table_and_rechecks_once_it_reads_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(changes, "RETRY_INTERVAL", 0.1)
    path = tmp_path / "late.db"
    seen = Seen()
    task = asyncio.ensure_future(changes.SQLiteChangeFeed(str(path), poll_interval=0.05).run(seen))
    try:
        await asyncio.sleep(0.3)  # no table yet: the feed retries, reports nothing
        assert seen.count == 0
        database = open_database(f"sqlite:///{path}")
        await database.connect()
        await database.migrate()
        await seen.wait()  # it may have missed changes while failing: a full re-check
        await database.close()
    finally:
        await _stop(task)


_CANCEL_SCRIPT = """
import asyncio, sqlite3, sys
from majordomo_gateway.storage import changes

path = sys.argv[1]
db = sqlite3.connect(path)
db.execute("CREATE TABLE key_changes (id INTEGER PRIMARY KEY, version INTEGER NOT NULL)")
db.execute("INSERT INTO key_changes VALUES (1, 0)")
db.commit()

async def main() -> None:
    for i in range(300):
        task = asyncio.create_task(changes.SQLiteChangeFeed(path, poll_interval=0).run(lambda: None))
        await asyncio.sleep((i % 7) / 10000)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass

asyncio.run(main())
print("ok")
"""


def test_sqlite_feed_survives_cancellation_mid_read(tmp_path: Path) -> None:
    """Stopping the gateway cancels the feed while its thread may be reading: the connection must be
    closed in that thread, after the read, or the process dies of a segmentation fault (it did, in
    the full suite).  In a subprocess, so a crash fails this test rather than the whole run."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _CANCEL_SCRIPT, str(tmp_path / "feed.db")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"
