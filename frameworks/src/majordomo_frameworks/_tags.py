"""``tag(...)``: ``X-Majordomo-*`` metadata for every gateway request made inside a block of code.

The tags live in a :class:`contextvars.ContextVar`, so they follow the code that runs: nested blocks
merge (the inner value wins), each asyncio task keeps the tags of the context it was created in, and a
thread sees them when started with a copied context (``contextvars.copy_context().run``,
``asyncio.to_thread``, ``loop.run_in_executor`` with a context). A plain ``threading.Thread`` starts with
an empty context and sees no tags.

The headers are added at the last moment, by :func:`apply_tags`, which the SDK clients of
``create_model(...)`` and :func:`majordomo_frameworks.instrument` call for each request.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable, Collection, Coroutine, Iterator, MutableMapping
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast

from ._config import MAJORDOMO_API_KEY_ENV
from ._headers import FEATURE_HEADER, KEY_HEADER, SESSION_ID_HEADER, STEP_HEADER, USER_ID_HEADER

__all__ = ["Tag", "apply_tags", "current_tags", "tag"]

P = ParamSpec("P")
R = TypeVar("R")

_PREFIX: Final = "X-Majordomo-"
_EXTRA_NAME = re.compile(r"^[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*$")
# The gateway reads these as routing and authentication, never as metadata (gateway proxy/headers.py).
_NOT_METADATA: Final = frozenset({"Key", "Provider", "Provider-Alias"})

TagValue = str | int | None


@dataclass(frozen=True, slots=True)
class _State:
    """The tags in force: one node per open ``tag`` block, pointing at the block around it."""

    headers: tuple[tuple[str, str], ...]
    auto: bool
    parent: _State | None
    owner: Tag


_STATE: ContextVar[_State | None] = ContextVar("majordomo_frameworks.tags", default=None)


def _header_name(keyword: str) -> str:
    """``team`` -> ``X-Majordomo-Team``, ``request_kind`` -> ``X-Majordomo-Request-Kind``."""
    if not _EXTRA_NAME.match(keyword):
        raise ValueError(
            f"tag() keyword {keyword!r} cannot become a header name: use letters and digits, words "
            "joined by single underscores (request_kind -> X-Majordomo-Request-Kind)"
        )
    suffix = "-".join(part[:1].upper() + part[1:].lower() for part in keyword.split("_"))
    if suffix in _NOT_METADATA:
        raise ValueError(
            f"tag({keyword}=...) would set X-Majordomo-{suffix}, which the gateway reads as "
            "authentication or routing, not metadata: set MAJORDOMO_API_KEY or pass the header on the "
            "client or the call instead"
        )
    return _PREFIX + suffix


def _header_value(name: str, value: str | int) -> str:
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError(f"tag value for {name} must not contain line breaks, got {text!r}")
    if not text.isascii():
        # httpx refuses non-ASCII header values only when the request is sent, far from the tag.
        raise ValueError(
            f"tag value for {name} must be ASCII (HTTP clients reject other characters in headers), "
            f"got {text!r}; encode it first, for example with urllib.parse.quote()"
        )
    return text


class Tag:
    """What :func:`tag` returns: a context manager (``with`` / ``async with``) and a decorator."""

    __slots__ = ("_auto", "_headers")

    def __init__(self, headers: dict[str, str], auto: bool | None) -> None:
        self._headers = headers
        self._auto = auto

    @property
    def headers(self) -> dict[str, str]:
        """The headers this tag sets itself (without those of enclosing tags)."""
        return dict(self._headers)

    def __repr__(self) -> str:
        auto = "" if self._auto is None else f", auto={self._auto}"
        return f"tag({self._headers!r}{auto})"

    def __enter__(self) -> Tag:
        outer = _STATE.get()
        merged = dict(outer.headers) if outer is not None else {}
        merged.update(self._headers)
        auto = self._auto if self._auto is not None else (outer.auto if outer is not None else True)
        _STATE.set(_State(tuple(merged.items()), auto, outer, self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Each context holds its own chain of blocks, so one Tag object can be open in several tasks
        # at once; a Token-based reset would fail when entered and left in different contexts.
        state = _STATE.get()
        if state is None or state.owner is not self:
            raise RuntimeError(
                f"{self!r} was left in a different context than it was entered in, or out of order: "
                "enter and leave a tag in the same task (an async generator that yields inside "
                "`with tag(...)` does this)"
            )
        _STATE.set(state.parent)

    async def __aenter__(self) -> Tag:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # A generator runs in its caller's context: tags set around one step would stay set in
            # the caller between steps.
            raise TypeError(
                f"tag() cannot decorate the generator function {func.__qualname__}: wrap the code that "
                "makes the requests in `with tag(...)` instead, without yielding inside it"
            )
        if inspect.iscoroutinefunction(func):
            async_func = cast(Callable[..., Awaitable[Any]], func)

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self:
                    return await async_func(*args, **kwargs)

            return cast(Callable[P, R], run_async)

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with self:
                result = func(*args, **kwargs)
            if inspect.iscoroutine(result):
                # An async callable that isn't an ``async def`` (a partial, an object with an async
                # __call__): its body runs when awaited, after this block has ended.
                return cast(R, self._run_tagged(result))
            return result

        return run

    async def _run_tagged(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        with self:
            return await coroutine


def tag(
    feature: TagValue = None,
    step: TagValue = None,
    user_id: TagValue = None,
    session_id: TagValue = None,
    *,
    auto: bool | None = None,
    **extra: TagValue,
) -> Tag:
    """Attach ``X-Majordomo-*`` metadata to every gateway request made inside a block or a function.

    ``feature``, ``step``, ``user_id`` and ``session_id`` become ``X-Majordomo-Feature``, ``-Step``,
    ``-User-Id`` and ``-Session-Id``; any other keyword becomes ``X-Majordomo-<Name>`` with each
    underscore-separated word capitalised (``team`` -> ``Team``, ``request_kind`` -> ``Request-Kind``).
    ``None`` leaves a header to the enclosing tag. ``auto=False`` turns off the pydantic-ai defaults
    (``Step`` = the agent's name, ``Session-Id`` = the run id) inside the block.

    Use it as ``with tag(...):``, ``async with tag(...):``, ``@tag(...)`` on a function or ``@tag(...)`` on
    an ``async def``. Headers passed on a call win over tags; tags win over a client's or model's
    default headers.
    """
    named = {
        FEATURE_HEADER: feature,
        STEP_HEADER: step,
        USER_ID_HEADER: user_id,
        SESSION_ID_HEADER: session_id,
        **{_header_name(keyword): value for keyword, value in extra.items()},
    }
    headers = {name: _header_value(name, value) for name, value in named.items() if value is not None}
    return Tag(headers, auto)


def current_tags() -> dict[str, str]:
    """The ``X-Majordomo-*`` headers the tags in force add (the pydantic-ai defaults aside), for clients
    that neither ``create_model`` nor ``instrument()`` covers: pass them as that client's headers."""
    state = _STATE.get()
    return dict(state.headers) if state is not None else {}


def _run_context_getter() -> Callable[[], Any] | None:
    # Only when pydantic-ai is already loaded: the core must not import a framework.
    module = sys.modules.get("pydantic_ai._run_context")
    return getattr(module, "get_current_run_context", None) if module is not None else None


def _auto_headers() -> Iterator[tuple[str, str]]:
    """``Step`` and ``Session-Id`` from the pydantic-ai agent run this request belongs to, if any."""
    getter = _run_context_getter()
    if getter is None:
        return
    run_context = getter()
    if run_context is None:
        return
    agent = getattr(run_context, "agent", None)
    name = getattr(agent, "name", None)
    if isinstance(name, str) and name and name.isascii():
        yield STEP_HEADER, name
    run_id = getattr(run_context, "run_id", None)
    if isinstance(run_id, str) and run_id:
        yield SESSION_ID_HEADER, run_id


def apply_tags(headers: MutableMapping[str, str], explicit: Collection[str] | None = None) -> None:
    """Add the tags in force, the pydantic-ai defaults and the key to one gateway request's ``headers``.

    ``headers`` must match names case-insensitively (``httpx.Headers``, ``multidict.CIMultiDict``).
    ``explicit`` holds the lower-cased names the call itself set, when the caller can tell them from the
    client's default headers: a tag then replaces a default header but not an explicit one. Without it,
    a tag only fills in a header that is missing. The pydantic-ai defaults and ``X-Majordomo-Key`` (from
    ``MAJORDOMO_API_KEY``) only ever fill in missing headers.
    """
    state = _STATE.get()
    if state is not None:
        for name, value in state.headers:
            if explicit is None:
                if name not in headers:
                    headers[name] = value
            elif name.lower() not in explicit:
                headers[name] = value
    if state is None or state.auto:
        for name, value in _auto_headers():
            if name not in headers:
                headers[name] = value
    if KEY_HEADER not in headers:
        key = os.environ.get(MAJORDOMO_API_KEY_ENV, "").strip()
        if key:
            headers[KEY_HEADER] = key
