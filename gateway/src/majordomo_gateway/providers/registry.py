"""Every wire format the gateway speaks, and the providers it knows without configuration.

Adding a provider with a wire format of its own is one module under providers/ (a class that
fulfils providers.base.Provider) plus one line in ``KINDS``; a built-in default upstream for it is
one more line in ``BUILTIN_PROVIDERS``.  docs/architecture.md walks through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from majordomo_gateway.providers.anthropic import AnthropicProvider
from majordomo_gateway.providers.base import Provider
from majordomo_gateway.providers.gemini import GEMINI_OPENAI_BASE_URL, GeminiProvider
from majordomo_gateway.providers.openai import OpenAIProvider

__all__ = ["BUILTIN_PROVIDERS", "CATALOG_IDS", "KINDS", "PROVIDERS", "BuiltinProvider", "build_provider", "builtin",
           "catalog_id"]

#: wire format -> the provider class that speaks it.  A class takes the name rows are recorded
#: under and whether its base URL is an SDK-style API root (see Provider.upstream_path).
KINDS: dict[str, Callable[..., Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


@dataclass(frozen=True, slots=True)
class BuiltinProvider:
    """A provider that works with no configuration (its base URL can still be changed)."""

    #: the key under ``providers:`` in majordomo.yaml
    name: str
    kind: str
    default_base_url: str
    #: the X-Majordomo-Provider value that selects it
    route: str
    #: llm_requests.provider for its rows
    record_as: str
    pricing_provider: str | None = None
    #: chosen by path when no header names a provider (gemini_openai shares OpenAI's paths)
    by_path: bool = True
    api_root: bool = False


BUILTIN_PROVIDERS: tuple[BuiltinProvider, ...] = (
    BuiltinProvider("openai", "openai", OpenAIProvider.default_base_url, "openai", "openai"),
    BuiltinProvider("anthropic", "anthropic", AnthropicProvider.default_base_url, "anthropic", "anthropic"),
    BuiltinProvider("gemini", "gemini", GeminiProvider.default_base_url, "gemini", "gemini"),
    # Gemini's OpenAI-compatible API: OpenAI's wire format, recorded and priced as Gemini.
    BuiltinProvider("gemini_openai", "openai", GEMINI_OPENAI_BASE_URL, "gemini-openai", "gemini",
                    by_path=False, api_root=True),
)
_BUILTIN_BY_NAME = {spec.name: spec for spec in BUILTIN_PROVIDERS}

#: our built-in provider names (llm_requests.provider) -> the genai-prices provider id pricing them
CATALOG_IDS: dict[str, str] = {"openai": OpenAIProvider.pricing_id, "anthropic": AnthropicProvider.pricing_id,
                               "gemini": GeminiProvider.pricing_id}


def builtin(name: str) -> BuiltinProvider | None:
    """The built-in provider configured under ``name`` (``gemini_openai``), or None for one of the
    user's own."""
    return _BUILTIN_BY_NAME.get(name)


def build_provider(name: str, kind: str) -> Provider:
    """The provider object for a configured upstream ``name`` of wire format ``kind``."""
    spec = _BUILTIN_BY_NAME.get(name)
    if spec is not None:
        return KINDS[spec.kind](spec.record_as, api_root=spec.api_root)
    # A configured OpenAI-compatible server is documented by its API root (http://host/v1).
    return KINDS[kind](name, api_root=True)


def catalog_id(pricing_provider: str | None) -> str | None:
    """The genai-prices provider id for a ``pricing_provider`` setting: one of our provider names
    (``gemini`` is ``google`` there) or already a catalog id (``groq``, ``together``...)."""
    if pricing_provider is None:
        return None
    return CATALOG_IDS.get(pricing_provider, pricing_provider)


#: One instance per built-in route, for tests and tools that need a provider without settings.
PROVIDERS: dict[str, Provider] = {spec.route: build_provider(spec.name, spec.kind) for spec in BUILTIN_PROVIDERS}
