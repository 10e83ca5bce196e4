"""pydantic-ai models routed through the Majordomo Gateway (pydantic-ai 1.x >= 1.54 and 2.x).

``create_model`` returns an ordinary pydantic-ai model whose SDK client points at the gateway and
sends ``X-Majordomo-Key`` on every request, so runs are authenticated and logged even without
``model_settings``. Per-run metadata comes from ``majordomo_frameworks.tag(...)`` blocks around the run,
or from ``model_settings=...Settings(extra_headers=build_extra_headers(...))``; the SDK merges those headers
over the client's default headers one header at a time, so nothing set on the client is lost.

Precedence, highest first: a run's ``extra_headers``; ``tag(...)``; ``create_model(...)`` metadata; inside an
agent run, ``Step`` = the agent's name and ``Session-Id`` = the run id (``tag(auto=False)`` turns them off).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, overload

try:
    from pydantic_ai.models.anthropic import AnthropicModel, AnthropicModelSettings
    from pydantic_ai.providers.anthropic import AnthropicProvider
    from pydantic_ai.providers.openai import OpenAIProvider
except ImportError as error:  # pragma: no cover - exercised only without the extra installed
    raise ImportError(
        "majordomo_frameworks.pydantic_ai needs pydantic-ai with its OpenAI and Anthropic support: "
        'pip install "majordomo-frameworks[pydantic-ai]"'
    ) from error

if TYPE_CHECKING:
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIChatModelSettings
    from pydantic_ai.profiles import ModelProfile
else:
    try:
        from pydantic_ai.models.openai import OpenAIChatModel, OpenAIChatModelSettings
    except ImportError:  # pragma: no cover - pydantic-ai releases before the Chat/Responses split
        from pydantic_ai.models.openai import OpenAIModel as OpenAIChatModel
        from pydantic_ai.models.openai import OpenAIModelSettings as OpenAIChatModelSettings

from ._config import PROVIDER_DEFAULTS, Provider, get_gateway_url, get_provider_api_key, validate_provider
from ._headers import GEMINI_OPENAI_ROUTE, build_headers
from ._instrument import tagged_sdk_client

__all__ = [
    "AnthropicModelSettings",
    "OpenAIChatModelSettings",
    "build_extra_headers",
    "build_extra_headers_gemini",
    "create_model",
]


def build_extra_headers(
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``X-Majordomo-*`` headers for ``model_settings=...Settings(extra_headers=...)`` (OpenAI, Anthropic)."""
    return build_headers(
        feature=feature, step=step, user_id=user_id, session_id=session_id, extra_headers=extra_headers
    )


def build_extra_headers_gemini(
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Like :func:`build_extra_headers`, plus ``X-Majordomo-Provider: gemini-openai`` for the Gemini route."""
    return build_headers(
        provider_header=GEMINI_OPENAI_ROUTE,
        feature=feature,
        step=step,
        user_id=user_id,
        session_id=session_id,
        extra_headers=extra_headers,
    )


def _set_default_headers(provider: OpenAIProvider | AnthropicProvider, headers: Mapping[str, str]) -> None:
    """Give the provider's SDK client ``headers`` as default headers, keeping pydantic-ai's HTTP client,
    and make it add the current ``tag(...)`` headers to each request (no ``instrument()`` needed).

    ``OpenAIProvider(openai_client=AsyncOpenAI(default_headers=...))`` would also send them, but
    pydantic-ai never replaces a client passed in, so a second ``asyncio.run`` (or ``run_sync``) on
    pydantic-ai 2.x would reuse connections of a closed event loop ("Event loop is closed").
    ``with_options`` copies the SDK client onto the same HTTP client, which the provider keeps managing
    (its ``_set_http_client`` swaps the HTTP client on ``provider._client``).
    """
    client_with_headers = tagged_sdk_client(provider.client.with_options(default_headers=dict(headers)))
    provider._client = client_with_headers  # type: ignore[assignment, unused-ignore]  # needed on some pydantic-ai versions; pyright: ignore[reportPrivateUsage]
    if provider.client is not client_with_headers:  # pragma: no cover - guards a future pydantic-ai layout
        raise RuntimeError(
            f"This pydantic-ai version's {type(provider).__name__} keeps its client elsewhere, so "
            "majordomo_frameworks cannot add the X-Majordomo-Key default header; please report it."
        )


def _gemini_profile(model_name: str) -> ModelProfile | None:
    """Gemini's profile with the Chat Completions schema rules, as pydantic-ai's LiteLLM provider builds it
    for ``google/`` models behind an OpenAI-compatible proxy.

    ``OpenAIProvider`` alone would pick an OpenAI profile: strict tool schemas and other OpenAI-only features.
    """
    from pydantic_ai.profiles.google import google_model_profile
    from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer, OpenAIModelProfile

    chat_completions = OpenAIModelProfile(json_schema_transformer=OpenAIJsonSchemaTransformer)
    gemini = google_model_profile(model_name)
    if isinstance(chat_completions, dict):  # pydantic-ai 2.x: profiles are TypedDicts
        from pydantic_ai.profiles import merge_profile

        return merge_profile(chat_completions, gemini)
    return chat_completions.update(gemini)  # pydantic-ai 1.x: profiles are dataclasses


@overload
def create_model(
    provider: Literal["anthropic"],
    model_name: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> AnthropicModel: ...


@overload
def create_model(
    provider: Literal["openai", "gemini"],
    model_name: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> OpenAIChatModel: ...


@overload
def create_model(
    provider: Provider,
    model_name: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> AnthropicModel | OpenAIChatModel: ...


def create_model(
    provider: Provider,
    model_name: str | None = None,
    *,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> AnthropicModel | OpenAIChatModel:
    """A pydantic-ai model for ``provider`` that sends its requests through the Majordomo Gateway.

    - ``"anthropic"``: ``AnthropicModel``, base URL ``<gateway>`` (the SDK adds ``/v1/messages``).
    - ``"openai"``: ``OpenAIChatModel``, base URL ``<gateway>/v1`` (``/v1/chat/completions``).
    - ``"gemini"``: ``OpenAIChatModel``, base URL ``<gateway>/v1`` with
      ``X-Majordomo-Provider: gemini-openai``, authenticated upstream with ``GEMINI_API_KEY``.

    Every request carries ``X-Majordomo-Key`` (and, for Gemini, ``X-Majordomo-Provider``) as client
    default headers. ``feature``/``step``/``user_id``/``session_id``/``extra_headers`` given here become
    default headers too; ``extra_headers`` in a run's model settings override them one header at a time.

    Raises ``ValueError`` for an unknown provider, and ``MissingEnvironmentVariableError`` (a
    ``ValueError``) naming ``MAJORDOMO_API_KEY`` or the provider's key variable when it is unset.
    """
    provider = validate_provider(provider)
    name = model_name or PROVIDER_DEFAULTS[provider]
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
        anthropic_provider = AnthropicProvider(api_key=api_key, base_url=gateway_url)
        _set_default_headers(anthropic_provider, default_headers)
        return AnthropicModel(name, provider=anthropic_provider)

    openai_provider = OpenAIProvider(base_url=f"{gateway_url}/v1", api_key=api_key)
    _set_default_headers(openai_provider, default_headers)
    if provider == "gemini":
        return OpenAIChatModel(name, provider=openai_provider, profile=_gemini_profile(name))
    return OpenAIChatModel(name, provider=openai_provider)
