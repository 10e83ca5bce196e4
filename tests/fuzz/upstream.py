"""A hostile upstream on a raw asyncio socket: it plays each case's ``upstream`` steps byte for byte.

tests/support/upstream/ speaks each provider's wire format correctly through aiohttp; this one
must be able to lie (framing, status lines, resets), so it writes bytes by hand.  The gateway
forwards the client's ``X-Fuzz-Case`` header; that picks the plan.  A request without a known case
gets a plain, well-formed answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections import Counter, OrderedDict

from tests.fuzz.cases import CASE_HEADER, Step

_CASE = CASE_HEADER.lower().encode()
_DEFAULT = [Step("send", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")]
#: generous: bodies in the cases stay far below it
_READ_LIMIT = 8 * 1024 * 1024
_PLANS_KEPT = 2048


class FuzzUpstream:
    def __init__(self) -> None:
        self.plans: OrderedDict[str, list[Step]] = OrderedDict()
        #: how many times each case reached the upstream
        self.received: Counter[str] = Counter()
        self.unplanned = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def plan(self, case_id: str, steps: list[Step]) -> None:
        """The answer to the case; old plans are forgotten (a request can reach the upstream a
        little after its client is done, so they are not dropped at once)."""
        self.plans[case_id] = steps
        while len(self.plans) > _PLANS_KEPT:
            self.plans.popitem(last=False)

    async def start(self) -> FuzzUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_READ_LIMIT)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        keep = True
        try:
            while keep:
                case_id = await _read_request(reader)
                if case_id is None:
                    break
                steps = self.plans.get(case_id)
                if steps is None:
                    self.unplanned += 1
                    steps = _DEFAULT
                self.received[case_id] += 1
                keep = await _play(steps, writer)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError, OSError):
            pass
        except asyncio.CancelledError:
            keep = False
        finally:
            self._tasks.discard(task)
            if keep:
                writer.close()


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """Read one request; its case id ('' when it names none), or None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise
    case_id = ""
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name == _CASE:
            case_id = value.decode("latin-1")
        elif name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                break
            await reader.readexactly(size + 2)
    elif length:
        await reader.readexactly(length)
    return case_id


async def _play(steps: list[Step], writer: asyncio.StreamWriter) -> bool:
    """Write the answer; False when the connection is gone afterwards (closed or reset)."""
    for step in steps:
        if step.kind == "send":
            writer.write(step.data)
            await writer.drain()
        elif step.kind == "pause":
            await asyncio.sleep(step.seconds)
        elif step.kind == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # linger 0: close() sends RST instead of FIN
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        elif step.kind == "close":
            writer.close()
            return False
    return True
