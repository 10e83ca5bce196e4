"""The users, admin_sessions and audit_log tables, on either backend (as storage/proxy_keys.py:
``:name`` statements rendered per dialect, run through the backend's ``rows()``, ``RETURNING``).

Emails are compared case-insensitively (``lower(email)``, which the unique index covers); ids are
compared as text, so a mistyped id is "not found", never a uuid syntax error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from typing import Any

import orjson

from majordomo_gateway.storage.columns import Dialect, NamedRow, Query, render
from majordomo_gateway.storage.proxy_keys import RowSource
from majordomo_gateway.storage.records import AuditRecord, SessionRecord, UserRecord

__all__ = ["AuditTable", "SessionTable", "UserTable", "admin_tables"]

_USER_COLUMNS = tuple(f.name for f in fields(UserRecord))
_SESSION_COLUMNS = tuple(f.name for f in fields(SessionRecord))
_AUDIT_COLUMNS = tuple(f.name for f in fields(AuditRecord))
_TIMES = frozenset({"created_at", "updated_at", "disabled_at", "expires_at", "revoked_at", "at"})
_IDS = frozenset({"id", "user_id", "actor_user_id"})

EncodeTime = Callable[[datetime | None], Any]


def _values(row: NamedRow, names: tuple[str, ...], dialect: Dialect, prefix: str = "") -> dict[str, Any]:
    values = {}
    for name in names:
        value = row[prefix + name]
        if name in _TIMES:
            value = dialect.decode_time(value)
        elif name in _IDS and value is not None:
            value = str(value)  # PostgreSQL hands back uuid.UUID
        values[name] = value
    return values


class _Table:
    def __init__(self, source: RowSource, dialect: Dialect, encode_time: EncodeTime) -> None:
        self._source = source
        self._dialect = dialect
        self._time = encode_time
        self._text = (lambda column: f"{column}::text") if dialect.numbered_parameters else (lambda column: column)

    def _render(self, template: str) -> Query:
        return render(template, self._dialect)

    async def _run(self, query: Query, **values: Any) -> list[NamedRow]:
        for name, value in values.items():
            if isinstance(value, datetime):
                values[name] = self._time(value)
        return await self._source.rows(query, query.args(**values))


class UserTable(_Table):
    def __init__(self, source: RowSource, dialect: Dialect, encode_time: EncodeTime) -> None:
        super().__init__(source, dialect, encode_time)
        cols = ", ".join(_USER_COLUMNS)
        self._create = self._render(
            "INSERT INTO users (id, email, role, password_hash, created_at, updated_at) "
            f"VALUES (:id, :email, :role, :password_hash, :now, :now) RETURNING {cols}")
        self._get = self._render(f"SELECT {cols} FROM users WHERE {self._text('id')} = :id")
        self._by_email = self._render(f"SELECT {cols} FROM users WHERE lower(email) = lower(:email)")
        self._list = self._render(f"SELECT {cols} FROM users ORDER BY created_at, id")
        self._set_disabled = self._render(
            f"UPDATE users SET disabled_at = :disabled_at, updated_at = :now WHERE {self._text('id')} = :id "
            f"RETURNING {cols}")
        self._set_password = self._render(
            f"UPDATE users SET password_hash = :password_hash, updated_at = :now WHERE {self._text('id')} = :id "
            f"RETURNING {cols}")
        self._set_role = self._render(
            f"UPDATE users SET role = :role, updated_at = :now WHERE {self._text('id')} = :id RETURNING {cols}")
        self._count_admins = self._render(
            "SELECT count(*) AS n FROM users WHERE role = 'admin' AND disabled_at IS NULL")

    def _user(self, rows: list[NamedRow]) -> UserRecord | None:
        return UserRecord(**_values(rows[0], _USER_COLUMNS, self._dialect)) if rows else None

    async def create(self, user_id: str, email: str, role: str, password_hash: str, now: datetime) -> UserRecord:
        """ConstraintViolation when the email is taken (in any case)."""
        created = self._user(await self._run(self._create, id=user_id, email=email, role=role,
                                             password_hash=password_hash, now=now))
        assert created is not None  # INSERT ... RETURNING returns the row or raises
        return created

    async def get(self, user_id: str) -> UserRecord | None:
        return self._user(await self._run(self._get, id=user_id))

    async def by_email(self, email: str) -> UserRecord | None:
        return self._user(await self._run(self._by_email, email=email))

    async def find(self, id_or_email: str) -> UserRecord | None:
        """By email when it has an @, else by id: what the CLI's USER argument means."""
        return await (self.by_email(id_or_email) if "@" in id_or_email else self.get(id_or_email))

    async def all(self) -> list[UserRecord]:
        return [UserRecord(**_values(r, _USER_COLUMNS, self._dialect)) for r in await self._run(self._list)]

    async def set_disabled(self, user_id: str, disabled_at: datetime | None, now: datetime) -> UserRecord | None:
        return self._user(await self._run(self._set_disabled, id=user_id, disabled_at=disabled_at, now=now))

    async def set_password(self, user_id: str, password_hash: str, now: datetime) -> UserRecord | None:
        return self._user(await self._run(self._set_password, id=user_id, password_hash=password_hash, now=now))

    async def set_role(self, user_id: str, role: str, now: datetime) -> UserRecord | None:
        return self._user(await self._run(self._set_role, id=user_id, role=role, now=now))

    async def active_admins(self) -> int:
        [row] = await self._run(self._count_admins)
        return int(row["n"])


