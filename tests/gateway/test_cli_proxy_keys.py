"""``majordomo proxy-keys`` and ``majordomo secrets`` on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.support import PostgresServer
from tests.support.processes import BIN

PROVIDER_KEY = "sk-proj-realkey-0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    return base | {"MAJORDOMO_DATABASE_URL": url}


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "majordomo"), *args], input=stdin, capture_output=True, text=True, env=env,
                          timeout=60)


def ok(env: dict[str, str], *args: str, stdin: str | None = None) -> object:
    result = cli(env, *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout) if "--json" in args else result.stdout


def dump(env: dict[str, str]) -> str:
    """Everything the proxy-key tables hold, as text: what a database dump would show."""
    url = env["MAJORDOMO_DATABASE_URL"]
    if url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(url[len("sqlite:///"):]) as conn:
            return repr(conn.execute("SELECT * FROM proxy_keys").fetchall()
                        + conn.execute("SELECT * FROM proxy_key_providers").fetchall())
    out = subprocess.run(["psql", url, "-Atc", "SELECT row_to_json(p) FROM proxy_keys p UNION ALL "
                          "SELECT row_to_json(q) FROM proxy_key_providers q"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_proxy_key_lifecycle(env: dict[str, str]) -> None:
    assert "MAJORDOMO_SECRETS_KEY is not set" in cli(env, "proxy-keys", "list").stderr
    secrets_key = str(ok(env, "secrets", "generate")).strip().splitlines()[-1]
    env = env | {"MAJORDOMO_SECRETS_KEY": secrets_key}
    owner = ok(env, "keys", "create", "--name", "backend", "--json")
    assert isinstance(owner, dict)
    created = ok(env, "proxy-keys", "create", "--name", "backend-app", "--key", owner["id"], "--json")
    assert isinstance(created, dict)
    assert created["key"].startswith("mdm_pk_") and created["majordomo_api_key_id"] == owner["id"]
    proxy_id = created["id"]

    stored = ok(env, "proxy-keys", "set-provider", proxy_id, "openai", "--json", stdin=PROVIDER_KEY + "\n")
    assert isinstance(stored, dict) and stored["provider"] == "openai"
    listed = ok(env, "proxy-keys", "list", "--json")
    assert isinstance(listed, list) and [(e["id"], e["providers"]) for e in listed] == [(proxy_id, ["openai"])]
    text = dump(env)
    # Neither secret in clear: the provider key is encrypted, the proxy key only hashed.
    assert PROVIDER_KEY not in text and created["key"] not in text
    assert hashlib.sha256(PROVIDER_KEY.encode()).hexdigest() in text
    assert hashlib.sha256(created["key"].encode()).hexdigest() in text

    # Rotation: a new current key, the old one still decrypts until everything is re-encrypted.
    new_key = str(ok(env, "secrets", "generate")).strip().splitlines()[-1]
    rotated_env = env | {"MAJORDOMO_SECRETS_KEY": new_key}
    refused = cli(rotated_env, "secrets", "rotate")
    assert refused.returncode == 1 and "MAJORDOMO_SECRETS_OLD_KEYS" in refused.stderr
    rotated_env["MAJORDOMO_SECRETS_OLD_KEYS"] = secrets_key
    first = ok(rotated_env, "secrets", "rotate", "--json")
    assert isinstance(first, dict) and (first["examined"], first["rotated"], first["current"]) == (1, 1, 0)
    assert first["secret_key_id"] != stored["secret_key_id"]
    again = ok(rotated_env, "secrets", "rotate", "--json")
    assert isinstance(again, dict) and (again["rotated"], again["current"]) == (0, 1)
    assert dump(rotated_env) != text  # re-encrypted under the new key

    removed = ok(env, "proxy-keys", "remove-provider", proxy_id, "openai", "--json")
    assert isinstance(removed, dict) and removed["providers"] == []
    revoked = ok(env, "proxy-keys", "revoke", proxy_id, "--json")
    assert isinstance(revoked, dict) and revoked["active"] is False and revoked["revoked_at"]


def test_refusals_say_why(env: dict[str, str]) -> None:
    env = env | {"MAJORDOMO_SECRETS_KEY": str(ok(env, "secrets", "generate")).strip().splitlines()[-1]}
    no_owner = cli(env, "proxy-keys", "create", "--name", "x", "--key", "not-a-key")
    assert no_owner.returncode == 1 and "does not exist" in no_owner.stderr
    owner = ok(env, "keys", "create", "--name", "o", "--json")
    assert isinstance(owner, dict)
    proxy = ok(env, "proxy-keys", "create", "--name", "p", "--key", owner["id"], "--json")
    assert isinstance(proxy, dict)
    unknown = cli(env, "proxy-keys", "set-provider", proxy["id"], "openia", stdin=PROVIDER_KEY)
    assert unknown.returncode == 2 and "unknown provider 'openia'" in unknown.stderr
    empty = cli(env, "proxy-keys", "set-provider", proxy["id"], "openai", stdin="")
    assert empty.returncode == 2 and "no provider key on standard input" in empty.stderr
    assert cli(env, "proxy-keys", "get", "nope").returncode == 1
    ok(env, "keys", "revoke", owner["id"])
    revoked_owner = cli(env, "proxy-keys", "create", "--name", "q", "--key", owner["id"])
    assert revoked_owner.returncode == 1 and "is revoked" in revoked_owner.stderr
