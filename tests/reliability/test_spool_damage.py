"""Scenario 7: a damaged spool (torn write, flipped bits, garbage, a stranger's file).

Replay keeps every intact record, skips each damaged one with a warning and counts them in
``/readyz`` (``records_damaged``).  A file damaged inside is kept aside (``*.damaged``) for
inspection instead of deleting bytes nobody could read; a file whose only damage is a torn last
record (a crash mid-append, rows never acknowledged as durable) is simply removed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from majordomo_gateway.storage.records import RequestRecord
from majordomo_gateway.storage.spool import encode

from tests.support.records import spool_record
from tests.support.reliability import account, log_lines, spool_files, wait_settled


def _write_damaged_spool(directory: Path, key_id: str) -> tuple[set[str], int]:
    """Spool files with known damage; returns (ids that must arrive, damaged records)."""
    directory.mkdir(parents=True, exist_ok=True)
    good: set[str] = set()
    frames = [encode([spool_record(key_id, f"damage-a{i}")]) for i in range(40)]
    records_a = [RequestRecord.from_json(f[12:]) for f in frames]
    damaged = 0
    data = bytearray()
    for i, (frame, record) in enumerate(zip(frames, records_a, strict=True)):
        if i == 5:  # a flipped bit in the payload: the CRC catches it
            frame = bytearray(frame)
            frame[40] ^= 0x01
            damaged += 1
        elif i == 12:  # a length field pointing past the end of the file
            frame = bytearray(frame)
            frame[4:8] = (10_000_000).to_bytes(4, "big")
            damaged += 1
        elif i == 20:  # garbage between two records (e.g. a bad sector)
            data += b"\x00garbage\xff" * 7
            damaged += 1
            good.add(record.id)
        else:
            good.add(record.id)
        data += frame
    torn = encode([spool_record(key_id, "damage-torn")])
    data += torn[: len(torn) // 2]  # a torn write: the process died mid-append
    damaged += 1
    (directory / f"{1_000_000_000_000_000_000:019d}-1-aaaaaa.spool").write_bytes(bytes(data))
    # A second, intact file from another (dead) worker, replayed independently of the first.
    intact = [spool_record(key_id, f"damage-b{i}") for i in range(25)]
    good.update(r.id for r in intact)
    (directory / f"{1_000_000_000_000_000_001:019d}-2-bbbbbb.spool").write_bytes(encode(intact))
    # A file cut inside its very first header, and an empty one.
    (directory / f"{1_000_000_000_000_000_002:019d}-3-cccccc.spool").write_bytes(encode(intact[:1])[:7])
    damaged += 1
    (directory / f"{1_000_000_000_000_000_003:019d}-4-dddddd.spool").write_bytes(b"")
    return good, damaged


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_damaged_spool_records_are_skipped_and_the_rest_replayed(make_gateway, kind: str,
                                                                       record_result) -> None:
    gw = await make_gateway(kind)
    gw.terminate()
    spool = gw.workdir.parent / "spool"
    good, damaged = _write_damaged_spool(spool, gw.key_id)
    gw.start()
    await wait_settled([gw], timeout=30)
    if gw.dialect == "sqlite":
        rows = await gw.query("SELECT id FROM llm_requests")
    else:
        rows = await gw.query("SELECT id::text FROM llm_requests")
    ids = {str(r[0]) for r in rows}
    _, ready = await gw.readyz()
    warnings = log_lines(gw, "damaged record", "truncated record")
    kept = sorted(p.name for p in spool.glob("*.damaged"))
    record_result(database=kind, intact_records=len(good), damaged_records=damaged, rows=len(ids),
                  records_damaged_stat=ready["writer"]["records_damaged"], warnings_logged=len(warnings),
                  damaged_files_kept=kept)
    assert ids == good, (len(ids), len(good))
    assert ready["writer"]["records_damaged"] == damaged, ready
    assert len(warnings) >= damaged, warnings
    assert not spool_files(spool)
    assert kept == ["1000000000000000000-1-aaaaaa.spool.damaged"], kept
    assert (await account(gw, [])).duplicated == 0


async def test_spool_from_a_newer_or_foreign_writer_does_not_block_the_rest(make_gateway, record_result) -> None:
    """A record with a valid frame whose row the database rejects (here: an unknown key id, a
    foreign-key violation) must not wedge replay: it is set aside and the other files go in."""
    gw = await make_gateway("postgres")
    gw.terminate()
    spool = gw.workdir.parent / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    poisoned = [spool_record(gw.key_id, f"poison-ok{i}") for i in range(10)]
    bad = spool_record(str(uuid.uuid4()), "poison-bad")
    (spool / f"{1_000_000_000_000_000_000:019d}-1-aaaaaa.spool").write_bytes(encode([*poisoned[:5], bad,
                                                                                    *poisoned[5:]]))
    later = [spool_record(gw.key_id, f"poison-later{i}") for i in range(10)]
    (spool / f"{1_000_000_000_000_000_001:019d}-2-bbbbbb.spool").write_bytes(encode(later))
    gw.start()
    await wait_settled([gw], timeout=30)
    ids = {str(r[0]) for r in await gw.query("SELECT id::text FROM llm_requests")}
    rejected = sorted(p.name for p in spool.glob("*.rejected"))
    record_result(rows=len(ids), rejected_files=rejected)
    assert ids == {r.id for r in poisoned + later}
    assert len(rejected) == 1, rejected
