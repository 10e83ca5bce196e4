"""Keeps the override table in step with its file, without a restart.

``current()`` sits on the per-request path, so it stats the file at most once per interval
(one ``os.stat``, a few microseconds) and re-reads it only when the stat changed.  A broken
edit is logged once and the last good prices stay in force: a typo in the file must never make
the gateway stop recording costs.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection
from pathlib import Path

from majordomo_gateway.pricing.catalog import PROVIDER_IDS
from majordomo_gateway.pricing.overrides import OverridesError, OverrideTable, load_overrides

logger = logging.getLogger("majordomo.pricing")

DEFAULT_CHECK_INTERVAL_SECONDS = 1.0

# (mtime_ns, size, inode): size and inode catch edits within the filesystem's mtime granularity
# and editors that save by renaming a new file into place.
FileSignature = tuple[int, int, int]


class ReloadingOverrides:
    """The override table from ``path``; raises OverridesError if the first load fails."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        check_interval: float = DEFAULT_CHECK_INTERVAL_SECONDS,
        known_providers: Collection[str] = PROVIDER_IDS.keys(),
    ) -> None:
        self.path = Path(path)
        self._known_providers = known_providers
        self._clock = clock
        self._check_interval = check_interval
        self._signature = _signature(self.path)
        self._table = load_overrides(self.path, self._known_providers)
        self._next_check = clock() + check_interval

    def current(self) -> OverrideTable:
        now = self._clock()
        if now >= self._next_check:
            self._next_check = now + self._check_interval
            self._reload_if_changed()
        return self._table

    def _reload_if_changed(self) -> None:
        # Stat before reading: an edit landing after the stat changes the signature again and is
        # picked up at the next check.
        signature = _signature(self.path)
        if signature == self._signature:
            return
        self._signature = signature
        if signature is None:
            logger.error("pricing overrides %s: file disappeared; keeping the previous prices", self.path)
            return
        try:
            table = load_overrides(self.path, self._known_providers)
        except OverridesError as error:
            logger.error("%s; keeping the previous prices until the file is fixed", error)
            return
        self._table = table
        logger.info("pricing overrides %s reloaded: %d models", self.path, len(table))


def _signature(path: Path) -> FileSignature | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)
