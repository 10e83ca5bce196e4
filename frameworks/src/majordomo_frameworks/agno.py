"""agno models routed through the Majordomo Gateway.

agno has no per-run header settings for every model class, so the metadata given to ``create_model`` is
fixed when the model is created and sent as the SDK client's default headers on every request. Per-run
metadata comes from ``majordomo_frameworks.tag(...)`` blocks around ``agent.run``/``agent.arun``: the
models ``create_model`` returns add the current tags to each request (a tag replaces the same header given
to ``create_model``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

try:
    from agno.models.anthropic import Claude
    from agno.models.openai import OpenAIChat, OpenAILike
except ImportError as error:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "majordomo_frameworks.agno needs agno with the openai and anthropic SDKs: "
        'pip install "majordomo-frameworks[agno]"'
    ) from error

from ._config import PROVIDER_DEFAULTS, Provider, get_gateway_url, get_provider_api_key, validate_provider
from ._headers import GEMINI_OPENAI_ROUTE, build_headers
from ._instrument import tagged_sdk_client

__all__ = ["create_model"]


# agno builds its SDK clients lazily (and again once one is closed); each one it builds is made to apply
# the tags. The subclasses keep their parents' names: agno shows a model's class name as its provider.
class _TaggedOpenAIChat(OpenAIChat):
    def get_client(self) -> Any:
        return tagged_sdk_client(super().get_client())

    def get_async_client(self) -> Any:
        return tagged_sdk_client(super().get_async_client())


class _TaggedOpenAILike(OpenAILike):
    def get_client(self) -> Any:
        return tagged_sdk_client(super().get_client())

    def get_async_client(self) -> Any:
        return tagged_sdk_client(super().get_async_client())


class _TaggedClaude(Claude):
    def get_client(self) -> Any:
        return tagged_sdk_client(super().get_client())

    def get_async_client(self) -> Any:
        return tagged_sdk_client(super().get_async_client())


for _tagged, _parent in ((_TaggedOpenAIChat, OpenAIChat), (_TaggedOpenAILike, OpenAILike), (_TaggedClaude, Claude)):
    _tagged.__name__ = _tagged.__qualname__ = _parent.__name__


@overload
def create_model(
    provider: Literal["anthropic"],
    model_id: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Claude: ...


@overload
def create_model(
    provider: Literal["openai", "gemini"],
    model_id: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> OpenAIChat: ...


@overload
def create_model(
    provider: Provider,
    model_id: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Claude | OpenAIChat: ...


def create_model(
    provider: Provider,
    model_id: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> Claude | OpenAIChat:
    """An agno model for ``provider`` that sends its requests through the Majordomo Gateway.

    - ``"openai"``: ``OpenAIChat`` with ``base_url=<gateway>/v1`` (``/v1/chat/completions``).
    - ``"gemini"``: ``OpenAILike`` (an ``OpenAIChat`` that keeps the ``system`` role, which Gemini's
      OpenAI-compatible API expects) with ``base_url=<gateway>/v1``, ``X-Majordomo-Provider: gemini-openai``
      and ``GEMINI_API_KEY``.
    - ``"anthropic"``: ``Claude``; agno's ``Claude`` has no ``base_url`` field, so the gateway URL goes in
      ``client_params={"base_url": <gateway>}``, which agno passes to the Anthropic SDK client (the SDK adds
      ``/v1/messages``, the gateway's native Anthropic route).

    ``X-Majordomo-Key`` and the given metadata are sent as default headers on every request, and the
    current ``tag(...)`` headers are added to each request (replacing a default header of the same name). Raises
    ``ValueError`` for an unknown provider and ``MissingEnvironmentVariableError`` (a ``ValueError``)
    naming ``MAJORDOMO_API_KEY`` or the provider's key variable when it is unset.
    """
    provider = validate_provider(provider)
    model = model_id or PROVIDER_DEFAULTS[provider]
    gateway_url = get_gateway_url()
    default_headers = build_headers(
        provider_header=GEMINI_OPENAI_ROUTE if provider == "gemini" else None,
        feature=feature,
        step=step,
        user_id=user_id,
        session_id=session_id,
        extra_headers=extra_headers,
    )
    api_key = get_provider_api_key(provider)

    if provider == "anthropic":
        return _TaggedClaude(
            id=model,
            api_key=api_key,
            default_headers=default_headers,
            client_params={"base_url": gateway_url},
        )
    if provider == "gemini":
        return _TaggedOpenAILike(
            id=model,
            name="Gemini",
            api_key=api_key,
            base_url=f"{gateway_url}/v1",
            default_headers=default_headers,
        )
    return _TaggedOpenAIChat(
        id=model,
        api_key=api_key,
        base_url=f"{gateway_url}/v1",
        default_headers=default_headers,
    )
