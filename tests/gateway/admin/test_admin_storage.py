"""Users, sessions, the audit log and key rules, on both backends against real databases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import uuid_utils
from majordomo_gateway.admin.audit import Actor, record_action
from majordomo_gateway.admin.passwords import hash_password, normalise_email, verify_password
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import Database, open_database
from majordomo_gateway.storage.errors import ConstraintViolation

from tests.support import PostgresServer
from tests.support.records import NOW


@pytest.fixture(params=["sqlite", "postgres"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'admin.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    db = open_database(url)
    await db.connect()
    await db.migrate()
    yield db
    await db.close()


def new_id() -> str:
    return str(uuid_utils.uuid7())


async def test_users_are_unique_by_email_whatever_its_case(database: Database) -> None:
    ada = await database.users.create(new_id(), normalise_email(" Ada@Example.COM "), "admin", "h1", NOW)
    assert ada.email == "ada@example.com" and ada.active and ada.role == "admin"
    assert (await database.users.by_email("ADA@example.com")) == ada
    assert (await database.users.find("ada@EXAMPLE.com")) == ada
    assert (await database.users.find(ada.id)) == ada
    assert await database.users.get("not-a-uuid") is None  # "not found", not a uuid syntax error
    # Even written around the normalisation, another case of the address is the same account.
    with pytest.raises(ConstraintViolation):
        await database.users.create(new_id(), "ADA@example.com", "viewer", "h2", NOW)
    with pytest.raises(ConstraintViolation):  # the role is checked by the database too
        await database.users.create(new_id(), "bob@example.com", "root", "h3", NOW)
    assert [u.email for u in await database.users.all()] == ["ada@example.com"]
    assert "password_hash" not in ada.to_dict()


async def test_disable_password_and_role_changes(database: Database) -> None:
    user = await database.users.create(new_id(), "m@example.com", "member", "old", NOW)
    later = NOW + timedelta(minutes=1)
    disabled = await database.users.set_disabled(user.id, later, later)
    assert disabled is not None and not disabled.active and disabled.disabled_at == later
    assert await database.users.active_admins() == 0
    enabled = await database.users.set_disabled(user.id, None, later)
    assert enabled is not None and enabled.active
    changed = await database.users.set_password(user.id, "new", later)
    assert changed is not None and changed.password_hash == "new" and changed.updated_at == later
    promoted = await database.users.set_role(user.id, "admin", later)
    assert promoted is not None and promoted.role == "admin"
    assert await database.users.active_admins() == 1


async def test_sessions_are_found_by_token_hash_and_revoked(database: Database) -> None:
    user = await database.users.create(new_id(), "s@example.com", "viewer", "h", NOW)
    first = await database.sessions.create("hash-1", user.id, NOW, NOW + timedelta(hours=12), "127.0.0.1")
    await database.sessions.create("hash-2", user.id, NOW, NOW + timedelta(hours=12), None)
    await database.sessions.create("hash-old", user.id, NOW - timedelta(days=1), NOW - timedelta(hours=1), None)
    found = await database.sessions.find("hash-1")
    assert found is not None
    session, owner = found
    assert session == first and session.expires_at == NOW + timedelta(hours=12) and session.revoked_at is None
    assert owner == user
    assert await database.sessions.find("hash-unknown") is None
    assert await database.sessions.revoke("hash-1", NOW)
    assert not await database.sessions.revoke("hash-unknown", NOW)
    found = await database.sessions.find("hash-1")
    assert found is not None and found[0].revoked_at == NOW
    # Ending a user's sessions ends those still live, and only those.
    assert await database.sessions.revoke_user(user.id, NOW) == 1
    found = await database.sessions.find("hash-2")
    assert found is not None and found[0].revoked_at == NOW
    with pytest.raises(ConstraintViolation):  # a session needs a user
        await database.sessions.create("hash-3", new_id(), NOW, NOW, None)


async def test_audit_rows_come_back_newest_last_with_since_and_limit(database: Database) -> None:
    actor = Actor("ada@example.com", new_id(), "10.0.0.7")
    for minute in range(5):
        await record_action(database, actor, "key.create", f"key-{minute}", {"name": f"k{minute}", "n": minute},
                            now=NOW + timedelta(minutes=minute))
    await record_action(database, Actor("cli:root"), "user.create", "u-1", now=NOW + timedelta(minutes=9))
    entries = await database.audit.recent(limit=3)
    assert [e.target for e in entries] == ["key-3", "key-4", "u-1"]
    assert entries[0].detail == {"name": "k3", "n": 3}
    assert (entries[0].actor, entries[0].actor_user_id, entries[0].remote_address) == (
        "ada@example.com", actor.user_id, "10.0.0.7")
    assert entries[-1].actor == "cli:root" and entries[-1].actor_user_id is None and entries[-1].detail == {}
    since = await database.audit.recent(since=NOW + timedelta(minutes=3), limit=100)
    assert [e.target for e in since] == ["key-3", "key-4", "u-1"]
    assert since[0].at == NOW + timedelta(minutes=3)


async def test_key_owner_expiry_and_rules_round_trip_and_clear(database: Database) -> None:
    owner = await database.users.create(new_id(), "o@example.com", "member", "h", NOW)
    key = generate_key()
    created = await database.create_key(new_id(), "ruled", None, hash_secret(key), display_prefix(key), NOW,
                                        owner_user_id=owner.id, expires_at=NOW + timedelta(days=30),
                                        allowed_providers=("openai",), allowed_models=("gpt-4o*", "o3"))
    assert created.owner_user_id == owner.id
    assert created.expires_at == NOW + timedelta(days=30)
    assert created.allowed_providers == ("openai",) and created.allowed_models == ("gpt-4o*", "o3")
    assert not created.expired(NOW) and created.expired(NOW + timedelta(days=30))
    found = await database.find_key_by_hash(hash_secret(key))
    assert found == created  # what the key cache reads carries the rules: no second query
    data = created.to_dict()
    assert data["allowed_models"] == ["gpt-4o*", "o3"] and data["owner_user_id"] == owner.id
    cleared = await database.set_key_rules(created.id, owner_user_id=None, expires_at=None, allowed_providers=None,
                                           allowed_models=(), now=NOW)
    assert cleared is not None
    assert (cleared.owner_user_id, cleared.expires_at, cleared.allowed_providers) == (None, None, None)
    assert cleared.allowed_models == ()  # an empty list allows no model, unlike None
    assert await database.set_key_rules(new_id(), owner_user_id=None, expires_at=None, allowed_providers=None,
                                        allowed_models=None, now=NOW) is None
    with pytest.raises(ConstraintViolation):
        await database.create_key(new_id(), "orphan", None, "h-orphan", "mdm_sk_x", NOW, owner_user_id=new_id())
    plain = await database.create_key(new_id(), "plain", None, "h-plain", "mdm_sk_y", NOW)
    assert (plain.owner_user_id, plain.expires_at, plain.allowed_providers, plain.allowed_models) == (
        None, None, None, None)


def test_passwords_are_argon2id_and_verify_only_themselves() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery")
    assert not verify_password(stored, "correct horse batterY")
    assert not verify_password("not a hash", "x")
    assert not verify_password(None, "anything")  # the unknown-user path
    with pytest.raises(ValueError, match="not an email"):
        normalise_email("no-at-sign")