class SessionTable(_Table):
    def __init__(self, source: RowSource, dialect: Dialect, encode_time: EncodeTime) -> None:
        super().__init__(source, dialect, encode_time)
        cols = ", ".join(_SESSION_COLUMNS)
        self._create = self._render(
            "INSERT INTO admin_sessions (token_hash, user_id, created_at, expires_at, remote_address) "
            f"VALUES (:token_hash, :user_id, :now, :expires_at, :remote_address) RETURNING {cols}")
        session = ", ".join(f"s.{name} AS s_{name}" for name in _SESSION_COLUMNS)
        user = ", ".join(f"u.{name} AS u_{name}" for name in _USER_COLUMNS)
        self._find = self._render(
            f"SELECT {session}, {user} FROM admin_sessions s JOIN users u ON u.id = s.user_id "
            "WHERE s.token_hash = :token_hash")
        self._revoke = self._render(
            "UPDATE admin_sessions SET revoked_at = coalesce(revoked_at, :now) WHERE token_hash = :token_hash "
            f"RETURNING {cols}")
        self._revoke_user = self._render(
            "UPDATE admin_sessions SET revoked_at = :now WHERE revoked_at IS NULL AND expires_at > :now "
            f"AND {self._text('user_id')} = :user_id RETURNING token_hash")

    async def create(self, token_hash: str, user_id: str, now: datetime, expires_at: datetime,
                     remote_address: str | None) -> SessionRecord:
        [row] = await self._run(self._create, token_hash=token_hash, user_id=user_id, now=now,
                                expires_at=expires_at, remote_address=remote_address)
        return SessionRecord(**_values(row, _SESSION_COLUMNS, self._dialect))

    async def find(self, token_hash: str) -> tuple[SessionRecord, UserRecord] | None:
        """The session and its user, in one query; whatever their state (the caller decides)."""
        rows = await self._run(self._find, token_hash=token_hash)
        if not rows:
            return None
        return (SessionRecord(**_values(rows[0], _SESSION_COLUMNS, self._dialect, "s_")),
                UserRecord(**_values(rows[0], _USER_COLUMNS, self._dialect, "u_")))

    async def revoke(self, token_hash: str, now: datetime) -> bool:
        return bool(await self._run(self._revoke, token_hash=token_hash, now=now))

    async def revoke_user(self, user_id: str, now: datetime) -> int:
        """End every live session of a user (disabled, or a new password); how many there were."""
        return len(await self._run(self._revoke_user, user_id=user_id, now=now))


class AuditTable(_Table):
    def __init__(self, source: RowSource, dialect: Dialect, encode_time: EncodeTime) -> None:
        super().__init__(source, dialect, encode_time)
        cols = ", ".join(_AUDIT_COLUMNS)
        self._insert = self._render(
            f"INSERT INTO audit_log ({cols}) VALUES (:id, :at, :actor, :actor_user_id, :action, :target, :detail, "
            ":remote_address)")
        # The newest `limit` rows (uuid7 ids break ties in time order), handed back oldest first.
        self._recent = self._render(f"SELECT {cols} FROM audit_log ORDER BY at DESC, id DESC LIMIT :limit")
        self._recent_since = self._render(
            f"SELECT {cols} FROM audit_log WHERE at >= :since ORDER BY at DESC, id DESC LIMIT :limit")

    async def record(self, entry: AuditRecord) -> None:
        await self._run(self._insert, id=entry.id, at=entry.at, actor=entry.actor, actor_user_id=entry.actor_user_id,
                        action=entry.action, target=entry.target, detail=orjson.dumps(entry.detail).decode(),
                        remote_address=entry.remote_address)

    async def recent(self, *, since: datetime | None = None, limit: int = 100) -> list[AuditRecord]:
        if since is None:
            rows = await self._run(self._recent, limit=limit)
        else:
            rows = await self._run(self._recent_since, since=since, limit=limit)
        entries = []
        for row in reversed(rows):
            values = _values(row, _AUDIT_COLUMNS, self._dialect)
            values["detail"] = orjson.loads(values["detail"])
            entries.append(AuditRecord(**values))
        return entries


def admin_tables(source: RowSource, dialect: Dialect, encode_time: EncodeTime
                 ) -> tuple[UserTable, SessionTable, AuditTable]:
    return (UserTable(source, dialect, encode_time), SessionTable(source, dialect, encode_time),
            AuditTable(source, dialect, encode_time))
