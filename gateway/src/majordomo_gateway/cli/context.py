"""Open the configured database for a one-shot CLI command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from majordomo_gateway.config import Settings, load_settings
from majordomo_gateway.storage.database import Database, DatabaseUnavailable, open_database


def settings_from(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, database_url=getattr(args, "database_url", None))


@asynccontextmanager
async def connected(args: argparse.Namespace) -> AsyncIterator[Database]:
    settings = settings_from(args)
    database = open_database(settings.database.url)
    try:
        await database.connect()
        await database.migrate()
    except DatabaseUnavailable as exc:
        print(f"majordomo: database unavailable: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    try:
        yield database
    finally:
        await database.close()
