"""``instrument()``: tags and the Majordomo key on gateway requests from any httpx/httpx2/aiohttp client.

Two layers, both limited to requests whose URL is the gateway's:

- the HTTP clients' send methods (``httpx`` and ``httpx2`` ``Client.send`` / ``AsyncClient.send``,
  ``aiohttp.ClientSession._request``): every SDK built on them (openai, anthropic, google-genai,
  pydantic-ai, agno, LangChain, openai-agents, LiteLLM) goes through one of these. At this level a
  call's own headers and the client's default headers are one set, so a tag only fills in what is missing;
- the openai and anthropic SDKs' ``BaseClient._build_headers``, which still tells a call's
  ``extra_headers`` from the client's ``default_headers``: there a tag replaces a default header.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final, NamedTuple
from urllib.parse import urlsplit

from ._config import get_gateway_url
from ._tags import apply_tags

__all__ = ["explicit_header_names", "instrument", "is_gateway_url", "tagged_sdk_client", "uninstrument"]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class _Gateway(NamedTuple):
    scheme: str
    host: str
    port: int
    path: str


def _parse_gateway(url: str) -> _Gateway:
    parts = urlsplit(url.strip())
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"instrument() needs gateway URLs like http://localhost:7680, got {url!r}")
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    return _Gateway(parts.scheme, parts.hostname.lower(), port, parts.path.rstrip("/"))


# Replaced whole (never mutated), so the request path reads it without the lock.
_gateways: tuple[_Gateway, ...] = ()
_lock = threading.Lock()
# (owner class, attribute, original function), for uninstrument().
_patched: list[tuple[type[Any], str, Any]] = []


def is_gateway_url(url: Any) -> bool:
    """Whether ``url`` (an ``httpx``/``httpx2``/``yarl`` URL) is under one of the instrumented gateways."""
    gateways = _gateways
    if not gateways:
        return False
    scheme = url.scheme
    host = (url.host or "").lower()
    port = url.port or _DEFAULT_PORTS.get(scheme, 0)
    path = url.path or "/"
    for gateway in gateways:
        if gateway.scheme == scheme and gateway.host == host and gateway.port == port and (
            not gateway.path or path == gateway.path or path.startswith(gateway.path + "/")
        ):
            return True
    return False


def explicit_header_names(custom: object) -> Collection[str]:
    """Lower-cased names of the headers a call passed itself (an SDK ``FinalRequestOptions.headers``)."""
    if isinstance(custom, Mapping):
        return {str(name).lower() for name in custom}
    return ()


def _wrap_build_headers(original: Callable[..., Any], *, always: bool) -> Callable[..., Any]:
    @functools.wraps(original)
    def _build_headers(self: Any, options: Any, *args: Any, **kwargs: Any) -> Any:
        headers = original(self, options, *args, **kwargs)
        if always or is_gateway_url(self.base_url):
            apply_tags(headers, explicit_header_names(getattr(options, "headers", None)))
        return headers

    _build_headers.__majordomo_tags__ = True  # type: ignore[attr-defined]
    return _build_headers


_tagged_classes: dict[type[Any], type[Any]] = {}


def tagged_sdk_client(client: Any) -> Any:
    """Make an openai/anthropic SDK client that talks to the gateway add the tags to each request.

    The client becomes an instance of a subclass whose ``_build_headers`` applies them; its ``copy()`` and
    ``with_options()`` build the same subclass, so the clients pydantic-ai and agno derive keep it.
    """
    cls = type(client)
    if getattr(cls, "_build_headers", None) is None:
        raise RuntimeError(
            f"{cls.__module__}.{cls.__qualname__} has no _build_headers: this SDK version is not "
            "supported by majordomo_frameworks tags; please report it"
        )
    if getattr(cls, "__majordomo_tagged__", False):
        return client
    with _lock:
        tagged = _tagged_classes.get(cls)
        if tagged is None:
            namespace = {
                "__slots__": (),
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__majordomo_tagged__": True,
                "_build_headers": _wrap_build_headers(cls._build_headers, always=True),
            }
            tagged = type(cls.__name__, (cls,), namespace)
            _tagged_classes[cls] = tagged
    client.__class__ = tagged
    return client


def _wrap_sync_send(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if is_gateway_url(request.url):
            apply_tags(request.headers)
        return original(self, request, *args, **kwargs)

    return send


def _wrap_async_send(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        if is_gateway_url(request.url):
            apply_tags(request.headers)
        return await original(self, request, *args, **kwargs)

    return send


def _wrap_aiohttp_request(original: Callable[..., Any]) -> Callable[..., Any]:
    from multidict import CIMultiDict
    from yarl import URL

    @functools.wraps(original)
    async def _request(self: Any, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        url = str_or_url if isinstance(str_or_url, URL) else URL(str(str_or_url))
        base_url = getattr(self, "_base_url", None)
        if base_url is not None and not url.is_absolute():
            url = base_url.join(url)
        if is_gateway_url(url):
            # The session's own headers are merged in later; a tag must not shadow them.
            headers: CIMultiDict[str] = CIMultiDict(getattr(self, "_default_headers", None) or {})
            headers.update(CIMultiDict(kwargs.get("headers") or {}))
            apply_tags(headers)
            kwargs["headers"] = headers
        return await original(self, method, str_or_url, *args, **kwargs)

    return _request


def _targets() -> list[tuple[str, str, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]:
    return [
        ("httpx", "Client", "send", _wrap_sync_send),
        ("httpx", "AsyncClient", "send", _wrap_async_send),
        ("httpx2", "Client", "send", _wrap_sync_send),
        ("httpx2", "AsyncClient", "send", _wrap_async_send),
        ("aiohttp", "ClientSession", "_request", _wrap_aiohttp_request),
        ("openai._base_client", "BaseClient", "_build_headers", lambda f: _wrap_build_headers(f, always=False)),
        ("anthropic._base_client", "BaseClient", "_build_headers", lambda f: _wrap_build_headers(f, always=False)),
    ]


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _patch_all() -> None:
    for module_name, class_name, attribute, wrap in _targets():
        if not _installed(module_name):
            continue
        owner = getattr(importlib.import_module(module_name), class_name, None)
        original = getattr(owner, attribute, None) if owner is not None else None
        if owner is None or original is None:
            continue
        _patched.append((owner, attribute, original))
        setattr(owner, attribute, wrap(original))


def instrument(*gateway_urls: str) -> None:
    """Add the current tags, and ``X-Majordomo-Key`` from ``MAJORDOMO_API_KEY`` when a request has none,
    to every request any httpx, httpx2 or aiohttp client sends to the gateway.

    The gateway is ``MAJORDOMO_GATEWAY_URL`` (default ``http://localhost:7680``), read now, or the URLs
    given here (scheme, host, port and path prefix must match; ``localhost`` and ``127.0.0.1`` differ).
    Requests to any other URL are left untouched: tags and the key never reach a provider called
    directly. Calling it again replaces the gateway URLs and patches nothing twice; safe from any thread.
    It imports those of httpx, httpx2, aiohttp, openai and anthropic that are installed, so clients
    created before or after the call are covered alike.
    """
    global _gateways
    urls = gateway_urls or (get_gateway_url(),)
    gateways = tuple(_parse_gateway(url) for url in urls)
    with _lock:
        if not _patched:
            _patch_all()
        _gateways = gateways


def uninstrument() -> None:
    """Undo :func:`instrument`: restore the patched methods (unless something patched them again since)."""
    global _gateways
    with _lock:
        _gateways = ()
        while _patched:
            owner, attribute, original = _patched.pop()
            current = owner.__dict__.get(attribute)
            if getattr(current, "__wrapped__", None) is original:
                setattr(owner, attribute, original)
