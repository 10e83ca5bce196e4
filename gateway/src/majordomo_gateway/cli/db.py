"""``majordomo db ...``"""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson

from majordomo_gateway.cli.context import settings_from
from majordomo_gateway.storage.database import DatabaseUnavailable, open_database


def migrate(args: argparse.Namespace) -> int:
    async def run() -> list[str]:
        database = open_database(settings_from(args).database.url)
        await database.connect()
        try:
            return await database.migrate()
        finally:
            await database.close()

    try:
        applied = asyncio.run(run())
    except DatabaseUnavailable as exc:
        print(f"majordomo: database unavailable: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(orjson.dumps({"applied": applied}).decode())
        return 0
    print("applied: " + ", ".join(applied) if applied else "database schema is up to date")
    return 0
