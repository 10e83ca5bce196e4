"""One row that cannot be encoded or inserted never takes others with it (issue 18, point 4).

A seeded fuzz: rows with odd values (integers JSON or BIGINT cannot carry, NaN and infinities,
lone surrogates, NULs and other odd strings, metadata too big for a spool record or with keys that
are not text) are mixed with ordinary rows and pushed through the writer across a real database
outage: PostgreSQL stopped and started under it, and SQLite behind a gateway that starts with its
database unreachable and is restarted on it.  Afterwards every row is accounted for: in the
database, or in a ``*.rejected`` file with its content; every ordinary row in the database;
``rows_dropped`` 0, ``rows_rejected`` equal to what the files hold, and the writer's loop and
guard never failed.

``MAJORDOMO_FUZZ_SEED`` and ``MAJORDOMO_FUZZ_ROWS`` change the run (default: seed 18004, 240 rows).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import MAX_RECORD_BYTES, REJECTED_SUFFIX, Spool, payloads
from majordomo_gateway.storage.writer import RowWriter

from tests.support.records import make_record
from tests.support.reliability import PgCluster

SEED = int(os.environ.get("MAJORDOMO_FUZZ_SEED", "18004"))
ROWS = int(os.environ.get("MAJORDOMO_FUZZ_ROWS", "240"))
DOWN_URL = "postgresql://postgres@127.0.0.1:1/none"  # nothing listens on port 1

HUGE_INTS = [2**63, 2**64, 2**70, -(2**63) - 1, 10**30]
ODD_STRINGS = ["\ud800", "a\udcffb", "\x00nul\x00", "\u202eevil", "\U0001f600" * 50, "\uffff", "e\u0301" * 10,
               "x" * 100_000, ""]
INT_FIELDS = ["input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "web_search_requests",
              "status_code"]
TEXT_FIELDS = ["model", "error_message", "provider_api_key_alias", "request_path"]


def _odd_change(rng: random.Random) -> dict[str, Any]:
    """One odd value somewhere in a row."""
    kind = rng.choice(["int", "float", "text", "meta-text", "meta-key", "meta-huge", "meta-many", "cost"])
    if kind == "int":
        return {rng.choice(INT_FIELDS): rng.choice(HUGE_INTS)}
    if kind == "float":
        return {rng.choice(["response_time_ms", "time_to_first_token_ms"]): rng.choice(
            [float("nan"), float("inf"), float("-inf")])}
    if kind == "text":
        return {rng.choice(TEXT_FIELDS): rng.choice(ODD_STRINGS)}
    if kind == "meta-text":
        return {"raw_metadata": {rng.choice(ODD_STRINGS) or "K": rng.choice(ODD_STRINGS)}}
    if kind == "meta-key":
        return {"raw_metadata": {rng.choice([1, None, 2.5]): "v"}}
    if kind == "meta-huge":  # over a spool record's limit
        return {"raw_metadata": {"Big": "v" * (MAX_RECORD_BYTES + rng.randrange(1, 1000))}}
    if kind == "meta-many":
        return {"raw_metadata": {f"K{i}": "v" * 100 for i in range(rng.randrange(1000, 5000))}}
    return {rng.choice(["input_cost", "total_cost"]): rng.choice([Decimal("NaN"), Decimal("1e400"), Decimal("-0")])}


def _rows(seed: int, count: int) -> tuple[list[RequestRecord], set[str]]:
    """``count`` rows, about one in four odd; and the ids of the ordinary ones."""
    rng = random.Random(seed)
    rows, ordinary = [], set()
    for seq in range(count):
        if rng.random() < 0.25:
            rows.append(make_record(None, **_odd_change(rng)))
        else:
            row = make_record(None, raw_metadata={"Seq": str(seq)})
            rows.append(row)
            ordinary.add(row.id)
    return rows, ordinary


def _rejected(spool_dir: Path) -> list[str]:
    """The ids of the rows kept in *.rejected files (each payload's first value), one per record."""
    ids = []
    for path in spool_dir.glob(f"*{REJECTED_SUFFIX}"):
        for payload in payloads(path.read_bytes()):
            value = json.loads(payload)
            if isinstance(value, dict):  # kept as repr(): the id is its first quoted string
                ids.append(value["unencodable_row"].split("'")[1])
            else:
                ids.append(value[0])
    return ids


async def _ids(db: Database) -> list[str]:
    if db.dialect == "sqlite":
        return await db._run(lambda c: [r[0] for r in c.execute("SELECT id FROM llm_requests")])  # type: ignore[attr-defined, no-any-return]
    return [r[0] for r in await db._fetch("SELECT id::text FROM llm_requests")]  # type: ignore[attr-defined]


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def _settled(writer: RowWriter) -> bool:
    stats = writer.stats()
    return writer.database_ok and stats.queue_depth == 0 and stats.inflight_rows == 0 and stats.spool_bytes == 0


def _check(rows: list[RequestRecord], ordinary: set[str], in_db: list[str], rejected: list[str],
           writers: list[RowWriter], caplog: pytest.LogCaptureFixture) -> None:
    everyone = {r.id for r in rows}
    assert len(in_db) == len(set(in_db)), "a row was written twice"
    assert set(in_db) | set(rejected) == everyone, f"{len(everyone - set(in_db) - set(rejected))} rows lost"
    assert not set(in_db) & set(rejected), "a row both written and rejected"
    assert ordinary <= set(in_db), f"{len(ordinary - set(in_db))} ordinary rows not written"
    assert sum(w.rows_dropped for w in writers) == 0
    assert sum(w.rows_rejected for w in writers) == len(rejected)
    assert rejected, "no odd row was rejected: the fuzz did not reach the spool or the database's refusals"
    failures = [r.getMessage() for r in caplog.records if "failed; retrying" in r.getMessage()]
    assert not failures, failures[:3]


def _check_rejected_content(rows: list[RequestRecord], spool_dir: Path) -> None:
    """Each rejected row is kept with its odd value, not a placeholder."""
    text = b"".join(p for path in spool_dir.glob(f"*{REJECTED_SUFFIX}") for p in payloads(path.read_bytes()))
    by_id = {r.id: r for r in rows}
    for row_id in _rejected(spool_dir):
        row = by_id[row_id]
        for name in INT_FIELDS:
            value = getattr(row, name)
            if value in HUGE_INTS:
                assert str(value).encode() in text, (name, value)
        if isinstance(row.raw_metadata, dict) and "Big" in row.raw_metadata:
            assert b"v" * 1000 in text


@pytest.fixture
def writer_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="majordomo")
    return caplog


