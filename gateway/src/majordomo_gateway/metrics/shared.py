"""The directory workers publish their numbers to, and the sum /metrics serves.

Each worker writes ``metrics-<pid>.json`` (a temporary file renamed over the old one, so a reader
never sees half a file) once a second, and at once when it is the one scraped.  A file outlives
its worker on purpose: an exited worker's requests stay counted, so counters never go backwards.
Gauges describe the present, so they come only from files written in the last ``GAUGE_MAX_AGE``
seconds.  ``majordomo serve`` empties the directory before its workers start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from majordomo_gateway.metrics.definitions import GAUGES, Family
from majordomo_gateway.metrics.process import Snapshot

__all__ = ["GAUGE_MAX_AGE", "PUBLISH_INTERVAL", "Merged", "SnapshotDirectory", "merge"]

log = logging.getLogger("majordomo.metrics")

PUBLISH_INTERVAL = 1.0
GAUGE_MAX_AGE = 5.0
_PREFIX = "metrics-"
_SUFFIX = ".json"

Key = tuple[str, ...]


class SnapshotDirectory:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_for(self, pid: int) -> Path:
        return self.directory / f"{_PREFIX}{pid}{_SUFFIX}"

    def clear(self) -> None:
        """Remove every worker's file: a new ``serve`` starts counting from zero."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for path in self.directory.iterdir():
            if path.name.startswith((_PREFIX, ".tmp-")):
                with contextlib.suppress(OSError):
                    path.unlink()

    def publish(self, snapshot: Snapshot) -> None:
        pid = snapshot["pid"]
        temporary = self.directory / f".tmp-{pid}{_SUFFIX}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(orjson.dumps(snapshot))
            os.replace(temporary, self.path_for(pid))
        except OSError as exc:
            log.warning("cannot publish metrics to %s: %s", self.directory, exc)

    def read_all(self, skip_pid: int | None = None) -> list[Snapshot]:
        found: list[Snapshot] = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return found
        for entry in entries:
            name = entry.name
            if not (name.startswith(_PREFIX) and name.endswith(_SUFFIX)):
                continue
            if skip_pid is not None and name == f"{_PREFIX}{skip_pid}{_SUFFIX}":
                continue
            try:
                with open(entry.path, "rb") as file:
                    found.append(orjson.loads(file.read()))
            except (OSError, orjson.JSONDecodeError) as exc:
                log.warning("skipping unreadable metrics file %s: %s", entry.path, exc)
        return found


@dataclass
class Merged:
    """Every worker's numbers summed: metric name -> label values -> value (histograms: the
    per-bucket counts, then the sum)."""

    metadata_labels: list[str] = field(default_factory=list)
    counters: dict[str, dict[Key, float]] = field(default_factory=dict)
    gauges: dict[str, dict[Key, float]] = field(default_factory=dict)
    histograms: dict[str, dict[Key, list[float]]] = field(default_factory=dict)
    extra_gauges: dict[str, Family] = field(default_factory=dict)


def merge(snapshots: list[Snapshot], now: float | None = None) -> Merged:
    now = time.time() if now is None else now
    merged = Merged()
    for snapshot in snapshots:
        if snapshot.get("metadata_labels") and not merged.metadata_labels:
            merged.metadata_labels = list(snapshot["metadata_labels"])
        for name, rows in snapshot.get("counters", {}).items():
            _add(merged.counters.setdefault(name, {}), rows)
        for name, rows in snapshot.get("histograms", {}).items():
            _add_buckets(merged.histograms.setdefault(name, {}), rows)
        for name, spec in snapshot.get("extra_gauges", {}).items():
            merged.extra_gauges[name] = Family(name, spec["help"], tuple(spec["labels"]), merge=spec["merge"])
        if now - snapshot.get("time", 0.0) > GAUGE_MAX_AGE:
            continue  # that worker is gone (or stuck): what it last saw is not the present
        for name, rows in snapshot.get("gauges", {}).items():
            family = GAUGES.get(name) or merged.extra_gauges.get(name)
            _combine(merged.gauges.setdefault(name, {}), rows, family.merge if family is not None else "sum")
    return merged


def _add_buckets(table: dict[Key, list[float]], rows: list[list[Any]]) -> None:
    for row in rows:
        key, counts = tuple(row[:-1]), row[-1]
        have = table.get(key)
        if have is None:
            table[key] = list(counts)
        elif len(have) == len(counts):  # else: other buckets (an upgrade mid-run); the first kept
            for i, count in enumerate(counts):
                have[i] += count


def _combine(table: dict[Key, float], rows: list[list[Any]], how: str) -> None:
    for row in rows:
        key, value = tuple(row[:-1]), row[-1]
        if how == "max":
            table[key] = max(table.get(key, value), value)
        elif how == "min":
            table[key] = min(table.get(key, value), value)
        else:
            table[key] = table.get(key, 0) + value


def _add(table: dict[Key, float], rows: list[list[Any]]) -> None:
    for row in rows:
        key = tuple(row[:-1])
        table[key] = table.get(key, 0) + row[-1]
