"""``majordomo db ...``"""

from __future__ import annotations

import argparse
import asyncio

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
        print(f"majordomo: database unavailable: {exc}")
        return 1
    print("applied: " + ", ".join(applied) if applied else "database schema is up to date")
    return 0
