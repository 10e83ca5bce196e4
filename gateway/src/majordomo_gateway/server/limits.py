"""What one worker's connections may hold, and the file descriptors that leaves room for.

A worker that runs out of file descriptors fails everything at once: ``accept()`` fails (the
kernel resets the client), the upstream connect fails (502), the spool cannot open a file.
So the connection cap is sized against ``RLIMIT_NOFILE``: every client connection may need an
upstream connection too, the listen backlog can be accepted in one burst before any connection
is looked at, and the process needs a few descriptors of its own.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

from majordomo_gateway.config import ServerSettings
from majordomo_gateway.proxy.pipeline import MAX_REQUEST_BODY

__all__ = ["BACKLOG_MAX", "RESERVED_FDS", "ConnectionLimits", "fd_budget", "fd_limit", "raise_fd_limit"]

#: the database pool, spool files, log files, the loop's own descriptors, the listening socket
RESERVED_FDS = 64
#: uvicorn's default listen backlog, used when the descriptor limit has room for it
BACKLOG_MAX = 2048


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """The bounds the server protocol applies (server/protocol.py), from ``server.*``."""

    max_head_bytes: int = 64 * 1024
    head_timeout: float = 10.0
    keepalive_timeout: float = 5.0
    #: the cap in force: ``server.max_connections`` lowered to what the descriptors allow
    max_connections: int = 4096
    max_body_bytes: int = MAX_REQUEST_BODY

    @classmethod
    def from_settings(cls, server: ServerSettings, descriptors: int | None = None) -> ConnectionLimits:
        connections, _ = fd_budget(server.max_connections, fd_limit() if descriptors is None else descriptors)
        return cls(max_head_bytes=server.max_head_bytes, head_timeout=server.head_timeout,
                   keepalive_timeout=server.keepalive_timeout, max_connections=connections)


def fd_budget(max_connections: int, descriptors: int) -> tuple[int, int]:
    """(connections, listen backlog) that fit in ``descriptors``: each client connection counted
    twice (its upstream connection), the backlog once, plus RESERVED_FDS."""
    backlog = min(BACKLOG_MAX, max(16, descriptors // 8))
    room = (descriptors - RESERVED_FDS - backlog) // 2
    return max(1, min(max_connections, room)), backlog


def fd_limit() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else soft


def raise_fd_limit(max_connections: int) -> int:
    """Raise the soft descriptor limit towards what ``max_connections`` needs (as far as the hard
    limit allows; many systems start processes at a soft 1024 under a hard limit far above it).
    Returns the soft limit now in force."""
    wanted = 2 * max_connections + BACKLOG_MAX + RESERVED_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return fd_limit()
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        # On failure the soft limit stays, and the cap is lowered to fit it instead.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return fd_limit()
