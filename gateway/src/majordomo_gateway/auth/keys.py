"""Key material.  A key is shown once; only its SHA-256 is ever stored or compared."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

KEY_PREFIX = "mdm_sk_"


@dataclass(slots=True, frozen=True)
class KeyRecord:
    """An API key as stored: never the key itself."""

    id: str
    name: str
    description: str | None
    key_prefix: str
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    request_count: int

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "key_prefix": self.key_prefix,
            "active": self.active,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "revoked_at": _iso(self.revoked_at),
            "last_used_at": _iso(self.last_used_at),
            "request_count": self.request_count,
        }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def generate_key() -> str:
    """``mdm_sk_`` + 32 random bytes, base64url without padding (43 characters)."""
    return KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest; used for Majordomo keys and for provider credentials alike."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def display_prefix(key: str) -> str:
    """Enough of the key to recognise it in a list, far too little to guess the rest."""
    return key[: len(KEY_PREFIX) + 4]
