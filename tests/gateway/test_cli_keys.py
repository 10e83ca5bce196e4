"""`majordomo keys ...` and `majordomo db migrate` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest
from majordomo_gateway.auth.keys import hash_secret

from tests.support import PostgresServer, majordomo


@pytest.fixture(params=["sqlite", "postgres"])
def database_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    if request.param == "sqlite":
        env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'keys.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        env["MAJORDOMO_DATABASE_URL"] = server.create()
    return env


def run(env: dict[str, str], *args: str) -> str:
    return majordomo(*args, env=env).stdout


def test_key_lifecycle_from_the_command_line(database_env: dict[str, str]) -> None:
    assert "applied: 0001_initial" in run(database_env, "db", "migrate")
    assert "up to date" in run(database_env, "db", "migrate")

    created = orjson.loads(run(database_env, "keys", "create", "--name", "dev", "--description", "laptop", "--json"))
    assert created["key"].startswith("mdm_sk_") and len(created["key"]) == 50
    assert created["name"] == "dev" and created["active"] is True
    key_id = created["id"]

    plain = majordomo("keys", "create", "--name", "ci", env=database_env)
    assert plain.stdout.strip().startswith("mdm_sk_")
    assert "will not be shown again" in plain.stderr
    # A shell prompt must not land on the key's line (issue 18, point 17).
    assert plain.stdout.endswith("\n") and plain.stderr.endswith("\n")
    as_json = majordomo("keys", "create", "--name", "ci2", "--json", env=database_env)
    assert as_json.stdout.endswith("\n")

    listed = orjson.loads(run(database_env, "keys", "list", "--json"))
    assert [k["name"] for k in listed] == ["dev", "ci", "ci2"]
    assert all("key" not in k and "key_hash" not in k for k in listed)  # never the secret, nor its hash
    assert created["key"] not in run(database_env, "keys", "list")

    # Options after positionals, as the issue requires.
    updated = orjson.loads(run(database_env, "keys", "update", key_id, "--name", "renamed", "--json"))
    assert (updated["name"], updated["description"]) == ("renamed", "laptop")
    assert "renamed" in run(database_env, "keys", "get", key_id)

    revoked = orjson.loads(run(database_env, "keys", "revoke", key_id, "--json"))
    assert revoked["active"] is False and revoked["revoked_at"]

    missing = majordomo("keys", "get", "00000000-0000-0000-0000-000000000000", env=database_env, check=False)
    assert missing.returncode == 1 and "no key with id" in missing.stderr


def test_only_the_hash_of_a_key_is_stored(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    env["MAJORDOMO_DATABASE_URL"] = f"sqlite:///{tmp_path / 'k.db'}"
    key = orjson.loads(run(env, "keys", "create", "--name", "x", "--json"))["key"]
    conn = sqlite3.connect(tmp_path / "k.db")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert key not in dump
    assert hash_secret(key) in dump


def test_help_teaches_and_bad_config_names_the_setting(tmp_path: Path) -> None:
    help_text = majordomo("--help").stdout
    for command in ("serve", "keys", "db", "pricing", "reprice"):
        assert command in help_text
    assert "sqlite3 majordomo.db" in help_text
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    env["MAJORDOMO_SERVER_PORT"] = "not-a-port"
    bad = majordomo("serve", env=env, check=False, cwd=tmp_path)
    assert bad.returncode == 2
    assert "MAJORDOMO_SERVER_PORT" in bad.stderr
