"""A durable local spool: rows that could not reach the database wait here, on disk.

Each record is framed as MAGIC, payload length, CRC32, payload (a JSON-encoded row).  A torn
write (crash mid-append, full disk) leaves a damaged frame that replay skips with a warning,
resynchronising on the next MAGIC, so one bad record never costs the ones after it.

Each process appends to its own file and holds an exclusive ``flock`` on it while it lives, so
several workers can share one spool directory: a file whose lock can be taken belongs to nobody
(its writer exited or died) and may be replayed by whoever takes the lock.  A file is created
under a hidden temporary name and locked *before* it gets its ``.spool`` name, so no other process
can ever claim (and delete) a file its writer is about to append to.

File names start with the time of their oldest row (nanoseconds since the epoch), so sorting them
replays oldest first and tells ``/readyz`` how old the oldest unwritten row is.  Files are capped
at ``max_file_bytes`` so replaying one never needs more than that much memory.

A file whose replay found damaged records (other than a torn last record, the normal trace of a
crash mid-append) is kept as ``*.damaged``, for inspection; nothing reads it again.  Rows the
database refused are kept in ``*.rejected`` files (the same framing: rename one to ``.spool`` to
replay it once the cause is fixed).

The spool never writes a record its replay would refuse: ``append`` writes a row only when its
encoding decodes back to the very same row and fits ``MAX_RECORD_BYTES``.  A row that does not (an
integer JSON cannot carry, a NaN that would come back as null, a string that is not valid
Unicode, a row too big for a record) is returned to the caller, which keeps it in a
``*.rejected`` file (``set_aside``): there every row is kept with its content, in a lossless
fallback encoding when the strict one fails (``encode_kept``; such a record is for reading, and
replay skips it as undecodable).  One such row never costs the rows written with it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
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
#: the largest record payload replay reads (a larger length field is taken for damage)
MAX_RECORD_BYTES = 16 * 1024 * 1024
_MAX_RECORD = MAX_RECORD_BYTES
SPOOL_SUFFIX = ".spool"
DAMAGED_SUFFIX = ".damaged"
REJECTED_SUFFIX = ".rejected"
MAX_FILE_BYTES = 8 * 1024 * 1024  # about 20,000 rows: what one replay holds in memory at a time
_PROBE_BYTES = 4096
STALE_TEMPORARY_SECONDS = 60.0


@dataclass(slots=True)
class SpoolReadResult:
    records: list[RequestRecord]
    damaged: int
    # The last record was cut short (the writer died mid-append): expected after a crash, and
    # those rows were never acknowledged as durable.  Damage elsewhere is not expected.
    torn_tail: bool = False

    @property
    def damaged_inside(self) -> int:
        return self.damaged - (1 if self.torn_tail else 0)


@dataclass(slots=True, frozen=True)
class Unspoolable:
    """A row the spool will not write, and why."""

    record: RequestRecord
    reason: str


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def encode(records: Sequence[RequestRecord]) -> bytes:
    """The records framed, strictly (raises on a row JSON cannot carry)."""
    return b"".join([_frame(record.to_json()) for record in records])


def spoolable(record: RequestRecord) -> tuple[bytes | None, str]:
    """The row's payload when replay would read back exactly this row; else None and why."""
    try:
        payload = record.to_json()
    except Exception as exc:  # orjson's TypeError mostly; nothing about one row may escape
        return None, f"cannot be encoded: {exc}"
    if len(payload) > MAX_RECORD_BYTES:
        return None, f"encodes to {len(payload)} bytes; a spool record holds at most {MAX_RECORD_BYTES}"
    try:
        same = RequestRecord.from_json(payload) == record
    except Exception as exc:  # e.g. a timestamp that is not one
        return None, f"would not decode: {type(exc).__name__}: {exc}"
    if not same:  # NaN comes back as null, a tuple as a list...
        return None, "would not decode to the same row (a value JSON cannot carry, such as NaN)"
    return payload, ""


def encode_spoolable(records: Sequence[RequestRecord]) -> tuple[bytes, list[Unspoolable]]:
    """The records replay would read back exactly, framed; and those it would not."""
    parts: list[bytes] = []
    refused: list[Unspoolable] = []
    for record in records:
        payload, reason = spoolable(record)
        if payload is None:
            refused.append(Unspoolable(record, reason))
        else:
            parts.append(_frame(payload))
    return b"".join(parts), refused


