"""``OTEL_TRACES_SAMPLER`` (and ``OTEL_TRACES_SAMPLER_ARG``), as the SDK reads them: always_on,
always_off, traceidratio, and their parentbased_ forms (the default: parentbased_always_on, which
follows the caller's sampled flag and samples every root)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

__all__ = ["Sampler"]

log = logging.getLogger("majordomo.tracing")

_KNOWN = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
          "parentbased_traceidratio")
_ID_LIMIT = 1 << 64


class Sampler:
    __slots__ = ("bound", "parent_based", "root")

    def __init__(self, root: str = "always_on", parent_based: bool = True, ratio: float = 1.0) -> None:
        self.parent_based = parent_based
        self.root = root
        # The SDK's TraceIdRatioBased: the trace id's low 64 bits under ratio * 2^64.
        self.bound = round(max(0.0, min(1.0, ratio)) * _ID_LIMIT)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str]) -> Sampler:
        name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
        if name not in _KNOWN:
            log.warning("OTEL_TRACES_SAMPLER=%r is not one the gateway knows (%s); using parentbased_always_on",
                        name, ", ".join(_KNOWN))
            name = "parentbased_always_on"
        ratio = 1.0
        if name.endswith("traceidratio"):
            try:
                ratio = float(environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            except ValueError:
                log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a number; sampling every trace",
                            environ.get("OTEL_TRACES_SAMPLER_ARG"))
        parent_based = name.startswith("parentbased_")
        return cls(name.removeprefix("parentbased_"), parent_based, ratio)

    def sampled(self, trace_id: bytes, parent_flags: int | None) -> bool:
        """``parent_flags``: the caller's trace flags, None for a root span."""
        if self.parent_based and parent_flags is not None:
            return bool(parent_flags & 1)
        if self.root == "always_on":
            return True
        if self.root == "always_off":
            return False
        return int.from_bytes(trace_id[8:], "big") < self.bound
