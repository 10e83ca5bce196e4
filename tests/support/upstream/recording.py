"""What reached the mock and what it answered, kept for the tests to assert on.

Every request outside ``/_mock/`` becomes a :class:`RecordedRequest`; its ``response`` is filled in
when the mock starts answering (status and headers, from aiohttp's ``on_response_prepare``) and
grows as body bytes are written, so a cut or stalled stream records exactly what went out.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict


def _json_or_none(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return None


@dataclass(slots=True)
class RecordedResponse:
    """What the mock sent back for one request."""

    status: int
    #: case-insensitive: ``headers["content-type"] == headers["Content-Type"]``
    headers: CIMultiDict[str]
    #: the body bytes actually written (a stream's events, concatenated; for a cut or stalled
    #: response only what went out)
    body: bytes = b""
    #: "complete", "streaming" (still being written), "cut" (connection closed mid-body),
    #: "stalled" (hang-mid-stream)
    outcome: str = "complete"

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "headers": {str(name): value for name, value in self.headers.items()},
            "body": self.text,
            "json": _json_or_none(self.body),
            "outcome": self.outcome,
        }


@dataclass(slots=True)
class RecordedRequest:
    """One request as it reached the mock."""

    seq: int
    method: str
    path: str
    #: the raw query string, e.g. "alt=sse&key=k" ("" when there is none)
    query: str
    #: the query parsed (the last value wins for repeated names)
    query_params: dict[str, str]
    #: header names lower-cased (the last value wins for repeated headers)
    headers: dict[str, str]
    body: bytes
    time: float
    #: None until the mock starts answering (and for ``hang``)
    response: RecordedResponse | None = None
    #: the request target's path exactly as sent (``path`` is percent-decoded)
    raw_path: str = ""

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "method": self.method,
            "path": self.path,
            "raw_path": self.raw_path,
            "query": self.query,
            "query_params": self.query_params,
            "headers": self.headers,
            "body": self.text,
            "json": _json_or_none(self.body),
            "time": self.time,
            "response": None if self.response is None else self.response.to_dict(),
        }


@dataclass
class MockState:
    """Shared between the server's event loop and the test thread."""

    requests: list[RecordedRequest] = field(default_factory=list)
    defaults: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def record(self, request: web.Request, body: bytes) -> RecordedRequest:
        recorded = RecordedRequest(
            seq=next(self._seq),
            method=request.method,
            path=request.path,
            query=request.query_string,
            query_params={k: v for k, v in request.query.items()},
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            time=time.time(),
            raw_path=request.raw_path.partition("?")[0],
        )
        with self.lock:
            self.requests.append(recorded)
        return recorded

    def snapshot(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.requests)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


STATE_KEY = web.AppKey("mock_state", MockState)
BODY_KEY = web.RequestKey("mock_body", bytes)
RECORD_KEY = web.RequestKey("mock_record", RecordedRequest)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    body = await request.read()
    request[BODY_KEY] = body
    if not request.path.startswith("/_mock/"):
        request[RECORD_KEY] = request.app[STATE_KEY].record(request, body)
    return await handler(request)


async def record_response(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: status and headers, before the client can see them."""
    record = request.get(RECORD_KEY)  # type: ignore[call-overload]
    if record is None or record.response is not None:
        return
    if isinstance(response, web.Response):
        body = response.body if isinstance(response.body, bytes) else b""
        record.response = RecordedResponse(response.status, CIMultiDict(response.headers), body, "complete")
    else:
        record.response = RecordedResponse(response.status, CIMultiDict(response.headers), b"", "streaming")
