"""A durable local spool: rows that could not reach the database wait here, on disk.

Each record is framed as MAGIC, payload length, CRC32, payload (a JSON-encoded row).  A torn
write (crash mid-append, full disk) leaves a damaged frame that replay skips with a warning,
resynchronising on the next MAGIC, so one bad record never costs the ones after it.

Each process appends to its own file and holds an exclusive ``flock`` on it while it lives, so
several workers can share one spool directory: a file whose lock can be taken belongs to nobody
(its writer exited or died) and may be replayed by whoever takes the lock.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from majordomo_gateway.storage.records import RequestRecord

log = logging.getLogger("majordomo.spool")

MAGIC = b"MDR1"
_HEADER = struct.Struct(">4sII")  # magic, payload length, crc32
_MAX_RECORD = 16 * 1024 * 1024
SPOOL_SUFFIX = ".spool"


@dataclass(slots=True)
class SpoolReadResult:
    records: list[RequestRecord]
    damaged: int


def encode(records: Sequence[RequestRecord]) -> bytes:
    parts = []
    for record in records:
        payload = record.to_json()
        parts.append(_HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)))
        parts.append(payload)
    return b"".join(parts)


def decode(data: bytes, source: str = "spool") -> SpoolReadResult:
    records: list[RequestRecord] = []
    damaged = 0
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _HEADER.size:
            damaged += 1
            log.warning("%s: truncated record header at byte %d skipped", source, pos)
            break
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if magic == MAGIC and length <= _MAX_RECORD and start + length <= end:
            payload = data[start:start + length]
            if zlib.crc32(payload) == crc:
                try:
                    records.append(RequestRecord.from_json(payload))
                    pos = start + length
                    continue
                except (ValueError, TypeError) as exc:
                    log.warning("%s: undecodable record at byte %d skipped: %s", source, pos, exc)
        damaged += 1
        log.warning("%s: damaged record at byte %d skipped", source, pos)
        next_magic = data.find(MAGIC, pos + 1)
        if next_magic < 0:
            break
        pos = next_magic
    return SpoolReadResult(records, damaged)


@dataclass(slots=True)
class ClaimedFile:
    """A spool file we hold the lock on.  ``done`` deletes it once its rows are in the database."""

    path: Path
    handle: BinaryIO
    result: SpoolReadResult

    def done(self) -> None:
        self.path.unlink(missing_ok=True)
        self.handle.close()

    def release(self) -> None:
        self.handle.close()


class Spool:
    """The spool directory.  Blocking file I/O: call it from a worker thread, not the event loop."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self._file: BinaryIO | None = None
        self._path: Path | None = None
        self._bytes = 0

    @property
    def current_path(self) -> Path | None:
        return self._path

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns()}-{os.getpid()}{SPOOL_SUFFIX}"
            self._path = self.directory / name
            self._file = open(self._path, "ab")
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._bytes = 0
        return self._file

    def append(self, records: Sequence[RequestRecord]) -> None:
        """Append and fsync: when this returns the rows survive a crash of the process or the OS."""
        if not records:
            return
        file = self._open()
        data = encode(records)
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
        self._bytes += len(data)

    def rotate(self) -> None:
        """Close the current file so that it can be replayed; the next append starts a new one."""
        if self._file is None:
            return
        file, path = self._file, self._path
        self._file = None
        self._path = None
        file.close()  # releases our lock
        if path is not None and self._bytes == 0:
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.rotate()

    def unowned_files(self) -> list[Path]:
        """Spool files other than our own current one, oldest first (names start with a timestamp)."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.glob(f"*{SPOOL_SUFFIX}") if p != self._path),
                      key=lambda p: p.name)

    def claim(self, path: Path) -> ClaimedFile | None:
        """Lock and read a spool file; None when a live writer owns it or it is already gone."""
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        if not path.exists():  # replayed and removed by another process while we waited
            handle.close()
            return None
        return ClaimedFile(path, handle, decode(handle.read(), source=str(path)))

    def pending_bytes(self) -> int:
        if not self.directory.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.directory.glob(f"*{SPOOL_SUFFIX}") if p.exists())
