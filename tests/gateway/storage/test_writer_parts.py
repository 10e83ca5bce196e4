"""The writer's parts one by one, on a real SQLite file and a real spool directory (no mocks)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.spool import Spool
from majordomo_gateway.storage.writer.inserts import Inserter
from majordomo_gateway.storage.writer.outage import RECONNECT_INTERVAL, Outage
from majordomo_gateway.storage.writer.queue import RowQueue
from majordomo_gateway.storage.writer.replay import Replayer
from majordomo_gateway.storage.writer.spooling import SpoolKeeper
from majordomo_gateway.storage.writer.stats import Counters, describe

from tests.support.postgres import PostgresServer
from tests.support.records import make_record

DOWN_URL = "postgresql://postgres@127.0.0.1:1/none"  # nothing listens on port 1


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
async def postgres_db(postgres: PostgresServer) -> AsyncIterator[Database]:
    # PostgreSQL, not SQLite, for rows the database refuses: INSERT OR IGNORE skips a NOT NULL violation.
    db = open_database(postgres.create())
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


async def _ids(db: Database) -> list[str]:
    if db.dialect == "sqlite":
        return await db._run(lambda c: [r[0] for r in c.execute("SELECT id FROM llm_requests ORDER BY id")])  # type: ignore[attr-defined, no-any-return]
    rows = await db._fetch("SELECT id::text FROM llm_requests ORDER BY id")  # type: ignore[attr-defined]
    return [r[0] for r in rows]


async def test_queue_wakes_on_a_full_batch_and_keeps_its_bound() -> None:
    counters = Counters()
    queue = RowQueue(counters, batch_size=3, queue_size=4)
    for _ in range(2):
        queue.submit(make_record(None))
    assert not queue.wake.is_set()
    queue.submit(make_record(None))
    assert queue.wake.is_set()
    taken = queue.take(2)
    token = queue.hold(taken)
    assert (len(queue), queue.held_rows()) == (1, 2)
    assert len(queue.oldest_responses()) == 2
    queue.release(token)
    back = [make_record(None) for _ in range(5)]
    queue.keep_in_memory(back)
    assert len(queue) == 4 and counters.rows_dropped == 2
    assert queue.rows[0] is back[0]  # the oldest go back to the front
    assert queue.drop_all() == 4 and counters.rows_dropped == 6


async def test_outage_is_down_until_a_probe_succeeds(sqlite_db: Database) -> None:
    counters = Counters()
    down = Outage(open_database(DOWN_URL), counters)
    assert down.database_ok and not down.probe_due(0.0)
    down.mark_down(OSError("refused"))
    assert not down.database_ok and counters.write_errors == 1 and counters.last_error == "OSError: refused"
    loop_now = asyncio.get_running_loop().time()
    assert not down.probe_due(loop_now)  # just failed: not before RECONNECT_INTERVAL
    assert not await down.probe(loop_now + RECONNECT_INTERVAL)
    assert counters.last_error is not None and not down.database_ok

    prepared: list[str] = []

    async def prepare() -> None:
        prepared.append("migrate")

    up = Outage(sqlite_db, counters, prepare)
    up.mark_down(OSError("gone"))
    assert await up.probe(0.0)
    assert up.database_ok and prepared == ["migrate"]


async def test_inserter_sets_apart_only_the_rows_the_database_refuses(postgres_db: Database) -> None:
    counters = Counters()
    inserter = Inserter(postgres_db, Outage(postgres_db, counters), counters)
    good = [make_record(None), make_record(None)]
    bad = make_record(None, provider=None)  # NOT NULL column
    refused = await inserter.one_by_one([good[0], bad, good[1]])
    assert refused == [bad]
    assert counters.rows_written == 2 and counters.last_error is not None
    assert await _ids(postgres_db) == sorted(r.id for r in good)

    gone = Inserter(open_database(DOWN_URL), Outage(open_database(DOWN_URL), counters), counters)
    assert await gone.one_by_one([make_record(None)]) is None  # unreachable: not a refusal
    assert not gone.outage.database_ok


async def test_keeper_appends_and_holds_rows_when_the_spool_fails(tmp_path: Path) -> None:
    counters = Counters()
    queue = RowQueue(counters, batch_size=10, queue_size=100)
    keeper = SpoolKeeper(Spool(tmp_path / "spool"), queue, counters)
    rows = [make_record(None) for _ in range(3)]
    assert await keeper.append(rows)
    assert counters.rows_spooled == 3 and counters.settled == 3 and keeper.pending
    await keeper.close()
    assert len(list((tmp_path / "spool").glob("*.spool"))) == 1

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    failing = SpoolKeeper(Spool(blocker / "spool"), queue, counters)
    assert not await failing.append(rows)
    assert not failing.ok and counters.spool_errors == 1 and counters.last_spool_error is not None
    assert list(queue.rows) == rows  # kept in memory, in order
    assert not await failing.append(queue.take_all())  # within the retry interval: not tried again
    assert counters.spool_errors == 1 and len(queue) == 3
    await failing.check()
    assert counters.spool_errors == 2
    await failing.set_aside(rows)  # cannot keep them either: counted as dropped
    assert counters.rows_rejected == 3 and counters.rows_dropped == 3
    await failing.close()


async def test_replay_writes_spooled_rows_once_and_sets_refused_ones_aside(tmp_path: Path,
                                                                          postgres_db: Database) -> None:
    spool_dir = tmp_path / "spool"
    rows = [make_record(None) for _ in range(5)]
    bad = make_record(None, provider=None)
    earlier = Spool(spool_dir)
    earlier.append([*rows, bad])
    earlier.close()  # a process that exited, leaving its file
    await postgres_db.insert_requests(rows[:2])  # some had made it before the outage

    counters = Counters()
    queue = RowQueue(counters, batch_size=2, queue_size=100)
    keeper = SpoolKeeper(Spool(spool_dir), queue, counters)
    outage = Outage(postgres_db, counters)
    replayer = Replayer(keeper, Inserter(postgres_db, outage, counters), queue)
    await replayer.maybe_replay(now=1e9)
    assert await _ids(postgres_db) == sorted(r.id for r in rows)
    assert counters.rows_replayed == 6 and counters.rows_written == 3 and counters.rows_rejected == 1
    assert not list(spool_dir.glob("*.spool")) and len(list(spool_dir.glob("*.rejected"))) == 1
    assert not keeper.pending and outage.database_ok
    await keeper.close()


async def test_replay_against_a_down_database_keeps_the_file(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    earlier = Spool(spool_dir)
    earlier.append([make_record(None)])
    earlier.close()
    counters = Counters()
    queue = RowQueue(counters, batch_size=10, queue_size=100)
    keeper = SpoolKeeper(Spool(spool_dir), queue, counters)
    down = open_database(DOWN_URL)
    outage = Outage(down, counters)
    await Replayer(keeper, Inserter(down, outage, counters), queue).replay()
    assert not outage.database_ok and keeper.pending
    assert len(list(spool_dir.glob("*.spool"))) == 1 and counters.rows_replayed == 0
    await keeper.close()


def test_describe_names_the_error() -> None:
    assert describe(TimeoutError()) == "TimeoutError"
    assert describe(OSError("refused")) == "OSError: refused"
