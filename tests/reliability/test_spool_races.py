"""Scenario 8, the narrow window: two processes share a spool directory, one is creating its file
while the other replays.  Deterministic, in one process: flock locks belong to open file
descriptions, so two ``Spool`` objects on one directory contend exactly as two processes do."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
from majordomo_gateway.storage.spool import Spool, decode

from tests.support.records import spool_record


def test_a_file_being_created_is_never_claimed_by_another_replayer(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writer, replayer = Spool(tmp_path), Spool(tmp_path)
    real_flock = fcntl.flock
    replayed: list[int] = []

    def flock_after_a_replay(fd: int, operation: int) -> None:
        # The writer is about to lock its brand-new file: the other process's replay runs first.
        if not replayed:
            replayed.append(0)
            for path in replayer.unowned_files():
                claimed = replayer.claim(path)
                if claimed is not None:
                    replayed[0] += 1
                    claimed.done()  # nothing in it: replay "succeeds" and deletes the file
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_replay)
    records = [spool_record("k", f"race{i}") for i in range(5)]
    writer.append(records)
    monkeypatch.setattr(fcntl, "flock", real_flock)
    writer.rotate()
    on_disk = [r.id for p in sorted(tmp_path.glob("*.spool")) for r in decode(p.read_bytes()).records]
    assert replayed == [0], "the replayer claimed a file its writer had not locked yet"
    assert on_disk == [r.id for r in records], "rows appended to a file another process deleted are lost"


def test_a_failed_append_leaves_no_torn_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full mid-append: the file is cut back to its last whole record, so the retry (the rows
    are kept in memory) does not leave a damaged record for replay to skip."""
    import os

    spool = Spool(tmp_path)
    first = [spool_record("k", "full0")]
    spool.append(first)
    real_write = os.write
    calls = []

    def write_half_then_enospc(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", write_half_then_enospc)
    with pytest.raises(OSError):
        spool.append([spool_record("k", "full1"), spool_record("k", "full2")])
    monkeypatch.setattr(os, "write", real_write)
    retry = [spool_record("k", "full1"), spool_record("k", "full2")]
    spool.append(retry)
    spool.rotate()
    result = decode(next(tmp_path.glob("*.spool")).read_bytes())
    assert result.damaged == 0
    assert [r.id for r in result.records] == [r.id for r in first + retry]
