"""Environment configuration: which gateway to call and which keys to send."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, Literal, get_args

Provider = Literal["openai", "anthropic", "gemini"]
"""The LLM providers the gateway fronts."""

PROVIDERS: Final[tuple[Provider, ...]] = get_args(Provider)

PROVIDER_DEFAULTS: Final[Mapping[Provider, str]] = {
    "openai": "gpt-4o",
    "anthropic": "claude-sonnet-4-20250514",
    "gemini": "gemini-2.0-flash",
}
"""The model used when ``create_model`` is called without a model name."""

PROVIDER_API_KEY_ENV: Final[Mapping[Provider, str]] = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
}
"""The environment variable holding each provider's own API key (forwarded upstream by the gateway)."""

GATEWAY_URL_ENV: Final = "MAJORDOMO_GATEWAY_URL"
MAJORDOMO_API_KEY_ENV: Final = "MAJORDOMO_API_KEY"
DEFAULT_GATEWAY_URL: Final = "http://localhost:7680"


class MissingEnvironmentVariableError(ValueError):
    """A required environment variable is unset or empty. ``variable`` names it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(message)
        self.variable = variable


def validate_provider(provider: str) -> Provider:
    """Return ``provider`` if it is one of :data:`PROVIDERS`, else raise a ``ValueError`` listing them."""
    for known in PROVIDERS:
        if provider == known:
            return known
    valid = ", ".join(repr(name) for name in PROVIDERS)
    raise ValueError(f"Unknown provider {provider!r}. Valid providers: {valid}")


def _env(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def get_gateway_url() -> str:
    """The gateway's root URL from ``MAJORDOMO_GATEWAY_URL`` (default ``http://localhost:7680``).

    Trailing slashes are removed, so ``f"{get_gateway_url()}/v1"`` is always well formed.
    """
    url = (_env(GATEWAY_URL_ENV) or DEFAULT_GATEWAY_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(
            f"{GATEWAY_URL_ENV} must start with http:// or https://, got {url!r} "
            f"(for example: export {GATEWAY_URL_ENV}={DEFAULT_GATEWAY_URL})"
        )
    if url.endswith("/v1"):
        raise ValueError(
            f"{GATEWAY_URL_ENV} must be the gateway's root URL without /v1, got {url!r}: "
            f"the SDKs add /v1 themselves (for example: export {GATEWAY_URL_ENV}={url.removesuffix('/v1')})"
        )
    return url


def get_majordomo_key() -> str:
    """The caller's Majordomo API key (``mdm_sk_...``) from ``MAJORDOMO_API_KEY``."""
    key = _env(MAJORDOMO_API_KEY_ENV)
    if key is None:
        raise MissingEnvironmentVariableError(
            MAJORDOMO_API_KEY_ENV, f"{MAJORDOMO_API_KEY_ENV} environment variable is required"
        )
    return key


def get_provider_api_key(provider: Provider) -> str:
    """The provider's own API key from its environment variable (see :data:`PROVIDER_API_KEY_ENV`)."""
    variable = PROVIDER_API_KEY_ENV[validate_provider(provider)]
    key = _env(variable)
    if key is None:
        raise MissingEnvironmentVariableError(
            variable,
            f"{variable} environment variable is required for the {provider!r} provider "
            f"(the gateway forwards it upstream): export {variable}=...",
        )
    return key


def check_environment(provider: Provider) -> list[str]:
    """Names of the environment variables ``provider`` needs that are unset or empty; ``[]`` when ready.

    ``MAJORDOMO_GATEWAY_URL`` is optional and never listed.
    """
    required = (MAJORDOMO_API_KEY_ENV, PROVIDER_API_KEY_ENV[validate_provider(provider)])
    return [name for name in required if _env(name) is None]
