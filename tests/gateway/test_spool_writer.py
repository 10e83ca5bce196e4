"""The spool survives torn writes; the writer spools during an outage and replays afterwards."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

from majordomo_gateway.storage.database import open_database
from majordomo_gateway.storage.records import COLUMNS
from majordomo_gateway.storage.spool import MAX_RECORD_BYTES, Spool, decode, encode, payloads
from majordomo_gateway.storage.writer import RowWriter

from tests.support.records import make_record


def test_spool_round_trip_keeps_every_field() -> None:
    records = [make_record("k1"), make_record(None, error_message="boom", input_cost=None, total_cost=None)]
    decoded = decode(encode(records))
    assert decoded.damaged == 0
    assert decoded.records == records


def test_torn_and_corrupt_records_are_skipped_the_rest_kept() -> None:
    records = [make_record(None) for _ in range(4)]
    data = bytearray(encode(records))
    first_len = len(encode(records[:1]))
    data[first_len + 20] ^= 0xFF  # corrupt the second record's payload
    torn = bytes(data) + encode([make_record(None)])[:-7]  # a fifth record cut mid-write
    decoded = decode(torn)
    assert decoded.damaged == 2
    assert [r.id for r in decoded.records] == [records[0].id, records[2].id, records[3].id]


async def test_outage_spools_then_replay_writes_each_row_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    down = open_database("postgresql://postgres@127.0.0.1:1/none")  # nothing listens on port 1
    writer = RowWriter(down, Spool(spool_dir), batch_size=10, flush_interval=0.01)
    writer.start()
    records = [make_record(None) for _ in range(25)]
    for record in records:
        writer.submit(record)
    for _ in range(200):
        if writer.rows_spooled == 25:
            break
        await asyncio.sleep(0.01)
    assert writer.rows_spooled == 25
    assert not writer.database_ok
    await writer.close()
    assert list(spool_dir.glob("*.spool"))

    # The database is back (a new process start): the spool is replayed, then removed.
    up = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    await up.connect()
    await up.migrate()
    await up.insert_requests(records[:5])  # some rows had made it before the outage
    writer = RowWriter(up, Spool(spool_dir), batch_size=10, flush_interval=0.01)
    writer.start()
    for _ in range(300):
        if not list(spool_dir.glob("*.spool")):
            break
        await asyncio.sleep(0.01)
    await writer.close()
    ids = await up._run(lambda c: [r[0] for r in c.execute("SELECT id FROM llm_requests")])  # type: ignore[attr-defined]
    await up.close()
    assert sorted(ids) == sorted(r.id for r in records)
    assert writer.rows_replayed == 25
    assert not list(spool_dir.glob("*.spool"))


async def test_close_drains_the_queue_to_the_database(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'm.db'}")
    await db.connect()
    await db.migrate()
    writer = RowWriter(db, Spool(tmp_path / "spool"), batch_size=1000, flush_interval=60)
    writer.start()
    for _ in range(50):
        writer.submit(make_record(None))
    await writer.close()  # long flush interval: only the drain can have written them
    count = await db._run(lambda c: c.execute("SELECT COUNT(*) FROM llm_requests").fetchone()[0])  # type: ignore[attr-defined]
    await db.close()
    assert count == 50


def test_the_spool_writes_only_rows_replay_reads_back_as_they_are(tmp_path: Path) -> None:
    """Issue 18, points 4 and 5: a row the strict encoding cannot carry, or that would decode to
    another row (NaN comes back as null), or too big for a record, is returned, not written; the
    rows around it are written."""
    good = [make_record(None), make_record(None)]
    odd = [make_record(None, input_tokens=2**70), make_record(None, response_time_ms=float("nan")),
           make_record(None, model="\ud800"),
           make_record(None, raw_metadata={"Big": "v" * (MAX_RECORD_BYTES + 1)})]
    spool = Spool(tmp_path / "spool")
    refused = spool.append([good[0], *odd, good[1]])
    spool.close()
    assert [u.record for u in refused] == odd
    assert "64-bit" in refused[0].reason and "same row" in refused[1].reason
    assert "surrogates" in refused[2].reason and str(MAX_RECORD_BYTES) in refused[3].reason
    (path,) = (tmp_path / "spool").glob("*.spool")
    assert decode(path.read_bytes()).records == good

    kept = spool.set_aside(odd)
    values = [json.loads(p) for p in payloads(kept.read_bytes())]
    assert values[0][COLUMNS.index("input_tokens")] == 2**70
    assert math.isnan(values[1][COLUMNS.index("response_time_ms")])
    assert values[2][COLUMNS.index("model")] == "\ud800"
    assert len(values[3][COLUMNS.index("raw_metadata")]["Big"]) == MAX_RECORD_BYTES + 1
