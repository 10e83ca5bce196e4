"""Which provider a request goes to, and the exact upstream URL.

The upstream host always comes from configuration, never from the request: the client only
contributes a path and a query, and the path is checked before it is appended to the base URL
so that nothing in it (``//host``, ``..`` segments, encoded dots, absolute URLs) can change
where the request goes.

The path is normalised once, as the request arrives (``normalise_path``), and that one path is
what routes the request, what the provider bills by, what goes upstream and what the row
records: a path spelt with percent-encoded letters (``/v1/chat/completion%73``) cannot be
routed by one reading and metered by another.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from majordomo_gateway.config import ProviderSettings
from majordomo_gateway.providers.base import Provider
from majordomo_gateway.providers.registry import KINDS, build_provider, builtin
from majordomo_gateway.proxy.adapter import RouteAdapter
from majordomo_gateway.proxy.translate.anthropic_openai import AnthropicOpenAIAdapter
from majordomo_gateway.proxy.upstream import Origin

SUPPORTED_PATHS = (
    "/v1/chat/completions, /v1/completions, /v1/embeddings, /v1/responses and other /v1/... (OpenAI)",
    "/v1/messages, /v1/messages/count_tokens (Anthropic)",
    "/v1beta/models/{model}:generateContent and :streamGenerateContent (Gemini)",
)
# A dot segment, literal or percent-encoded, anywhere in the path.
_DOT_SEGMENT = re.compile(rb"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)
# Control characters, space and DEL: one C-level scan instead of a Python loop over every byte.
_FORBIDDEN_BYTE = re.compile(rb"[\x00-\x20\x7f]")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
# RFC 3986's unreserved characters: percent-encoding one of them does not change the URI (2.3).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def normalise_path(raw_path: bytes) -> bytes:
    """``raw_path`` with percent-encoded unreserved characters decoded (RFC 3986, 6.2.2.2).

    The result is the same resource to any server (an upstream decodes ``%73`` to ``s`` too), so
    it can go upstream in place of the client's spelling; every other escape (``%3A``, ``%2F``,
    ``%20``, UTF-8) is significant and stays as the client wrote it.
    """
    if b"%" not in raw_path:
        return raw_path
    return _ESCAPE.sub(_unreserved, raw_path)


def _unreserved(match: re.Match[bytes]) -> bytes:
    byte = int(match.group(1), 16)
    return bytes((byte,)) if byte in _UNRESERVED else match.group(0)


class RoutingError(Exception):
    """The request cannot be routed; ``message`` tells the caller what is supported."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # the X-Majordomo-Provider value that selects it (and llm_requests.route)
    provider: Provider
    base_url: str
    # Rewrites the request and transforms the response (proxy/adapter.py); None relays bytes as is.
    adapter: RouteAdapter | None = None
    # Whose error shape the client expects from the gateway: the provider's, unless an adapter
    # makes the route speak another wire format to the client (anthropic-openai speaks OpenAI's).
    client_errors: Provider | None = None
    origin: Origin = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", Origin.from_url(self.base_url))

    def error_body(self, status: int, code: str, message: str, extra: Mapping[str, object]) -> bytes:
        return (self.client_errors or self.provider).error_body(status, code, message, extra)

    def upstream_target(self, raw_path: bytes, query: bytes) -> bytes:
        """Path and query for the upstream, after the origin's base path (see Origin)."""
        raw_path = self.provider.upstream_path(raw_path)
        return raw_path + b"?" + query if query else raw_path

    def upstream_url(self, raw_path: bytes, query: bytes) -> str:
        return self.base_url + self.upstream_target(raw_path, query).decode("latin-1")


def check_path(raw_path: bytes) -> None:
    """Reject any path that could make base_url + path point somewhere else."""
    if not raw_path.startswith(b"/") or raw_path.startswith(b"//"):
        raise RoutingError("invalid_path", "the request path must start with a single '/'")
    if b"\\" in raw_path or _DOT_SEGMENT.search(raw_path) or b"%2f" in raw_path.lower():
        raise RoutingError("invalid_path", "the request path must not contain '.', '..', '\\' or encoded '/'")
    if _FORBIDDEN_BYTE.search(raw_path):
        raise RoutingError("invalid_path", "the request path contains characters that are not allowed")


class Router:
    """The routes of one gateway: the built-in providers, the configured ones, and the
    ``anthropic-openai`` translation route, by the X-Majordomo-Provider value that selects each."""

    def __init__(self, providers: Mapping[str, ProviderSettings]) -> None:
        self.routes: dict[str, Route] = {}
        by_path: list[str] = []
        for name, entry in providers.items():
            spec = builtin(name)
            route_name = spec.route if spec is not None else name
            self.routes[route_name] = Route(route_name, build_provider(name, entry.kind), entry.base_url)
            if spec is not None and spec.by_path:
                by_path.append(route_name)
        if "anthropic" in self.routes:
            # OpenAI Chat Completions translated to Anthropic Messages; only chosen by header.
            anthropic = self.routes["anthropic"]
            self.routes["anthropic-openai"] = Route("anthropic-openai", anthropic.provider, anthropic.base_url,
                                                    adapter=AnthropicOpenAIAdapter(),
                                                    client_errors=KINDS["openai"]("anthropic-openai"))
        # Anthropic's and Gemini's paths are specific; OpenAI's /v1/... is the fallback, so last.
        self._path_order = tuple(name for name in ("anthropic", "gemini", "openai") if name in by_path)
        self._by_path = tuple(self.routes[name] for name in self._path_order)
        self.names = tuple(self.routes)

    def set_adapter(self, name: str, adapter: RouteAdapter | None) -> None:
        """Give the route ``name`` an adapter (or take it away), for path and header routing alike."""
        self.routes[name] = replace(self.routes[name], adapter=adapter)
        self._by_path = tuple(self.routes[name] for name in self._path_order)

    def routes_of_kind(self, kind: str) -> list[str]:
        """The names of the plain (untranslated) routes whose upstream speaks ``kind``."""
        return [name for name, route in self.routes.items()
                if route.provider.kind == kind and name != "anthropic-openai"]

    def error_route(self, path: str, raw_path: bytes, provider_header: str | None) -> Route | None:
        """The route a request would take, for shaping an error that happened before routing
        (a bad key); None when it has none (the error then has the shape every SDK reads)."""
        try:
            return self.resolve(path, raw_path, provider_header)
        except RoutingError:
            return None

    def resolve(self, path: str, raw_path: bytes, provider_header: str | None) -> Route:
        check_path(raw_path)
        if provider_header is not None:
            wanted = provider_header.strip().lower()
            route = self.routes.get(wanted) or self.routes.get(wanted.replace("-", "_"))
            if route is None:
                raise RoutingError(
                    "unknown_provider",
                    f"X-Majordomo-Provider {provider_header!r} is not supported; use one of: "
                    + ", ".join(self.names),
                )
            return route
        for route in self._by_path:
            if route.provider.handles_path(path):
                return route
        # Everything else under /v1/ (models, files, batches...) is OpenAI's surface.
        if path.startswith("/v1/") and "openai" in self.routes:
            return self.routes["openai"]
        raise RoutingError(
            "unknown_route",
            f"no provider serves {path!r}; supported paths: " + "; ".join(SUPPORTED_PATHS)
            + ". Or name the provider with the X-Majordomo-Provider header ("
            + ", ".join(self.names) + ").",
        )
