"""Route pydantic-ai and agno models through a Majordomo Gateway for cost tracking.

``tag(feature=..., user_id=...)`` attaches ``X-Majordomo-*`` metadata to every gateway request made inside a
block or a function; ``instrument()`` makes any httpx/httpx2/aiohttp-based client (openai, anthropic,
google-genai, ...) send those tags and the Majordomo key to the gateway, and nothing to other hosts.

The core has no dependencies; the framework adapters live in :mod:`majordomo_frameworks.pydantic_ai`
(``pip install "majordomo-frameworks[pydantic-ai]"``) and :mod:`majordomo_frameworks.agno`
(``pip install "majordomo-frameworks[agno]"``).
"""

from __future__ import annotations

from ._config import (
    DEFAULT_GATEWAY_URL,
    GATEWAY_URL_ENV,
    MAJORDOMO_API_KEY_ENV,
    PROVIDER_API_KEY_ENV,
    PROVIDER_DEFAULTS,
    PROVIDERS,
    MissingEnvironmentVariableError,
    Provider,
    check_environment,
    get_gateway_url,
    get_majordomo_key,
    get_provider_api_key,
    validate_provider,
)
from ._headers import (
    FEATURE_HEADER,
    GEMINI_OPENAI_ROUTE,
    KEY_HEADER,
    PROVIDER_HEADER,
    SESSION_ID_HEADER,
    STEP_HEADER,
    USER_ID_HEADER,
    build_headers,
    merge_headers,
)
from ._instrument import instrument, uninstrument
from ._tags import Tag, current_tags, tag

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_GATEWAY_URL",
    "FEATURE_HEADER",
    "GATEWAY_URL_ENV",
    "GEMINI_OPENAI_ROUTE",
    "KEY_HEADER",
    "MAJORDOMO_API_KEY_ENV",
    "PROVIDERS",
    "PROVIDER_API_KEY_ENV",
    "PROVIDER_DEFAULTS",
    "PROVIDER_HEADER",
    "SESSION_ID_HEADER",
    "STEP_HEADER",
    "USER_ID_HEADER",
    "MissingEnvironmentVariableError",
    "Provider",
    "Tag",
    "__version__",
    "build_headers",
    "check_environment",
    "current_tags",
    "get_gateway_url",
    "get_majordomo_key",
    "get_provider_api_key",
    "instrument",
    "merge_headers",
    "tag",
    "uninstrument",
    "validate_provider",
]
