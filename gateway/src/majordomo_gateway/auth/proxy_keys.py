"""Proxy key material: ``mdm_pk_`` keys, shown once, stored as SHA-256 like Majordomo keys."""

from __future__ import annotations

import base64
import secrets

PROXY_KEY_PREFIX = "mdm_pk_"


def generate_proxy_key() -> str:
    return PROXY_KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def proxy_key_context(proxy_key_id: str, provider: str) -> str:
    """What a stored provider key is bound to: decrypting it for another proxy key or provider fails."""
    return f"majordomo proxy key {proxy_key_id} provider {provider}"
