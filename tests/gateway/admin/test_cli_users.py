"""`majordomo users ...` and `majordomo audit` as an operator runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest
from majordomo_gateway.admin.passwords import verify_password

from tests.support import PostgresServer, majordomo, run_sync

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    if request.param == "sqlite":
        env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'users.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        env["MAJORDOMO_DATABASE_URL"] = server.create()
    return env


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> object:
    result = majordomo(*args, "--json", env=env, input=stdin, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n")
    return orjson.loads(result.stdout)


def stored_hash(env: dict[str, str], email: str) -> str:
    url = env["MAJORDOMO_DATABASE_URL"]
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return str(conn.execute("SELECT password_hash FROM users WHERE email = ?", (email,)).fetchone()[0])
        finally:
            conn.close()
    import asyncpg

    async def read() -> str:
        conn = await asyncpg.connect(url)
        try:
            return str(await conn.fetchval("SELECT password_hash FROM users WHERE email = $1", email))
        finally:
            await conn.close()

    return str(run_sync(read()))


def test_user_lifecycle_and_its_audit_trail(env: dict[str, str]) -> None:
    created = ok(env, "users", "create", "--email", "Ada@Example.com", "--role", "admin", stdin=PASSWORD + "\n")
    assert isinstance(created, dict)
    assert (created["email"], created["role"], created["active"]) == ("ada@example.com", "admin", True)
    assert "password_hash" not in created and PASSWORD not in orjson.dumps(created).decode()
    stored = stored_hash(env, "ada@example.com")
    assert stored.startswith("$argon2id$") and verify_password(stored, PASSWORD)

    plain = majordomo("users", "create", "--email", "viewer@example.com", "--role", "viewer", env=env,
                      input=PASSWORD + "\r\n")
    assert "Created viewer viewer@example.com" in plain.stdout
    assert verify_password(stored_hash(env, "viewer@example.com"), PASSWORD)  # the line ending is not kept

    again = majordomo("users", "create", "--email", "ADA@example.COM", "--role", "member", env=env,
                      input=PASSWORD + "\n", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr

    listed = ok(env, "users", "list")
    assert isinstance(listed, list)
    assert [(u["email"], u["role"]) for u in listed] == [("ada@example.com", "admin"), ("viewer@example.com", "viewer")]
    assert "viewer@example.com" in majordomo("users", "list", env=env).stdout

    disabled = ok(env, "users", "disable", "viewer@example.com")
    assert isinstance(disabled, dict) and disabled["active"] is False and disabled["disabled_at"]
    enabled = ok(env, "users", "enable", disabled["id"])  # by id as well as by email
    assert isinstance(enabled, dict) and enabled["active"] is True

    new_password = "a different long password"
    ok(env, "users", "set-password", "ada@example.com", stdin=new_password + "\n")
    stored = stored_hash(env, "ada@example.com")
    assert verify_password(stored, new_password) and not verify_password(stored, PASSWORD)

    audit = ok(env, "audit")
    assert isinstance(audit, list)
    assert [(e["action"], e["target"]) for e in audit] == [
        ("user.create", created["id"]), ("user.create", disabled["id"]), ("user.disable", disabled["id"]),
        ("user.enable", disabled["id"]), ("user.set_password", created["id"])]
    assert all(e["actor"].startswith("cli:") and e["remote_address"] is None for e in audit)
    assert audit[0]["detail"] == {"email": "ada@example.com", "role": "admin"}
    dump = orjson.dumps(audit).decode()
    assert PASSWORD not in dump and new_password not in dump and "$argon2" not in dump
    assert [e["action"] for e in ok(env, "audit", "--limit", "2")] == ["user.enable", "user.set_password"]  # type: ignore[union-attr]
    assert ok(env, "audit", "--since", "2999-01-01") == []
    text = majordomo("audit", env=env).stdout
    assert "user.set_password" in text and "cli:" in text


def test_bad_passwords_emails_and_users_are_refused_with_a_reason(env: dict[str, str]) -> None:
    def refused(*args: str, stdin: str | None = None) -> str:
        result = majordomo(*args, env=env, input=stdin, check=False)
        assert result.returncode != 0 and not result.stdout
        return result.stderr

    assert "at least 12 characters" in refused("users", "create", "--email", "a@example.com", "--role", "admin",
                                               stdin="short\n")
    assert "no password on standard input" in refused("users", "create", "--email", "a@example.com", "--role",
                                                      "admin", stdin="")
    assert "no password on standard input" in refused("users", "create", "--email", "a@example.com", "--role",
                                                      "admin")  # no stdin at all
    assert "not an email address" in refused("users", "create", "--email", "nobody", "--role", "admin",
                                             stdin=PASSWORD + "\n")
    assert "invalid choice" in refused("users", "create", "--email", "a@example.com", "--role", "root",
                                       stdin=PASSWORD + "\n")
    assert "no user nobody@example.com" in refused("users", "disable", "nobody@example.com")
    assert "no user nobody@example.com" in refused("users", "set-password", "nobody@example.com",
                                                   stdin=PASSWORD + "\n")
    assert "--limit must be a positive" in refused("audit", "--limit", "0")
    assert "cannot read 'yesterday'" in refused("audit", "--since", "yesterday")
    assert ok(env, "users", "list") == [] and ok(env, "audit") == []  # nothing half-written


def test_help_teaches_roles_and_examples() -> None:
    text = majordomo("users", "--help").stdout
    for word in ("admin", "member", "viewer", "set-password", "argon2id", "printf"):
        assert word in text
    assert "--since" in majordomo("audit", "--help").stdout
