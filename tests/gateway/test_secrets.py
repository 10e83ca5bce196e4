"""auth/secrets.py: provider keys sealed with AES-256-GCM, bound to their row, rotatable."""

from __future__ import annotations

import base64

import pytest
from majordomo_gateway.auth.secrets import Keyring, SealedValue, SecretsError, generate_secrets_key


def test_round_trip_and_no_plaintext_in_the_stored_value() -> None:
    keyring = Keyring(generate_secrets_key())
    sealed = keyring.seal("sk-live-abcdef", "row 1")
    assert "sk-live" not in sealed.blob and b"sk-live" not in base64.b64decode(sealed.blob)
    assert keyring.open(sealed, "row 1") == "sk-live-abcdef"
    assert keyring.seal("sk-live-abcdef", "row 1").blob != sealed.blob  # a fresh nonce each time


def test_a_value_moved_to_another_row_or_altered_does_not_open() -> None:
    keyring = Keyring(generate_secrets_key())
    sealed = keyring.seal("sk-live-abcdef", "proxy key A provider openai")
    with pytest.raises(SecretsError, match="belongs to another row"):
        keyring.open(sealed, "proxy key B provider openai")
    raw = bytearray(base64.b64decode(sealed.blob))
    raw[-1] ^= 1
    with pytest.raises(SecretsError, match="altered"):
        keyring.open(SealedValue(sealed.key_id, base64.b64encode(bytes(raw)).decode()), "proxy key A provider openai")


def test_old_keys_decrypt_and_new_values_use_the_current_key() -> None:
    old, new = generate_secrets_key(), generate_secrets_key()
    sealed = Keyring(old).seal("sk-1", "ctx")
    with pytest.raises(SecretsError, match="MAJORDOMO_SECRETS_OLD_KEYS"):
        Keyring(new).open(sealed, "ctx")
    rotating = Keyring.from_environment({"MAJORDOMO_SECRETS_KEY": new, "MAJORDOMO_SECRETS_OLD_KEYS": f" {old} ,"})
    assert rotating.open(sealed, "ctx") == "sk-1"
    assert not rotating.is_current(sealed) and rotating.is_current(rotating.seal("sk-1", "ctx"))


@pytest.mark.parametrize(("environ", "message"), [
    ({}, "MAJORDOMO_SECRETS_KEY is not set"),
    ({"MAJORDOMO_SECRETS_KEY": "hunter2"}, "made by `majordomo secrets generate`"),
    ({"MAJORDOMO_SECRETS_KEY": "mdm_sec_c2hvcnQ"}, "32 bytes"),
    ({"MAJORDOMO_SECRETS_KEY": generate_secrets_key(), "MAJORDOMO_SECRETS_OLD_KEYS": "nope"},
     "MAJORDOMO_SECRETS_OLD_KEYS must be"),
])
def test_missing_or_malformed_keys_name_the_variable(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SecretsError, match=message):
        Keyring.from_environment(environ)
