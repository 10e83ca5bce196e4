"""The contract every provider module fulfils.

The proxy knows nothing about OpenAI, Anthropic or Gemini; it asks the provider object for:
where to send the request, which credential identifies the caller upstream, what the request
asked for (model, streaming), and — while the response bytes go by untouched — what usage it
reported.  Adding a provider means adding one module that implements this and registering it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from majordomo_gateway.usage import Usage


@dataclass(slots=True)
class RequestInfo:
    """What the gateway learnt from the client's request body (parsed once)."""

    model: str | None = None
    stream: bool = False
    # OpenAI-style streams: the request's ``stream_options.include_usage``; None when the body has
    # no ``stream_options`` at all (the gateway may then ask for usage itself).
    include_usage: bool | None = field(default=None, compare=False)


@dataclass(slots=True)
class UsageResult:
    """What a response told us.  ``usage`` is None when the response carried no usage at all."""

    usage: Usage | None = None
    model: str | None = None
    # An error the upstream reported inside a 200 stream (Anthropic `event: error`,
    # OpenAI `data: {"error": ...}`), as a short human-readable message.
    error: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    #: Set instead of ``usage`` when the response reported usage that is not usage (a negative,
    #: fractional, huge or non-numeric count): what was wrong, with the raw values.
    invalid_usage: str | None = None
    #: the provider's id for the answer and why it ended (traces' gen_ai.response.id and
    #: gen_ai.response.finish_reasons), when the response says
    response_id: str | None = None
    finish_reasons: list[str] = field(default_factory=list)


class StreamUsageParser(Protocol):
    """Watches a streamed response body go by and extracts usage from it.

    ``feed`` is called with each chunk exactly as received from the upstream (chunk boundaries
    are arbitrary: an event may be split across chunks or several may share one).  It must be
    cheap: the relay calls it on the hot path for every chunk.  Do the expensive JSON parsing only
    for the few events that carry usage, ideally once, in ``finish``.

    ``ended`` turns True once ``feed`` has been given the stream's terminal event: the event after
    which the format sends nothing more (OpenAI's ``data: [DONE]``, the Responses API's
    ``response.completed``/``.failed``/``.incomplete``, Anthropic's ``message_stop``, Gemini's
    chunk with ``finishReason``, or an in-stream error, which ends a stream too).  The relay uses
    it to tell a client that left before the end of the answer (``aborted``) from one that closed
    the connection as soon as it had the terminal event, as many SDKs do.
    """

    ended: bool

    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> UsageResult: ...


class Provider(Protocol):
    """One upstream API family.  Instances are stateless and shared by all requests.

    Everything the gateway knows about a wire format is behind this interface, so a provider
    module is the only place to look (and to change) for it: routes, how the client's path joins
    the configured base URL, where the caller's key sits, which endpoints bill, how usage is read
    from bodies and streams, and which catalog provider prices it (``pricing_id``).
    """

    #: the wire format: a key of providers.registry.KINDS
    kind: ClassVar[str]
    #: where the built-in provider of this kind sends requests when no base URL is configured
    default_base_url: ClassVar[str]
    #: the genai-prices provider id that prices this kind's built-in provider
    pricing_id: ClassVar[str]
    #: the name stored in ``llm_requests.provider`` ("openai", "anthropic", "gemini", "local")
    name: str

    def handles_path(self, path: str) -> bool:
        """True when a request to this (normalised) path belongs to this provider by default."""
        ...

    def upstream_path(self, raw_path: bytes) -> bytes:
        """The path to append to the base URL's path for a client's ``raw_path``."""
        ...

    def credential(self, headers: Mapping[str, str], query: Mapping[str, str]) -> str | None:
        """The provider API key the client sent (headers are lower-cased), or None."""
        ...

    def with_credential(self, headers: Sequence[tuple[str, str]], query: bytes,
                        secret: str) -> tuple[list[tuple[str, str]], bytes]:
        """The client's headers and query with ``secret`` wherever ``credential`` looks for the
        caller's key: how a proxy key (``mdm_pk_...``) is replaced by the stored provider key."""
        ...

    def bills(self, path: str) -> bool:
        """True when the answer to ``path`` reports tokens this request is billed for (usage is
        counted); False for endpoints that count or retrieve (usage, if any, is ignored)."""
        ...

    def always_reports_usage(self, path: str) -> bool:
        """True when every successful answer to ``path`` carries usage, so one without it is
        recorded as usage_source "missing" rather than "none"."""
        ...

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
        """A response body for an error the gateway itself answers (bad key, budget, upstream down),
        in the shape this wire format's SDKs parse, so that they raise their usual exception with
        ``message``.  ``code`` is Majordomo's machine-readable code (``missing_majordomo_key``);
        ``extra`` holds further fields for the error object (``provider``)."""
        ...

    def request_info(self, path: str, body: bytes) -> RequestInfo:
        """Model and streaming flag from the request path and body.  Must not raise on bad JSON."""
        ...

    def parse_response(self, path: str, body: bytes) -> UsageResult:
        """Usage from a complete (non-streamed) response body.  Must not raise on bad JSON."""
        ...

    def stream_parser(self, path: str, request: RequestInfo) -> StreamUsageParser:
        """A fresh parser for one streamed response."""
        ...


def swap_headers(headers: Sequence[tuple[str, str]], values: Mapping[str, str]) -> list[tuple[str, str]]:
    """``headers`` with the value of each one named in ``values`` (by lower-case name) replaced."""
    return [(name, values.get(name.lower(), value)) for name, value in headers]