def encode_kept(records: Sequence[RequestRecord]) -> bytes:
    """Framed for a ``*.rejected`` file: strictly when possible, else in a lossless fallback
    (Python's JSON: integers of any size, NaN, escaped lone surrogates, keys made text), so
    that whatever made the row unusable can still be read there.  Never raises."""
    parts = []
    for record in records:
        payload, _ = spoolable(record)
        parts.append(_frame(_fallback_json(record) if payload is None else payload))
    return b"".join(parts)


def _fallback_json(record: RequestRecord) -> bytes:
    values = record.as_tuple()
    try:
        return json.dumps(values, default=str, ensure_ascii=True).encode("ascii")
    except Exception:
        # e.g. metadata keys that are not even text: keep what repr() says of the row
        return json.dumps({"unencodable_row": repr(values)}, ensure_ascii=True).encode("ascii")


def _oldest_ns(records: Sequence[RequestRecord]) -> int:
    """For a file name: the oldest row's time, or now when a row's time is not a time."""
    try:
        return min(int(r.responded_at.timestamp() * 1_000_000_000) for r in records)
    except Exception:
        return time.time_ns()


def decode(data: bytes, source: str = "spool") -> SpoolReadResult:
    records: list[RequestRecord] = []
    damaged = 0
    torn = False
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < _HEADER.size:
            damaged += 1
            torn = data.find(MAGIC[: end - pos], pos) == pos  # a header cut short, not garbage
            log.warning("%s: truncated record header at byte %d skipped", source, pos)
            break
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        if magic == MAGIC and length <= _MAX_RECORD and start + length > end and data.find(MAGIC, start) < 0:
            damaged += 1
            torn = True
            log.warning("%s: torn last record at byte %d (a write cut short) skipped", source, pos)
            break
        if magic == MAGIC and length <= _MAX_RECORD and start + length <= end:
            payload = data[start:start + length]
            if zlib.crc32(payload) == crc:
                try:
                    records.append(RequestRecord.from_json(payload))
                    pos = start + length
                    continue
                except Exception as exc:  # a frame from another version: skip it, keep the rest
                    log.warning("%s: undecodable record at byte %d skipped: %s", source, pos, exc)
        damaged += 1
        log.warning("%s: damaged record at byte %d skipped", source, pos)
        next_magic = data.find(MAGIC, pos + 1)
        if next_magic < 0:
            break
        pos = next_magic
    return SpoolReadResult(records, damaged, torn)


def payloads(data: bytes) -> list[bytes]:
    """Each whole record's payload, undecoded: how a ``*.rejected`` file's fallback records
    (``encode_kept``) are read back."""
    found: list[bytes] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        magic, length, crc = _HEADER.unpack_from(data, pos)
        start = pos + _HEADER.size
        payload = data[start:start + length]
        if magic != MAGIC or len(payload) < length or zlib.crc32(payload) != crc:
            next_magic = data.find(MAGIC, pos + 1)
            if next_magic < 0:
                break
            pos = next_magic
            continue
        found.append(payload)
        pos = start + length
    return found


@dataclass(slots=True)
class ClaimedFile:
    """A spool file we hold the lock on.  ``done`` deletes it once its rows are in the database."""

    path: Path
    handle: BinaryIO
    result: SpoolReadResult

    def done(self) -> Path | None:
        """Every readable row is in the database: remove the file (or keep it aside when some of
        it could not be read; returns where)."""
        kept = None
        if self.result.damaged_inside:
            kept = self.path.with_name(self.path.name + DAMAGED_SUFFIX)
            self.path.rename(kept)
        else:
            self.path.unlink(missing_ok=True)
        self.handle.close()
        return kept

    def release(self) -> None:
        self.handle.close()


@dataclass(slots=True)
class SpoolState:
    files: int
    bytes: int
    oldest: float | None  # epoch seconds of the oldest row waiting in the spool


