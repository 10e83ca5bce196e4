"""The ``X-Majordomo-*`` request headers the gateway authenticates and logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from ._config import get_majordomo_key

KEY_HEADER: Final = "X-Majordomo-Key"
FEATURE_HEADER: Final = "X-Majordomo-Feature"
STEP_HEADER: Final = "X-Majordomo-Step"
USER_ID_HEADER: Final = "X-Majordomo-User-Id"
SESSION_ID_HEADER: Final = "X-Majordomo-Session-Id"
PROVIDER_HEADER: Final = "X-Majordomo-Provider"

GEMINI_OPENAI_ROUTE: Final = "gemini-openai"
"""``X-Majordomo-Provider`` value that sends an OpenAI-format request to Gemini's OpenAI-compatible API."""


def _check_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"Header {name} must not contain line breaks, got {value!r}")
    return value


def merge_headers(*layers: Mapping[str, str] | None) -> dict[str, str]:
    """Merge header mappings; a later layer replaces a header of the same name in any letter case."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in (layer or {}).items():
            merged[name.lower()] = (name, _check_value(name, value))
    return dict(merged.values())


def build_headers(
    *,
    provider_header: str | None = None,
    feature: str | None = None,
    step: str | None = None,
    user_id: str | int | None = None,
    session_id: str | int | None = None,
    extra_headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers for one gateway request: ``X-Majordomo-Key`` plus the metadata that was given.

    ``None`` (or empty) values are left out. ``extra_headers`` are merged last and replace headers of
    the same name. Raises ``ValueError("MAJORDOMO_API_KEY environment variable is required")`` when the
    key is unset.
    """
    metadata: dict[str, str] = {KEY_HEADER: get_majordomo_key()}
    optional: tuple[tuple[str, str | int | None], ...] = (
        (PROVIDER_HEADER, provider_header),
        (FEATURE_HEADER, feature),
        (STEP_HEADER, step),
        (USER_ID_HEADER, user_id),
        (SESSION_ID_HEADER, session_id),
    )
    for name, value in optional:
        if value is not None and str(value) != "":
            metadata[name] = str(value)
    return merge_headers(metadata, extra_headers)
