"""``majordomo proxy-keys ...``: one secret per app that stands for a Majordomo key and the app's
provider keys, which the gateway keeps encrypted and puts in place of the proxy key on the way out."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
import uuid_utils

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.auth.keys import hash_secret
from majordomo_gateway.auth.proxy_keys import PROXY_KEY_PREFIX, generate_proxy_key, proxy_key_context
from majordomo_gateway.auth.secrets import Keyring, SealedValue, SecretsError
from majordomo_gateway.cli.context import connected, settings_from
from majordomo_gateway.config import pricing_ids
from majordomo_gateway.storage.database import Database
from majordomo_gateway.storage.records import ProviderSecretRecord, ProxyKeyRecord

EPILOG = """\
example:
  export MAJORDOMO_SECRETS_KEY=...            # `majordomo secrets generate`, for the gateway too
  majordomo keys create --name backend        # -> mdm_sk_... and its id
  majordomo proxy-keys create --name backend-app --key KEY_ID     # -> mdm_pk_... (shown once)
  printf %s "$OPENAI_API_KEY" | majordomo proxy-keys set-provider PROXY_KEY_ID openai
  # the app then needs one secret: OpenAI(base_url="http://localhost:7680/v1", api_key="mdm_pk_...")
"""


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser(
        "proxy-keys", help="manage proxy keys (mdm_pk_...): provider keys kept by the gateway",
        description="A proxy key (mdm_pk_...) is the only secret an app needs: it names a Majordomo key, and the "
                    "gateway replaces it with the provider key stored for the provider a request goes to. Provider "
                    "keys are stored encrypted under MAJORDOMO_SECRETS_KEY.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = group.add_subparsers(dest="proxy_keys_command", metavar="COMMAND", required=True)
    create = sub.add_parser("create", help="create a proxy key and print it (shown only once)")
    create.add_argument("--name", required=True, help="a name to recognise it by (rows record it as the alias)")
    create.add_argument("--key", required=True, metavar="MAJORDOMO_KEY_ID",
                        help="the id of the Majordomo key its requests are recorded under")
    listing = sub.add_parser("list", help="list proxy keys and the providers each has a key for")
    get = sub.add_parser("get", help="show one proxy key")
    get.add_argument("id")
    revoke = sub.add_parser("revoke", help="revoke a proxy key: requests with it get 401")
    revoke.add_argument("id")
    set_provider = sub.add_parser(
        "set-provider", help="store the provider key for PROVIDER, read from stdin",
        description="Store (or replace) the provider key used for PROVIDER. The key is read from standard input "
                    "(a prompt on a terminal), never from the command line, so it stays out of shell history and "
                    "`ps`.")
    set_provider.add_argument("id")
    set_provider.add_argument("provider", help="openai, anthropic, gemini, or a provider from your configuration")
    remove = sub.add_parser("remove-provider", help="forget the provider key for PROVIDER")
    remove.add_argument("id")
    remove.add_argument("provider")
    handlers = {create: _create, listing: _list, get: _get, revoke: _revoke, set_provider: _set_provider,
                remove: _remove_provider}
    for parser, handler in handlers.items():
        parser.add_argument("--json", action="store_true", help="print JSON instead of text")
        common(parser)
        parser.set_defaults(handler=lambda a, h=handler: _run(h, a))


def _run(command: Callable[[argparse.Namespace, Keyring], Any], args: argparse.Namespace) -> int:
    try:
        keyring = Keyring.from_environment()
    except SecretsError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 2
    return int(asyncio.run(command(args, keyring)))


def _key_data(record: ProxyKeyRecord, providers: list[ProviderSecretRecord]) -> dict[str, Any]:
    data: dict[str, Any] = {name: value.isoformat() if isinstance(value, datetime) else value
                            for name, value in asdict(record).items()}
    data["key_prefix"] = record.key_prefix
    data["active"] = record.revoked_at is None
    data["providers"] = [p.provider for p in providers]
    return data


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(data).decode())
        return
    width = max(len(k) for k in data)
    for name, value in data.items():
        shown = ", ".join(value) if isinstance(value, list) else "" if value is None else value
        print(f"{name.ljust(width)}  {shown}")


def _not_found(proxy_key_id: str) -> int:
    print(f"majordomo: no proxy key with id {proxy_key_id} (see `majordomo proxy-keys list`)", file=sys.stderr)
    return 1


async def _create(args: argparse.Namespace, keyring: Keyring) -> int:
    async with connected(args) as database:
        owner = await database.get_key(args.key)
        if owner is None or not owner.active:
            state = "is revoked" if owner is not None else "does not exist"
            print(f"majordomo: Majordomo key {args.key} {state} (see `majordomo keys list`)", file=sys.stderr)
            return 1
        key = generate_proxy_key()
        record = await database.proxy_keys.create(str(uuid_utils.uuid7()), args.name, owner.id, hash_secret(key),
                                                  key[: len(PROXY_KEY_PREFIX) + 4], datetime.now(UTC))
        await record_action(database, cli_actor(), "proxy_key.create", record.id,
                            {"name": record.name, "majordomo_api_key_id": owner.id})
    if args.json:
        _show(_key_data(record, []) | {"key": key}, True)
    else:
        print(key)
        print(f"Created proxy key {record.id} ({record.name}) for Majordomo key {owner.name}. Store it now: it "
              f"will not be shown again. Next: majordomo proxy-keys set-provider {record.id} openai",
              file=sys.stderr)
    return 0


async def _list(args: argparse.Namespace, keyring: Keyring) -> int:
    async with connected(args) as database:
        records = await database.proxy_keys.all()
        entries = [_key_data(r, await database.proxy_keys.providers(r.id)) for r in records]
    if args.json:
        print(orjson.dumps(entries).decode())
        return 0
    if not entries:
        print("no proxy keys yet: create one with `majordomo proxy-keys create --name NAME --key KEY_ID`")
        return 0
    rows = [("ID", "NAME", "PREFIX", "STATUS", "PROVIDERS")]
    rows += [(e["id"], e["name"], e["key_prefix"] + "…", "active" if e["active"] else "revoked",
              ", ".join(e["providers"]) or "-") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _get(args: argparse.Namespace, keyring: Keyring) -> int:
    async with connected(args) as database:
        record = await database.proxy_keys.get(args.id)
        if record is None:
            return _not_found(args.id)
        _show(_key_data(record, await database.proxy_keys.providers(record.id)), args.json)
    return 0


async def _revoke(args: argparse.Namespace, keyring: Keyring) -> int:
    async with connected(args) as database:
        record = await database.proxy_keys.revoke(args.id, datetime.now(UTC))
        if record is None:
            return _not_found(args.id)
        await record_action(database, cli_actor(), "proxy_key.revoke", record.id, {"name": record.name})
        _show(_key_data(record, await database.proxy_keys.providers(record.id)), args.json)
    return 0


def _read_provider_key(provider: str) -> str:
    if sys.stdin.isatty():
        return getpass.getpass(f"{provider} API key (input hidden): ").strip()
    return sys.stdin.read().strip()


def _check_provider(args: argparse.Namespace) -> str | None:
    known = sorted(pricing_ids(settings_from(args)))
    if args.provider not in known:
        print(f"majordomo: unknown provider {args.provider!r}; the configured ones are {', '.join(known)}",
              file=sys.stderr)
        return None
    return str(args.provider)


async def _set_provider(args: argparse.Namespace, keyring: Keyring) -> int:
    provider = _check_provider(args)
    if provider is None:
        return 2
    secret = _read_provider_key(provider)
    if not secret or any(ch.isspace() for ch in secret):
        print("majordomo: no provider key on standard input (pipe it in: printf %s \"$KEY\" | majordomo ...); "
              "a key has no spaces or line breaks", file=sys.stderr)
        return 2
    async with connected(args) as database:
        record = await database.proxy_keys.get(args.id)
        if record is None:
            return _not_found(args.id)
        sealed = keyring.seal(secret, proxy_key_context(record.id, provider))
        stored = await database.proxy_keys.set_provider(record.id, provider, sealed.key_id, sealed.blob,
                                                        hash_secret(secret), datetime.now(UTC))
        await record_action(database, cli_actor(), "proxy_key.set_provider", record.id, {"provider": provider})
    _show({"proxy_key_id": stored.proxy_key_id, "provider": stored.provider, "secret_key_id": stored.secret_key_id,
           "updated_at": stored.updated_at.isoformat()}, args.json)
    return 0


async def _remove_provider(args: argparse.Namespace, keyring: Keyring) -> int:
    async with connected(args) as database:
        record = await database.proxy_keys.get(args.id)
        if record is None:
            return _not_found(args.id)
        if not await database.proxy_keys.remove_provider(record.id, args.provider, datetime.now(UTC)):
            print(f"majordomo: proxy key {record.id} has no {args.provider} key", file=sys.stderr)
            return 1
        await record_action(database, cli_actor(), "proxy_key.remove_provider", record.id,
                            {"provider": args.provider})
        _show(_key_data(record, await database.proxy_keys.providers(record.id)), args.json)
    return 0


async def reseal_all(database: Database, keyring: Keyring) -> dict[str, int]:
    """Re-encrypt every provider key not under the current secrets key (``majordomo secrets rotate``)."""
    counts = {"examined": 0, "rotated": 0, "current": 0}
    for secret in await database.proxy_keys.all_providers():
        counts["examined"] += 1
        if secret.secret_key_id == keyring.key_id:
            counts["current"] += 1
            continue
        context = proxy_key_context(secret.proxy_key_id, secret.provider)
        plain = keyring.open(SealedValue(secret.secret_key_id, secret.ciphertext), context)
        sealed = keyring.seal(plain, context)
        if await database.proxy_keys.reseal(secret, sealed.key_id, sealed.blob):
            counts["rotated"] += 1
    return counts
