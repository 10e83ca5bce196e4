"""What the writer has done and holds: the counters its parts share, and the snapshot operators see."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Counters:
    """Shared by the writer's parts; each part counts what it did."""

    rows_written: int = 0
    rows_spooled: int = 0
    rows_replayed: int = 0
    rows_dropped: int = 0
    rows_rejected: int = 0
    # Rows the database already had (a replay after a crash): suppressed, not written twice.
    duplicates: int = 0
    records_damaged: int = 0
    write_errors: int = 0
    spool_errors: int = 0
    # Rows that left memory for the database, the spool or a *.rejected file: progress, as the
    # drain on stop measures it.
    settled: int = 0
    last_error: str | None = None
    last_spool_error: str | None = None


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(slots=True)
class WriterStats:
    pid: int
    flush_interval_s: float
    queue_depth: int
    queue_size: int
    inflight_rows: int
    oldest_unwritten_age_s: float | None
    spool_ok: bool
    refusing_requests: bool
    spool_files: int
    spool_bytes: int
    rows_written: int
    rows_spooled: int
    rows_replayed: int
    rows_dropped: int
    rows_rejected: int
    duplicates: int
    records_damaged: int
    write_errors: int
    spool_errors: int
    database_ok: bool
    last_error: str | None
    last_spool_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}

    def warnings(self) -> list[str]:
        """What an operator should know, in words (``/readyz`` and ``majordomo status`` show it)."""
        found = []
        if not self.database_ok:
            found.append("database unavailable: rows go to the spool")
        if not self.spool_ok:
            found.append(f"spool not writable ({self.last_spool_error}): rows that cannot reach the database "
                         f"are held in memory (at most {self.queue_size}) and lost if the process stops")
        if self.refusing_requests:
            found.append("refusing requests (503): rows could not be recorded (writer.on_spool_failure=refuse)")
        if self.rows_dropped:
            found.append(f"{self.rows_dropped} rows dropped since start (database and spool both unavailable)")
        if self.rows_rejected:
            found.append(f"{self.rows_rejected} rows refused by the database, kept in *.rejected spool files")
        if self.records_damaged:
            found.append(f"{self.records_damaged} damaged spool records skipped (files kept as *.damaged)")
        return found

    def summary(self) -> str:
        age = "-" if self.oldest_unwritten_age_s is None else f"{self.oldest_unwritten_age_s:.1f}s"
        return (f"database {'ok' if self.database_ok else 'DOWN'}, spool {'ok' if self.spool_ok else 'NOT WRITABLE'}; "
                f"queue {self.queue_depth}+{self.inflight_rows} in flight, spool {self.spool_bytes} bytes in "
                f"{self.spool_files} files, oldest unwritten row {age}; written {self.rows_written}, "
                f"spooled {self.rows_spooled}, replayed {self.rows_replayed}, dropped {self.rows_dropped}, "
                f"write errors {self.write_errors}, spool errors {self.spool_errors}")
