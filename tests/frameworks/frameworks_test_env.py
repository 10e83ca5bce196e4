"""Values the framework tests put in the environment (never real keys)."""

from __future__ import annotations

from typing import Final

MAJORDOMO_KEY: Final = "mdm_sk_test_0123456789"
PROVIDER_KEYS: Final = {
    "OPENAI_API_KEY": "sk-openai-test",
    "ANTHROPIC_API_KEY": "sk-ant-test",
    "GEMINI_API_KEY": "gemini-test-key",
}

CLEARED_ENV: Final = (
    "MAJORDOMO_GATEWAY_URL",
    "MAJORDOMO_API_KEY",
    *PROVIDER_KEYS,
    "OPENAI_BASE_URL",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "API_KEY",
)
"""Variables that change where the SDKs send requests or which key they send; none may leak in from the
developer's shell."""