async def test_odd_rows_through_a_postgres_outage(pg_cluster: PgCluster, tmp_path: Path,
                                                  writer_log: pytest.LogCaptureFixture) -> None:
    url = await pg_cluster.create_database()
    db = open_database(url)
    await db.connect()
    await db.migrate()
    spool_dir = tmp_path / "spool"
    writer = RowWriter(db, Spool(spool_dir), batch_size=16, flush_interval=0.02)
    writer.start()
    rows, ordinary = _rows(SEED, ROWS)
    third = len(rows) // 3
    try:
        for row in rows[:third]:
            writer.submit(row)
        await _until(lambda: _settled(writer), 30, "the rows before the outage")
        await asyncio.to_thread(pg_cluster.stop, "fast")
        for i, row in enumerate(rows[third:2 * third]):
            writer.submit(row)
            if i % 8 == 0:
                await asyncio.sleep(0.01)
        await _until(lambda: not writer.database_ok and writer.stats().queue_depth == 0, 30, "the outage")
        assert writer.rows_spooled > 0
        await asyncio.to_thread(pg_cluster.start)
        for row in rows[2 * third:]:
            writer.submit(row)
        await _until(lambda: _settled(writer), 60, "recovery")
    finally:
        if not pg_cluster.running():
            await asyncio.to_thread(pg_cluster.start)
        await writer.close()
    # A fresh connection: the writer's pool saw the server go away.
    conn = await asyncpg.connect(url)
    try:
        in_db = [str(r[0]) for r in await conn.fetch("SELECT id FROM llm_requests")]
    finally:
        await conn.close()
    await db.close()
    _check(rows, ordinary, in_db, _rejected(spool_dir), [writer], writer_log)
    _check_rejected_content(rows, spool_dir)


async def test_odd_rows_spooled_by_a_gateway_without_its_database_then_replayed(
        tmp_path: Path, writer_log: pytest.LogCaptureFixture) -> None:
    """SQLite: the first writer never reaches a database (every row goes to the spool, the guard
    and the batcher both spooling); the next one, on the database, replays it."""
    spool_dir = tmp_path / "spool"
    rows, ordinary = _rows(SEED + 1, ROWS)
    down = RowWriter(open_database(DOWN_URL), Spool(spool_dir), batch_size=16, flush_interval=0.02)
    down.mark_unavailable("not started for the test")
    down.start()
    for i, row in enumerate(rows):
        down.submit(row)
        if i % 16 == 0:
            await asyncio.sleep(0.005)
    await _until(lambda: down.stats().queue_depth == 0 and down.stats().inflight_rows == 0, 30, "the spool")
    await down.close()

    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    await db.connect()
    await db.migrate()
    up = RowWriter(db, Spool(spool_dir), batch_size=16, flush_interval=0.02)
    up.start()
    await _until(lambda: _settled(up), 60, "the replay")
    await up.close()
    in_db = await _ids(db)
    await db.close()
    _check(rows, ordinary, in_db, _rejected(spool_dir), [down, up], writer_log)
    _check_rejected_content(rows, spool_dir)
