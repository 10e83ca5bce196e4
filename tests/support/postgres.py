"""Throwaway databases on the machine's PostgreSQL (``MAJORDOMO_TEST_PG_URL``, default 127.0.0.1:5432)."""

from __future__ import annotations

import os
import uuid

import asyncpg

from tests.support.processes import run_sync

PG_ADMIN_URL = os.environ.get("MAJORDOMO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


class PostgresServer:
    """Creates throwaway databases on the machine's PostgreSQL and drops them afterwards."""

    def __init__(self, admin_url: str = PG_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.created: list[str] = []

    def url_for(self, name: str) -> str:
        base = self.admin_url.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def _admin(self, *statements: str) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                for statement in statements:
                    await conn.execute(statement)
            finally:
                await conn.close()

        run_sync(run())

    def create(self) -> str:
        """A new empty database; usable from sync and async code alike."""
        name = f"majordomo_test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop_all(self) -> None:
        if self.created:
            self._admin(*(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in self.created))
        self.created.clear()


def postgres_available(admin_url: str = PG_ADMIN_URL) -> str | None:
    """None when reachable, else why not."""

    async def probe() -> None:
        conn = await asyncpg.connect(admin_url, timeout=3)
        await conn.close()

    try:
        run_sync(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
