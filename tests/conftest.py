"""Fixtures: the repo's mock upstream, throwaway PostgreSQL databases, and real gateway processes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support import GatewayProcess, PostgresServer, postgres_available

if TYPE_CHECKING:
    from tests.support.upstream import MockUpstream


def _require_postgres() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("MAJORDOMO_TEST_REQUIRE_POSTGRES") == "1"


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    from tests.support.upstream import MockUpstream

    with MockUpstream() as mock:
        yield mock


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    problem = postgres_available()
    if problem is not None:
        message = f"PostgreSQL at 127.0.0.1:5432 is not reachable ({problem})"
        if _require_postgres():
            pytest.fail(message + "; CI requires it", pytrace=False)
        pytest.skip(message)
    server = PostgresServer()
    yield server
    server.drop_all()


async def _database_url(kind: str, request: pytest.FixtureRequest, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / 'majordomo.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create()


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
async def gateway(request: pytest.FixtureRequest, mock_upstream: MockUpstream,
                  tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    """One gateway per database kind, shared by the tests that only read their own rows."""
    workdir = tmp_path_factory.mktemp(f"gateway-{request.param}")
    url = await _database_url(request.param, request, workdir)
    process = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=workdir).start()
    yield process
    process.stop()


@pytest.fixture
async def fresh_gateway(request: pytest.FixtureRequest, mock_upstream: MockUpstream,
                        tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    """A gateway of its own on an empty database, for tests that count or aggregate rows.

    Parametrise indirectly with "sqlite" or "postgres" (default sqlite).
    """
    kind = getattr(request, "param", "sqlite")
    url = await _database_url(kind, request, tmp_path)
    process = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path).start()
    yield process
    process.stop()