class Spool:
    """The spool directory.  Blocking file I/O: call it from a worker thread, not the event loop."""

    def __init__(self, directory: str | Path, *, max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.directory = Path(directory)
        self.max_file_bytes = max_file_bytes
        self._fd: int | None = None
        self._path: Path | None = None
        self._bytes = 0

    @property
    def current_path(self) -> Path | None:
        return self._path

    def _open(self, records: Sequence[RequestRecord]) -> int:
        self.directory.mkdir(parents=True, exist_ok=True)
        oldest = _oldest_ns(records)
        name = f"{oldest:019d}-{os.getpid()}-{secrets.token_hex(4)}{SPOOL_SUFFIX}"
        temporary = self.directory / f".{name}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked before it is visible under a name that replay looks for.
            os.rename(temporary, self.directory / name)
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(self.directory)
        self._fd, self._path, self._bytes = fd, self.directory / name, 0
        return fd

    def append(self, records: Sequence[RequestRecord]) -> list[Unspoolable]:
        """Append and fsync: when this returns the rows survive a crash of the process or the OS.

        Returns the rows not written because replay would not read them back as they are (see
        the module's docstring); the caller keeps them elsewhere.  On failure (disk full, I/O
        error) the file is cut back to its last whole record, so a failed append leaves nothing
        behind and the caller may keep the rows and retry.
        """
        if not records:
            return []
        data, refused = encode_spoolable(records)
        if not data:
            return refused
        if self._fd is not None and self._bytes and self._bytes + len(data) > self.max_file_bytes:
            self.rotate()
        fd = self._fd if self._fd is not None else self._open(records)
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(fd, view[written:])
            os.fsync(fd)
        except OSError:
            try:
                os.ftruncate(fd, self._bytes)
            except OSError:
                self._abandon()  # the torn tail stays; replay skips it
            raise
        self._bytes += len(data)
        return refused

    def _abandon(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._path, self._bytes = None, None, 0

    def rotate(self) -> None:
        """Close the current file so that it can be replayed; the next append starts a new one."""
        if self._fd is None:
            return
        fd, path, size = self._fd, self._path, self._bytes
        self._fd, self._path, self._bytes = None, None, 0
        if path is not None and size == 0:
            path.unlink(missing_ok=True)
        os.close(fd)  # releases our lock

    def close(self) -> None:
        self.rotate()

    def check(self) -> None:
        """Raise OSError unless a spool file could be written here now (created, filled, fsync'ed)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.directory / f".probe-{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if os.write(fd, bytes(_PROBE_BYTES)) < _PROBE_BYTES:
                raise OSError(errno.ENOSPC, "short write", str(probe))
            os.fsync(fd)
        finally:
            os.close(fd)
            probe.unlink(missing_ok=True)

    def unowned_files(self) -> list[Path]:
        """Spool files other than our own current one, oldest first (names start with a timestamp)."""
        if not self.directory.is_dir():
            return []
        self._remove_stale_temporaries()
        return sorted((p for p in self.directory.glob(f"*{SPOOL_SUFFIX}") if p != self._path),
                      key=lambda p: p.name)

    def _remove_stale_temporaries(self) -> None:
        """A writer that died between creating and naming its file left an empty temporary.  Only
        old ones are removed: a young one may be between its creation and its lock."""
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for path in self.directory.glob(f".*{SPOOL_SUFFIX}.tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
            except OSError:
                continue

    def claim(self, path: Path) -> ClaimedFile | None:
        """Lock and read a spool file; None when a live writer owns it or it is already gone."""
        with contextlib.ExitStack() as on_failure:
            try:
                handle = on_failure.enter_context(open(path, "rb"))
            except FileNotFoundError:
                return None
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            if not path.exists():  # replayed and removed by another process while we waited
                return None
            claimed = ClaimedFile(path, handle, decode(handle.read(), source=str(path)))
            # From here the claim owns the handle (and so the lock) until it is released.
            on_failure.pop_all()
            return claimed

    def set_aside(self, records: Sequence[RequestRecord]) -> Path:
        """Keep rows the database refuses, or the spool cannot carry, in a ``*.rejected`` file
        that replay does not read."""
        self.directory.mkdir(parents=True, exist_ok=True)
        oldest = _oldest_ns(records)
        path = self.directory / f"{oldest:019d}-{os.getpid()}-{secrets.token_hex(4)}{REJECTED_SUFFIX}"
        with open(path, "wb") as file:
            file.write(encode_kept(records))
            file.flush()
            os.fsync(file.fileno())
        return path

    def state(self) -> SpoolState:
        """What waits in the spool directory (every process's files, ours included)."""
        files = size = 0
        oldest: int | None = None
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return SpoolState(0, 0, None)
        for entry in entries:
            if not entry.name.endswith(SPOOL_SUFFIX) or entry.name.startswith("."):
                continue
            try:
                size += entry.stat().st_size
            except OSError:
                continue
            files += 1
            stamp = entry.name.split("-", 1)[0]
            if stamp.isdigit():
                oldest = int(stamp) if oldest is None else min(oldest, int(stamp))
        return SpoolState(files, size, None if oldest is None else oldest / 1_000_000_000)

    def pending_bytes(self) -> int:
        return self.state().bytes


def _fsync_directory(directory: Path) -> None:
    """Make a new file's name durable too (not only its contents)."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
