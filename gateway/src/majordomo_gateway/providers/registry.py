"""The provider instances the gateway knows, by the key routes and configuration refer to them."""

from __future__ import annotations

from majordomo_gateway.providers.anthropic import AnthropicProvider
from majordomo_gateway.providers.base import Provider
from majordomo_gateway.providers.gemini import GeminiProvider
from majordomo_gateway.providers.openai import OpenAIProvider

__all__ = ["PROVIDERS", "gemini_openai", "provider_for_path"]

#: Gemini's OpenAI-compatible endpoint: OpenAI's wire format, recorded as provider "gemini".
gemini_openai = OpenAIProvider(name="gemini")

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "gemini": GeminiProvider(),
    "gemini-openai": gemini_openai,
}

# "gemini-openai" shares its paths with "openai", so it is never picked by path alone.
_BY_PATH: tuple[Provider, ...] = (PROVIDERS["openai"], PROVIDERS["anthropic"], PROVIDERS["gemini"])


def provider_for_path(path: str) -> Provider | None:
    """The provider a request to ``path`` goes to when nothing else (route, header) says."""
    for provider in _BY_PATH:
        if provider.handles_path(path):
            return provider
    return None
