"""In-process pipeline tests: the Gateway ASGI app called directly (no sockets), an in-memory
upstream in place of the HTTP client, and a real SQLite file as the database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import uuid_utils
from majordomo_gateway.app import Gateway
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.config import load_settings
from majordomo_gateway.proxy.upstream import Origin, Sink, UpstreamBroken


@dataclass
class Canned:
    """What the in-memory upstream answers: a head, then the body in these pieces."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    #: raise UpstreamBroken after the chunks instead of ending the body
    broken: bool = False

    @classmethod
    def json(cls, body: bytes, status: int = 200) -> Canned:
        return cls(status, [(b"Content-Type", b"application/json"),
                            (b"Content-Length", str(len(body)).encode())], [body])

    @classmethod
    def sse(cls, events: list[bytes], status: int = 200) -> Canned:
        return cls(status, [(b"Content-Type", b"text/event-stream")], events)


class MemoryResponse:
    """An upstream response fed from a Canned answer; fits proxy/upstream_api.UpstreamAnswer."""

    def __init__(self, canned: Canned) -> None:
        self.status = canned.status
        self.raw_headers = list(canned.headers)
        lowered = {k.lower(): v for k, v in canned.headers}
        self.content_type = lowered.get(b"content-type", b"")
        length = lowered.get(b"content-length")
        self.content_length = int(length) if length is not None else None
        self.content_encoding = lowered.get(b"content-encoding", b"").lower()
        self._chunks = list(canned.chunks)
        self._broken = canned.broken
        self.released = False

    @property
    def at_eof(self) -> bool:
        return not self._chunks and not self._broken

    async def readany(self) -> bytes:
        await asyncio.sleep(0)
        if self._chunks:
            return self._chunks.pop(0)
        if self._broken:
            self._broken = False
            raise UpstreamBroken("connection closed mid-body")
        return b""

    async def read(self) -> bytes:
        parts = []
        while chunk := await self.readany():
            parts.append(chunk)
        return b"".join(parts)

    def set_sink(self, sink: Sink | None) -> None:
        pass  # bytes always go through readany(): the relay's loop path

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    async def __aenter__(self) -> MemoryResponse:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.released = True


@dataclass
class Sent:
    origin: Origin
    method: str
    target: bytes
    headers: list[tuple[str, str]]
    body: bytes


class MemoryUpstream:
    """Answers every request with the next Canned answer (or raises the next exception)."""

    def __init__(self) -> None:
        self.answers: list[Canned | Exception] = []
        self.requests: list[Sent] = []

    async def request(self, origin: Origin, method: str, target: bytes, headers: list[tuple[str, str]],
                      body: bytes) -> MemoryResponse:
        self.requests.append(Sent(origin, method, target, headers, body))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return MemoryResponse(answer)

    async def close(self) -> None:
        pass


@dataclass
class Reply:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    #: the app sent its final body message (False: left unfinished, the connection is dropped)
    complete: bool


Call = Callable[..., Awaitable[Reply]]


async def asgi_call(app: Callable[..., Awaitable[None]], method: str, path: str,
                    headers: list[tuple[bytes, bytes]], body: bytes = b"", query: bytes = b"") -> Reply:
    """One HTTP request through an ASGI app, in-process."""
    scope: MutableMapping[str, Any] = {
        "type": "http", "http_version": "1.1", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": query, "headers": headers, "scheme": "http", "server": ("test", 80),
        "client": ("127.0.0.1", 1234),
    }
    given = False
    done = asyncio.Event()

    async def receive() -> MutableMapping[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    messages: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    await app(scope, receive, send)
    done.set()
    start = messages[0]
    assert start["type"] == "http.response.start"
    bodies = messages[1:]
    complete = bool(bodies) and not bodies[-1].get("more_body", False)
    return Reply(start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in bodies), complete)


@dataclass
class InProcess:
    gateway: Gateway
    upstream: MemoryUpstream
    key: str
    key_id: str
    db_path: Path

    def headers(self, *extra: tuple[bytes, bytes], key: bool = True) -> list[tuple[bytes, bytes]]:
        found = [(b"content-type", b"application/json"), (b"authorization", b"Bearer sk-test")]
        if key:
            found.append((b"x-majordomo-key", self.key.encode()))
        return found + list(extra)

    async def post(self, path: str, body: bytes, *extra: tuple[bytes, bytes], key: bool = True) -> Reply:
        return await asgi_call(self.gateway, "POST", path, self.headers(*extra, key=key), body)

    async def row(self, request_id: bytes, timeout: float = 5.0) -> dict[str, Any]:
        """The row the gateway wrote for a request, once the writer has flushed it."""
        deadline = time.monotonic() + timeout
        while True:
            with sqlite3.connect(self.db_path) as db:
                db.row_factory = sqlite3.Row
                found = db.execute("SELECT * FROM llm_requests WHERE id = ?", (request_id.decode(),)).fetchone()
            if found is not None:
                return dict(found)
            if time.monotonic() > deadline:
                raise AssertionError(f"no row {request_id!r} within {timeout}s")
            await asyncio.sleep(0.02)

    def row_count(self) -> int:
        with sqlite3.connect(self.db_path) as db:
            return int(db.execute("SELECT count(*) FROM llm_requests").fetchone()[0])


@pytest.fixture
def memory_upstream() -> MemoryUpstream:
    return MemoryUpstream()


@pytest.fixture
async def in_process(request: pytest.FixtureRequest, tmp_path: Path,
                     memory_upstream: MemoryUpstream) -> AsyncIterator[InProcess]:
    """Parametrise indirectly with a dict of dotted settings to change them."""
    db_path = tmp_path / "majordomo.db"
    extra: dict[str, Any] = getattr(request, "param", {})
    settings = load_settings(None, environ={}, database_url=f"sqlite:///{db_path}",
                             **{"writer.spool_dir": str(tmp_path / "spool"), "writer.flush_interval": 0.01, **extra})
    gateway = Gateway(settings, upstream=memory_upstream)
    await gateway.startup()
    key = generate_key()
    record = await gateway.database.create_key(str(uuid_utils.uuid7()), "pipeline-tests", None, hash_secret(key),
                                               display_prefix(key), datetime.now(UTC))
    try:
        yield InProcess(gateway, memory_upstream, key, record.id, db_path)
    finally:
        await gateway.shutdown()


@pytest.fixture
def canned() -> type[Canned]:
    return Canned


@pytest.fixture
def call() -> Callable[..., Awaitable[Reply]]:
    return asgi_call
