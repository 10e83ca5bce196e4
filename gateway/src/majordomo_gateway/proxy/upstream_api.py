"""What the pipeline needs from an upstream client, as a type: the real one (proxy/upstream.py)
and the in-memory one of the pipeline tests both fit it.

    response = await upstream.request(origin, "POST", b"/v1/chat/completions", headers, body)
    async with response:                       # leaving gives the connection back (or closes it)
        response.status, response.raw_headers, response.content_type, response.content_length
        chunk = await response.readany()       # b"" once the body is complete
        body = await response.read()           # or the whole body at once

Errors are proxy/upstream.py's: ``request`` raises UpstreamTimeout, or another UpstreamError when
there is no answer; ``read``/``readany`` raise UpstreamTimeout or UpstreamBroken when the body
stops before its end.
"""

from __future__ import annotations

from typing import Protocol

from majordomo_gateway.proxy.upstream import Origin, Sink

__all__ = ["Upstream", "UpstreamAnswer"]


class UpstreamAnswer(Protocol):
    """One upstream response: the head at once, the body as it arrives."""

    status: int
    raw_headers: list[tuple[bytes, bytes]]
    content_type: bytes
    content_length: int | None
    content_encoding: bytes  # lower-cased

    @property
    def at_eof(self) -> bool:
        """The whole body has arrived and been handed out."""
        ...

    async def readany(self) -> bytes: ...

    async def read(self) -> bytes: ...

    def set_sink(self, sink: Sink | None) -> None:
        """Hand body bytes to ``sink(data, last)`` as they arrive; the sink returns False to
        leave them for readany().  An upstream may never call it: the relay then uses readany."""
        ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    async def __aenter__(self) -> UpstreamAnswer: ...

    async def __aexit__(self, *exc: object) -> None: ...


class Upstream(Protocol):
    async def request(self, origin: Origin, method: str, target: bytes, headers: list[tuple[str, str]],
                      body: bytes) -> UpstreamAnswer:
        """Send one request; return once the response head has arrived."""
        ...

    async def close(self) -> None: ...
