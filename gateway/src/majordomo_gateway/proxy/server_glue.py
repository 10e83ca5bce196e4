"""Everything the gateway relies on that the ASGI spec does not promise, but uvicorn does today.

What this module relies on, exactly (tests/gateway/pipeline/test_server_glue.py runs a real
uvicorn and fails when any of it stops being true):

1. uvicorn's ``send(message)`` for ``http.response.body`` is a coroutine that finishes without
   suspending when the client's transport is not paused (it only awaits ``flow.drain()`` when
   writing is paused).  ``send_now`` steps that coroutine by hand, so that the streaming relay
   can pass bytes on from inside the upstream's read callback, without a task per chunk.  Were
   send() to suspend every time, ``send_now`` would still be correct (it hands the rest to a
   task), only slower.
2. When an ASGI app returns after ``http.response.start`` but without the final body message,
   uvicorn closes the connection and logs, on the logger ``uvicorn.error``, a record whose
   message starts with ``ASGI callable returned without completing response``.  The relay does
   that on purpose when the upstream stream breaks (the client must see a broken stream, not a
   clean end of a truncated one); ``DroppedOnPurpose`` hides that record then, and only then.
3. uvicorn logs that record from the same task that ran the app for that request, after the app
   returned: the ``dropped_on_purpose`` ContextVar the app set is what the filter then sees, and
   no other request's.
4. uvicorn's ``send()`` returns without writing anything once the client's connection is lost,
   and its ``send`` is a bound method of the request's cycle, whose ``disconnected`` attribute
   says so.  ``still_connected`` reads it, so that the relay counts a stream's terminal event as
   sent to the client only when it was written.  With a server that does not have it (or a
   test's own ``send``), a send that returned counts as written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

__all__ = ["INCOMPLETE_RESPONSE_MESSAGE", "SERVER_ERROR_LOGGER", "DroppedOnPurpose", "drop_on_purpose",
           "dropped_on_purpose", "install_log_filter", "send_now", "still_connected"]

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: the logger uvicorn reports app errors on
SERVER_ERROR_LOGGER = "uvicorn.error"
#: how uvicorn's message for a response left without its final body message begins
INCOMPLETE_RESPONSE_MESSAGE = "ASGI callable returned without completing response"

# Set when the relay ends a response without its final message on purpose (the upstream stream
# broke, or the client left): the server then drops the connection, which is the point.
dropped_on_purpose: ContextVar[bool] = ContextVar("majordomo_dropped_on_purpose", default=False)


def drop_on_purpose() -> None:
    """Say that the response about to be left unfinished is meant to be (see point 2 above)."""
    dropped_on_purpose.set(True)


class DroppedOnPurpose(logging.Filter):
    """Drop uvicorn's error line for a response the relay left unfinished on purpose (the row
    records why); the same line for any other response still shows, as it would mean a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (dropped_on_purpose.get() and record.getMessage().startswith(INCOMPLETE_RESPONSE_MESSAGE))


def install_log_filter() -> None:
    """Hide the on-purpose line.  Call after uvicorn's logging set-up (in the app factory)."""
    logging.getLogger(SERVER_ERROR_LOGGER).addFilter(DroppedOnPurpose())


def send_now(send: Send, message: MutableMapping[str, Any]) -> asyncio.Future[None] | None:
    """Run ``send(message)`` to completion right here if it does not wait (it only waits when the
    client's socket is full); else return a task that finishes it, in order, once it can."""
    coro = send(message)
    try:
        waiting = coro.send(None)  # type: ignore[attr-defined]
    except StopIteration:
        return None
    return asyncio.ensure_future(_finish_send(coro, waiting))


async def _finish_send(coro: Any, waiting: Any) -> None:
    # What asyncio's Task does for a coroutine that yielded a future: wait for it, then resume.
    while True:
        try:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting,))
        except asyncio.CancelledError:
            coro.close()
            raise
        try:
            waiting = coro.send(None)
        except StopIteration:
            return


def still_connected(send: Send) -> Callable[[], bool]:
    """A check, for right after ``send()`` returned, that it wrote to the client (point 4 above)."""
    cycle: Any = getattr(send, "__self__", None)
    if isinstance(getattr(cycle, "disconnected", None), bool):
        return lambda: not cycle.disconnected
    return _unknown


def _unknown() -> bool:
    return True
