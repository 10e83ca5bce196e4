"""X-Majordomo-* metadata as metric labels (``metrics.labels: [Feature]``), bounded.

Clients choose metadata values, and every distinct value is a new time series in Prometheus:
each label keeps at most ``max_values`` distinct values per worker, and counts later ones as
``other``.  A request without the header has the label empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from majordomo_gateway.config import metadata_label_name
from majordomo_gateway.proxy.headers import canonical_name

__all__ = ["OVERFLOW", "MetadataLabels"]

OVERFLOW = "other"


class MetadataLabels:
    __slots__ = ("_seen", "keys", "max_values", "names")

    def __init__(self, keys: Sequence[str], max_values: int) -> None:
        # Metadata keys as the row stores them (canonical casing: User-Id).
        self.keys = tuple(canonical_name(key.lower()) for key in keys)
        self.names = tuple(metadata_label_name(key) for key in keys)
        self.max_values = max_values
        self._seen: tuple[set[str], ...] = tuple(set() for _ in keys)

    def values(self, metadata: Mapping[str, str]) -> tuple[str, ...]:
        out = []
        for key, seen in zip(self.keys, self._seen, strict=True):
            value = metadata.get(key, "")
            if value and value not in seen:
                if len(seen) >= self.max_values:
                    value = OVERFLOW
                else:
                    seen.add(value)
            out.append(value)
        return tuple(out)
