"""Provider keys at rest: AES-256-GCM under ``MAJORDOMO_SECRETS_KEY``.

A secrets key is ``mdm_sec_`` + 32 random bytes in base64url (``majordomo secrets generate``).
Every stored value records the id of the key that encrypted it (a short hash of the key, never
the key), so ``majordomo secrets rotate`` can re-encrypt under a new key while the keys listed in
``MAJORDOMO_SECRETS_OLD_KEYS`` still decrypt what has not been rotated yet.  Each value is bound to
the row it belongs to (the associated data), so a ciphertext copied into another row does not
decrypt.  AES-GCM with random 96-bit nonces is safe for far more values than a gateway stores.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_VARIABLE", "OLD_KEYS_VARIABLE", "Keyring", "SealedValue", "SecretsError", "generate_secrets_key"]

KEY_VARIABLE = "MAJORDOMO_SECRETS_KEY"
OLD_KEYS_VARIABLE = "MAJORDOMO_SECRETS_OLD_KEYS"
SECRETS_KEY_PREFIX = "mdm_sec_"
_NONCE_BYTES = 12


class SecretsError(Exception):
    """Stored secrets cannot be read or written; the message says which variable to set."""


@dataclass(frozen=True, slots=True)
class SealedValue:
    #: which secrets key encrypted it (Keyring.key_id), stored beside it
    key_id: str
    #: base64 of nonce + ciphertext + tag, as stored
    blob: str


def generate_secrets_key() -> str:
    return SECRETS_KEY_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")


def _decode_key(text: str, variable: str) -> bytes:
    value = text.strip()
    if not value.startswith(SECRETS_KEY_PREFIX):
        raise SecretsError(f"{variable} must be a key made by `majordomo secrets generate` (mdm_sec_...)")
    body = value[len(SECRETS_KEY_PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise SecretsError(f"{variable} is not a valid secrets key: make one with `majordomo secrets generate`"
                           ) from None
    if len(raw) != 32:
        raise SecretsError(f"{variable} is not a valid secrets key (it must hold 32 bytes): make one with "
                           "`majordomo secrets generate`")
    return raw


def _key_id(raw: bytes) -> str:
    return hashlib.sha256(b"majordomo secrets key id\x00" + raw).hexdigest()[:16]


class Keyring:
    """The current secrets key (encrypts and decrypts) and older ones (decrypt only)."""

    def __init__(self, current: str, old: tuple[str, ...] = ()) -> None:
        raw = _decode_key(current, KEY_VARIABLE)
        self.key_id = _key_id(raw)
        self._current = AESGCM(raw)
        self._ciphers: dict[str, AESGCM] = {self.key_id: self._current}
        for text in old:
            old_raw = _decode_key(text, OLD_KEYS_VARIABLE)
            self._ciphers.setdefault(_key_id(old_raw), AESGCM(old_raw))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Keyring:
        """The keyring the environment names; SecretsError naming the variable when there is none."""
        env = os.environ if environ is None else environ
        current = env.get(KEY_VARIABLE, "").strip()
        if not current:
            raise SecretsError(f"{KEY_VARIABLE} is not set: proxy keys store provider keys encrypted under it. "
                               f"Make one with `majordomo secrets generate` and set {KEY_VARIABLE} for the "
                               "gateway and the majordomo command alike.")
        old = tuple(part for part in env.get(OLD_KEYS_VARIABLE, "").split(",") if part.strip())
        return cls(current, old)

    def seal(self, plaintext: str, context: str) -> SealedValue:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._current.encrypt(nonce, plaintext.encode("utf-8"), context.encode("utf-8"))
        return SealedValue(self.key_id, base64.b64encode(nonce + sealed).decode("ascii"))

    def open(self, value: SealedValue, context: str) -> str:
        cipher = self._ciphers.get(value.key_id)
        if cipher is None:
            raise SecretsError(f"a stored provider key was encrypted under secrets key {value.key_id}, which is "
                               f"neither {KEY_VARIABLE} nor in {OLD_KEYS_VARIABLE}; set the key it was made "
                               "with (see docs/security.md, key rotation)")
        data = base64.b64decode(value.blob)
        try:
            plain = cipher.decrypt(data[:_NONCE_BYTES], data[_NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            raise SecretsError(f"a stored provider key does not decrypt under secrets key {value.key_id}: the "
                               "stored value was altered or belongs to another row") from None
        return plain.decode("utf-8")

    def is_current(self, value: SealedValue) -> bool:
        return value.key_id == self.key_id
