"""The vault's caches in-process, on a real SQLite database: decrypted keys bounded and dropped on
a change, a lookup that raced a change not stored, a tampered value refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.auth.cache import KeyStatus
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.auth.proxy_keys import generate_proxy_key, proxy_key_context
from majordomo_gateway.auth.secrets import Keyring, SecretsError, generate_secrets_key
from majordomo_gateway.auth.vault import ProxyKeyVault
from majordomo_gateway.storage.database import Database, open_database

NOW = datetime(2026, 3, 1, tzinfo=UTC)


async def _setup(tmp_path: Path, keyring: Keyring, count: int) -> tuple[Database, list[str]]:
    db = open_database(f"sqlite:///{tmp_path / 'v.db'}")
    await db.connect()
    await db.migrate()
    key = generate_key()
    owner = await db.create_key(str(uuid_utils.uuid7()), "owner", None, hash_secret(key), display_prefix(key), NOW)
    presented = []
    for n in range(count):
        proxy_key = generate_proxy_key()
        record = await db.proxy_keys.create(str(uuid_utils.uuid7()), f"app-{n}", owner.id, hash_secret(proxy_key),
                                            proxy_key[:11], NOW)
        sealed = keyring.seal(f"sk-provider-{n}", proxy_key_context(record.id, "openai"))
        await db.proxy_keys.set_provider(record.id, "openai", sealed.key_id, sealed.blob,
                                         hash_secret(f"sk-provider-{n}"), NOW)
        presented.append(proxy_key)
    return db, presented


async def test_decrypted_keys_are_bounded_and_dropped_on_a_change(tmp_path: Path) -> None:
    keyring = Keyring(generate_secrets_key())
    db, presented = await _setup(tmp_path, keyring, 12)
    vault = ProxyKeyVault(db, keyring, max_decrypted=10)
    for n, proxy_key in enumerate(presented):
        check = await vault.check(proxy_key)
        assert check.status is KeyStatus.VALID and check.owner.status is KeyStatus.VALID
        assert check.proxy_key is not None
        assert vault.provider_key(check.proxy_key, check.providers["openai"]) == f"sk-provider-{n}"
        assert vault.decrypted_count <= 10
    vault.mark_all_due()
    assert vault.decrypted_count == 0
    await db.close()


async def test_a_lookup_that_raced_a_change_is_not_kept(tmp_path: Path) -> None:
    keyring = Keyring(generate_secrets_key())
    db, [proxy_key] = await _setup(tmp_path, keyring, 1)
    vault = ProxyKeyVault(db, keyring)
    in_flight = asyncio.ensure_future(vault.check(proxy_key))
    await asyncio.sleep(0)  # the lookup has started reading
    vault.mark_all_due()  # ... when a change arrives: its answer may predate the change
    assert (await in_flight).status is KeyStatus.VALID
    assert len(vault) == 0
    assert (await vault.check(proxy_key)).status is KeyStatus.VALID
    assert len(vault) == 1
    await db.close()


async def test_an_altered_value_or_a_missing_keyring_is_refused(tmp_path: Path) -> None:
    keyring = Keyring(generate_secrets_key())
    db, [proxy_key] = await _setup(tmp_path, keyring, 1)
    check = await ProxyKeyVault(db, keyring).check(proxy_key)
    assert check.proxy_key is not None
    stored = check.providers["openai"]
    other = Keyring(generate_secrets_key())
    with pytest.raises(SecretsError, match="MAJORDOMO_SECRETS_KEY"):
        ProxyKeyVault(db, other).provider_key(check.proxy_key, stored)
    with pytest.raises(SecretsError, match="MAJORDOMO_SECRETS_KEY is not set"):
        ProxyKeyVault(db, None, keyring_error="MAJORDOMO_SECRETS_KEY is not set").provider_key(check.proxy_key,
                                                                                             stored)
    await db.close()
