"""``majordomo secrets generate|rotate``: the key provider keys are encrypted under."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

import orjson

from majordomo_gateway.admin.audit import cli_actor, record_action
from majordomo_gateway.auth.secrets import KEY_VARIABLE, OLD_KEYS_VARIABLE, Keyring, SecretsError, generate_secrets_key
from majordomo_gateway.cli.context import connected
from majordomo_gateway.cli.proxy_keys import reseal_all


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                common: Callable[[argparse.ArgumentParser], None]) -> None:
    group = commands.add_parser("secrets", help="the encryption key of stored provider keys",
                                description=f"Provider keys of proxy keys are stored encrypted (AES-256-GCM) under "
                                            f"{KEY_VARIABLE}.")
    sub = group.add_subparsers(dest="secrets_command", metavar="COMMAND", required=True)
    generate = sub.add_parser("generate", help=f"print a new {KEY_VARIABLE} (its last line)")
    generate.set_defaults(handler=_generate)
    rotate = sub.add_parser(
        "rotate", help="re-encrypt every stored provider key under the current key",
        description=f"Set {KEY_VARIABLE} to the new key and {OLD_KEYS_VARIABLE} to the old one(s), comma-separated; "
                    "this re-encrypts every stored value under the new key. Afterwards the old keys can be "
                    f"dropped from {OLD_KEYS_VARIABLE}. Safe to rerun.")
    rotate.add_argument("--json", action="store_true", help="print JSON instead of text")
    common(rotate)
    rotate.set_defaults(handler=_rotate)


def _generate(args: argparse.Namespace) -> int:
    print(f"# A new secrets key. Set it as {KEY_VARIABLE} for the gateway and the majordomo command;")
    print("# keep it as safe as a database password: without it stored provider keys cannot be read.")
    print(generate_secrets_key())
    return 0


def _rotate(args: argparse.Namespace) -> int:
    try:
        keyring = Keyring.from_environment()
    except SecretsError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 2

    async def run() -> dict[str, int]:
        async with connected(args) as database:
            counts = await reseal_all(database, keyring)
            await record_action(database, cli_actor(), "secrets.rotate", keyring.key_id, counts)
            return counts

    try:
        counts = asyncio.run(run())
    except SecretsError as exc:
        print(f"majordomo: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(orjson.dumps(counts | {"secret_key_id": keyring.key_id}).decode())
    else:
        print(f"{counts['rotated']} provider keys re-encrypted under {keyring.key_id}; "
              f"{counts['current']} already were ({counts['examined']} examined)")
    return 0
