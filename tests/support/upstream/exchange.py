"""HTTP plumbing shared by the provider modules: state, recording, scenario resolution, sending.

A provider handler does::

    ex = Exchange(request, WIRE)            # WIRE: the provider's error format and headers
    if (early := ex.parse_json()) is not None:
        return early                         # the body was not JSON: provider-style 400
    if (early := await ex.resolve(conversation_of(ex.body))) is not None:
        return early                         # X-Mock-Status error, bad mock settings (hang never returns)
    ...render ex.reply / ex.usage in the wire format...
    return await ex.send_json(payload)       # or: await ex.send_stream(events, ...)

``send_json`` / ``send_stream`` apply the delivery scenarios (slow, cut-stream, stream-error,
hang-mid-stream) so the provider modules only describe *what* the wire carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .recording import BODY_KEY, RECORD_KEY, STATE_KEY, MockState, RecordedRequest
from .scenarios import (
    Conversation,
    MockConfigError,
    MockUsage,
    Reply,
    Scenario,
    plan_reply,
    resolve_scenario,
    settings_from_headers,
    settings_from_kwargs,
    thinking_active,
)

HANG_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Wire:
    """How one provider formats what is common to all its routes."""

    name: str
    #: (status, message or None, error type or None) -> JSON body of an error response
    error_body: Callable[[int, str | None, str | None], Any]
    #: request sequence number -> extra response headers (request ids)
    headers: Callable[[int], dict[str, str]]


class Exchange:
    """One request/response, with its resolved scenario and reply plan."""

    def __init__(self, request: web.Request, wire: Wire) -> None:
        self.request = request
        self.wire = wire
        self.state: MockState = request.app[STATE_KEY]
        self.raw: bytes = request.get(BODY_KEY, b"")
        self.record: RecordedRequest | None = request.get(RECORD_KEY)
        self.seq: int = self.record.seq if self.record is not None else 0
        self.body: Any = None
        self.scenario = Scenario()
        self.conversation = Conversation()
        self.reply = Reply()
        self.usage = MockUsage()
        self.thinking = False
        self.created = int(time.time())

    # -- request side
    def parse_json(self) -> web.Response | None:
        try:
            self.body = orjson.loads(self.raw) if self.raw else {}
        except orjson.JSONDecodeError as exc:
            return self.error_response(400, f"Could not parse the JSON body of your request: {exc}")
        if not isinstance(self.body, dict):
            return self.error_response(400, "The request body must be a JSON object.")
        return None

    async def resolve(self, conversation: Conversation) -> web.StreamResponse | None:
        """Resolve the scenario and plan the reply; answer early for errors (``hang`` never returns)."""
        self.conversation = conversation
        try:
            self.scenario = resolve_scenario(
                [
                    settings_from_kwargs(self.state.defaults),
                    *conversation.marker_layers(),
                    settings_from_headers(self.request.headers),
                ]
            )
            self.thinking = thinking_active(self.scenario, conversation)
            self.usage = self.scenario.usage(thinking=self.thinking)
            self.reply = plan_reply(self.scenario, conversation)
        except MockConfigError as exc:
            return self.error_response(400, f"mock: {exc}", headers={"x-mock-config-error": "1"})
        if self.scenario.initial_delay_ms:
            await asyncio.sleep(self.scenario.initial_delay_ms / 1000)
        if self.scenario.has("hang"):
            await asyncio.sleep(HANG_SECONDS)
        if self.scenario.is_error:
            assert self.scenario.status is not None
            return self.error_response(
                self.scenario.status, self.scenario.error_message, self.scenario.error_type
            )
        return None

    def usage_payload(self, render: Callable[[MockUsage], Any]) -> Any:
        """The provider usage object: None for ``no-usage``, X-Mock-Raw-Usage verbatim, else rendered."""
        if self.scenario.has("no-usage"):
            return None
        if self.scenario.raw_usage is not None:
            return self.scenario.raw_usage
        return render(self.usage)

    def model(self, requested: Any, fallback: str) -> str:
        if self.scenario.model:
            return self.scenario.model
        return requested if isinstance(requested, str) and requested else fallback

    def ident(self, prefix: str, suffix: str = "") -> str:
        return f"{prefix}mock{self.seq:06d}{suffix}"

    # -- response side
    def response_headers(self, content_type: str) -> dict[str, str]:
        return {"Content-Type": content_type, **self.wire.headers(self.seq)}

    def error_response(
        self,
        status: int,
        message: str | None = None,
        error_type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        out = self.response_headers("application/json")
        if self.scenario.retry_after is not None:
            out["retry-after"] = self.scenario.retry_after
        should_retry = self.request.headers.get("x-mock-should-retry")
        if should_retry is not None:
            out["x-should-retry"] = should_retry
        out.update(headers or {})
        body = orjson.dumps(self.wire.error_body(status, message, error_type))
        return web.Response(status=status, body=body, headers=out)

    async def send_json(self, payload: Any, content_type: str = "application/json") -> web.StreamResponse:
        body = orjson.dumps(payload)
        headers = self.response_headers(content_type)
        if self.scenario.chunk_delay:
            await asyncio.sleep(self.scenario.chunk_delay)
        if self.scenario.has("cut-stream") or self.scenario.has("hang-mid-stream"):
            # Promise the whole body, deliver half of it, then stall or close the connection.
            resp = web.StreamResponse(status=200, headers=headers)
            resp.content_length = len(body)
            await resp.prepare(self.request)
            await self._write(resp, body[: len(body) // 2])
            if self.scenario.has("hang-mid-stream"):
                self._outcome("stalled")
                await asyncio.sleep(HANG_SECONDS)
            self._outcome("cut")
            await self._close_connection()
            return resp
        return web.Response(status=200, body=body, headers=headers)

    async def send_stream(
        self,
        events: list[bytes],
        *,
        cut_default: int,
        error_tail: list[bytes],
        content_type: str = "text/event-stream; charset=utf-8",
    ) -> web.StreamResponse:
        """Write ``events`` one write each, applying the delivery scenarios.

        ``cut_default``: how many events go out before a cut / in-stream error / stall (overridden by
        X-Mock-Cut-After).  ``error_tail``: what ``stream-error`` writes after them before ending the
        body cleanly.
        """
        scenario = self.scenario
        headers = self.response_headers(content_type)
        headers.setdefault("Cache-Control", "no-cache")
        resp = web.StreamResponse(status=200, headers=headers)
        resp.enable_chunked_encoding()
        await resp.prepare(self.request)

        stop: int | None = None
        for name in ("hang-mid-stream", "cut-stream", "stream-error"):
            if scenario.has(name):
                stop = scenario.cut_after if scenario.cut_after is not None else cut_default
                stop = max(0, min(stop, len(events)))
                break
        delay = scenario.chunk_delay
        for index, event in enumerate(events):
            if stop is not None and index >= stop:
                break
            if index and delay:
                await asyncio.sleep(delay)
            await self._write(resp, event)

        if scenario.has("hang-mid-stream"):
            self._outcome("stalled")
            await asyncio.sleep(HANG_SECONDS)
        elif scenario.has("cut-stream"):
            if delay:
                await asyncio.sleep(delay)
            self._outcome("cut")
            await self._close_connection()
            return resp
        elif scenario.has("stream-error"):
            for event in error_tail:
                if delay:
                    await asyncio.sleep(delay)
                await self._write(resp, event)
        await self._end_stream(resp)
        return resp

    async def _end_stream(self, resp: web.StreamResponse) -> None:
        if self.scenario.end_delay_ms:
            # The last event is out; the body's end (the chunked encoding's last chunk) comes later.
            await asyncio.sleep(self.scenario.end_delay_ms / 1000)
        self._outcome("complete")
        await resp.write_eof()

    async def _write(self, resp: web.StreamResponse, data: bytes) -> None:
        if self.record is not None and self.record.response is not None:  # before the client sees it
            self.record.response.body += data
        await resp.write(data)

    def _outcome(self, outcome: str) -> None:
        if self.record is not None and self.record.response is not None:
            self.record.response.outcome = outcome

    async def _close_connection(self) -> None:
        """Close the TCP connection after what was written so far, leaving the HTTP body unfinished.

        The client gets every byte already written, then EOF: an incomplete chunked body (or fewer
        bytes than Content-Length), never a clean end of stream.
        """
        transport = self.request.transport
        if transport is None:
            return
        for _ in range(200):  # let asyncio hand everything written to the kernel first
            if transport.is_closing() or transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        with contextlib.suppress(Exception):
            transport.close()
        await asyncio.sleep(0)


def sse_event(data: Any, event: str | None = None, *, newline: str = "\n") -> bytes:
    """One server-sent event: optional ``event:`` line, one ``data:`` line, blank line."""
    if isinstance(data, bytes):
        payload = data.decode()
    elif isinstance(data, str):
        payload = data
    else:
        payload = orjson.dumps(data).decode()
    lines = [f"event: {event}"] if event else []
    lines.append(f"data: {payload}")
    return (newline.join(lines) + newline + newline).encode()


def cut_point(content_start: int, content_events: int) -> int:
    """Default number of events sent before a cut: the preamble plus half the content (at least one)."""
    return content_start + max(1, content_events // 2)
