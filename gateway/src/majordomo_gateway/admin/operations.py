"""The admin actions themselves, shared by the command line (cli/keys.py, cli/proxy_keys.py,
cli/users.py, cli/budgets.py) and the admin API (admin/api.py): each checks its input, writes
through the storage tables (whose triggers feed storage/changes.py, so every gateway process sees
the change within a second) and records one audit row.

Input errors are ``ActionError``: the message says what is wrong and what would do, ``field``
names the input it is about (the API's 400 names it; the CLI prints the message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime
from typing import Any

import uuid_utils

from majordomo_gateway.admin.audit import Actor, key_detail, record_action
from majordomo_gateway.admin.passwords import hash_password, normalise_email, password_problem
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.auth.proxy_keys import PROXY_KEY_PREFIX, generate_proxy_key, proxy_key_context
from majordomo_gateway.auth.secrets import Keyring
from majordomo_gateway.storage.database import Database
from majordomo_gateway.storage.errors import ConstraintViolation
from majordomo_gateway.storage.records import (
    ROLES,
    KeyRecord,
    ProviderSecretRecord,
    ProxyKeyRecord,
    UserRecord,
)

__all__ = ["RULE_FIELDS", "ActionError", "create_key", "create_proxy_key", "create_user", "proxy_key_data",
           "remove_provider", "revoke_key", "revoke_proxy_key", "set_provider", "set_user_disabled",
           "set_user_password", "set_user_role", "update_key"]

#: what ``update_key``'s ``rules`` may change; a name present with None clears the rule
RULE_FIELDS = ("owner_user_id", "expires_at", "allowed_providers", "allowed_models")


class ActionError(ValueError):
    def __init__(self, message: str, *, field: str | None = None, status: int = 400,
                 code: str = "invalid_request") -> None:
        super().__init__(message)
        self.field = field
        self.status = status
        self.code = code


async def create_key(database: Database, actor: Actor, *, name: str, description: str | None,
                     rules: Mapping[str, Any], now: datetime) -> tuple[KeyRecord, str]:
    """The new key and its secret (shown once: only its SHA-256 is stored)."""
    secret = generate_key()
    record = await database.create_key(str(uuid_utils.uuid7()), name, description, hash_secret(secret),
                                       display_prefix(secret), now, **rules)
    await record_action(database, actor, "key.create", record.id, key_detail(record), now=now)
    return record, secret


async def update_key(database: Database, actor: Actor, record: KeyRecord, *, name: str | None,
                     description: str | None, rules: Mapping[str, Any], now: datetime) -> KeyRecord | None:
    """Rename and/or change the rules named in ``rules`` (others keep their value); None when the
    key vanished meanwhile."""
    unknown = set(rules) - set(RULE_FIELDS)
    assert not unknown, unknown
    before = key_detail(record)
    updated: KeyRecord | None = record
    if name is not None or description is not None:
        updated = await database.update_key(record.id, name=name, description=description, now=now)
    if rules and updated is not None:
        current = {field: getattr(updated, field) for field in RULE_FIELDS}
        current.update(rules)
        updated = await database.set_key_rules(updated.id, now=now, **current)
    if updated is not None:
        await record_action(database, actor, "key.update", updated.id,
                            {"before": before, "after": key_detail(updated)}, now=now)
    return updated


async def revoke_key(database: Database, actor: Actor, key_id: str, now: datetime) -> KeyRecord | None:
    record = await database.revoke_key(key_id, now)
    if record is not None:
        await record_action(database, actor, "key.revoke", record.id, {"name": record.name}, now=now)
    return record


def proxy_key_data(record: ProxyKeyRecord, providers: list[ProviderSecretRecord]) -> dict[str, Any]:
    """A proxy key as ``proxy-keys get --json`` and the API show it: never a provider key."""
    data: dict[str, Any] = {name: value.isoformat() if isinstance(value, datetime) else value
                            for name, value in asdict(record).items()}
    data["key_prefix"] = record.key_prefix
    data["active"] = record.revoked_at is None
    data["providers"] = [p.provider for p in providers]
    return data


async def create_proxy_key(database: Database, actor: Actor, *, name: str, key: KeyRecord | None, key_id: str,
                           now: datetime, field: str = "key") -> tuple[ProxyKeyRecord, str]:
    """``key`` is the Majordomo key ``key_id`` names (None: there is none); ``field``, what the
    caller calls it."""
    if key is None or not key.active:
        state = "is revoked" if key is not None else "does not exist"
        raise ActionError(f"Majordomo key {key_id} {state} (see `majordomo keys list`)", field=field)
    secret = generate_proxy_key()
    record = await database.proxy_keys.create(str(uuid_utils.uuid7()), name, key.id, hash_secret(secret),
                                              secret[: len(PROXY_KEY_PREFIX) + 4], now)
    await record_action(database, actor, "proxy_key.create", record.id,
                        {"name": record.name, "majordomo_api_key_id": key.id}, now=now)
    return record, secret


async def revoke_proxy_key(database: Database, actor: Actor, proxy_key_id: str, now: datetime
                           ) -> ProxyKeyRecord | None:
    record = await database.proxy_keys.revoke(proxy_key_id, now)
    if record is not None:
        await record_action(database, actor, "proxy_key.revoke", record.id, {"name": record.name}, now=now)
    return record


def check_provider(provider: str, known: Mapping[str, Any] | set[str] | frozenset[str]) -> str:
    if provider not in known:
        raise ActionError(f"unknown provider {provider!r}; the configured ones are {', '.join(sorted(known))}",
                          field="provider")
    return provider


async def set_provider(database: Database, keyring: Keyring, actor: Actor, record: ProxyKeyRecord, provider: str,
                       secret: str, now: datetime) -> ProviderSecretRecord:
    """Store (or replace) the provider key, encrypted and bound to this proxy key and provider."""
    if not secret or any(ch.isspace() for ch in secret):
        raise ActionError("no provider key given; a key has no spaces or line breaks", field="key")
    sealed = keyring.seal(secret, proxy_key_context(record.id, provider))
    stored = await database.proxy_keys.set_provider(record.id, provider, sealed.key_id, sealed.blob,
                                                    hash_secret(secret), now)
    await record_action(database, actor, "proxy_key.set_provider", record.id, {"provider": provider}, now=now)
    return stored


async def remove_provider(database: Database, actor: Actor, record: ProxyKeyRecord, provider: str,
                          now: datetime) -> None:
    if not await database.proxy_keys.remove_provider(record.id, provider, now):
        raise ActionError(f"proxy key {record.id} has no {provider} key", field="provider", status=404,
                          code="not_found")
    await record_action(database, actor, "proxy_key.remove_provider", record.id, {"provider": provider}, now=now)


def check_password(password: str) -> str:
    problem = password_problem(password)
    if problem is not None:
        raise ActionError(problem, field="password")
    return password


async def create_user(database: Database, actor: Actor, *, email: str, role: str, password: str,
                      now: datetime) -> UserRecord:
    try:
        email = normalise_email(email)
    except ValueError as exc:
        raise ActionError(str(exc), field="email") from None
    if role not in ROLES:
        raise ActionError(f"role {role!r}: use {', '.join(ROLES)}", field="role")
    password_hash = await asyncio.to_thread(hash_password, check_password(password))
    try:
        record = await database.users.create(str(uuid_utils.uuid7()), email, role, password_hash, now)
    except ConstraintViolation:
        raise ActionError(f"a user with email {email} already exists (see `majordomo users list`)", field="email",
                          status=409, code="conflict") from None
    await record_action(database, actor, "user.create", record.id, {"email": email, "role": role}, now=now)
    return record


async def _keep_an_admin(database: Database, user: UserRecord, what: str) -> None:
    """Refuse to leave the gateway without an enabled admin (no one could then manage users)."""
    if user.role == "admin" and user.active and await database.users.active_admins() <= 1:
        raise ActionError(f"{user.email} is the last enabled admin; {what} would leave no one to manage users",
                          status=409, code="conflict")


async def set_user_disabled(database: Database, actor: Actor, user: UserRecord, *, disabled: bool,
                            now: datetime, keep_an_admin: bool = False) -> UserRecord:
    """Disabling also ends the user's sessions."""
    if disabled and keep_an_admin:
        await _keep_an_admin(database, user, "disabling it")
    record = await database.users.set_disabled(user.id, now if disabled else None, now)
    if record is None:
        raise ActionError(f"no user {user.id}", status=404, code="not_found")
    detail: dict[str, Any] = {"email": record.email}
    if disabled:
        detail["sessions_ended"] = await database.sessions.revoke_user(record.id, now)
    await record_action(database, actor, "user.disable" if disabled else "user.enable", record.id, detail, now=now)
    return record


async def set_user_role(database: Database, actor: Actor, user: UserRecord, role: str, now: datetime) -> UserRecord:
    if role not in ROLES:
        raise ActionError(f"role {role!r}: use {', '.join(ROLES)}", field="role")
    if role != "admin":
        await _keep_an_admin(database, user, f"making it a {role}")
    record = await database.users.set_role(user.id, role, now)
    if record is None:
        raise ActionError(f"no user {user.id}", status=404, code="not_found")
    await record_action(database, actor, "user.set_role", record.id,
                        {"email": record.email, "before": user.role, "after": role}, now=now)
    return record


async def set_user_password(database: Database, actor: Actor, user: UserRecord, password: str,
                            now: datetime) -> tuple[UserRecord, int]:
    """The user, and how many of its sessions the new password ended."""
    password_hash = await asyncio.to_thread(hash_password, check_password(password))
    record = await database.users.set_password(user.id, password_hash, now)
    if record is None:
        raise ActionError(f"no user {user.id}", status=404, code="not_found")
    ended = await database.sessions.revoke_user(record.id, now)
    await record_action(database, actor, "user.set_password", record.id,
                        {"email": record.email, "sessions_ended": ended}, now=now)
    return record, ended
