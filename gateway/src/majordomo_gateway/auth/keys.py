"""Key material.  A key is shown once; only its SHA-256 is ever stored or compared."""

from __future__ import annotations

import base64
import hashlib
import secrets

from majordomo_gateway.storage.records import KeyRecord

__all__ = ["KEY_PREFIX", "KeyRecord", "display_prefix", "generate_key", "hash_secret"]

KEY_PREFIX = "mdm_sk_"


def generate_key() -> str:
    """``mdm_sk_`` + 32 random bytes, base64url without padding (43 characters)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest; used for Majordomo keys and for provider credentials alike."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """Enough of the key to recognise it in a list, far too little to guess the rest."""
    return key[: len(KEY_PREFIX) + 4]
