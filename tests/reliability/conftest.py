"""Fixtures for the fault-injection suite: a throwaway PostgreSQL cluster (its own port and data
directory, so tests may stop and crash it), the mock upstream in its own process, gateway
factories, and a recorder whose numbers end up in docs/reliability.md.

Set ``MAJORDOMO_RELIABILITY_RESULTS=path.json`` to keep every scenario's measurements in a file.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.reliability import Gateway, MockProcess, PgCluster, postgres_tools_missing

_RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    problem = postgres_tools_missing()
    if problem is not None:
        if os.environ.get("CI") == "true" or os.environ.get("MAJORDOMO_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"cannot start a throwaway PostgreSQL: {problem}", pytrace=False)
        pytest.skip(f"cannot start a throwaway PostgreSQL: {problem}")
    cluster = PgCluster().init()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.fixture(scope="session")
def mock_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockProcess]:
    mock = MockProcess(tmp_path_factory.mktemp("mock")).start()
    yield mock
    mock.stop()


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def make_gateway(request: pytest.FixtureRequest, mock_process: MockProcess,
                       tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """``await make_gateway("postgres" | "sqlite", **env)`` → a started Gateway on a fresh database.

    Several gateways can share a database and spool: ``make_gateway(database_url=...,
    spool_dir=...)``.  Every gateway still running at the end is killed; the cluster is restarted
    if a test left it stopped.
    """
    made: list[Gateway] = []
    cluster: PgCluster | None = None

    async def make(kind: str = "postgres", *, database_url: str | None = None, spool_dir: Path | None = None,
                   start: bool = True, key: tuple[str, str] | None = None, **env: str) -> Gateway:
        nonlocal cluster
        workdir = tmp_path / f"gw{len(made)}"
        workdir.mkdir(parents=True, exist_ok=True)
        if database_url is None:
            if kind == "sqlite":
                database_url = f"sqlite:///{tmp_path / 'majordomo.db'}"
            else:
                cluster = request.getfixturevalue("pg_cluster")
                if not cluster.running():
                    cluster.start()
                database_url = await cluster.create_database()
        extra = {"MAJORDOMO_WRITER_SPOOL_DIR": str(spool_dir or tmp_path / "spool")}
        extra.update({f"MAJORDOMO_{name.upper()}": value for name, value in env.items()})
        gateway = Gateway(database_url=database_url, upstream_url=mock_process.url, workdir=workdir,
                          extra_env=extra)
        if key is not None:
            gateway.key, gateway.key_id = key
        made.append(gateway)
        return gateway.start() if start else gateway

    yield make
    for gateway in made:
        if gateway.process is not None:
            gateway.kill()
    await mock_process.forget()  # the mock records every request; do not carry them over
    if "pg_cluster" in request.fixturenames or cluster is not None:
        live: PgCluster = request.getfixturevalue("pg_cluster")
        if not live.running():
            live.start()


@pytest.fixture
def record_result(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``record_result(**numbers)``: kept for the terminal summary and MAJORDOMO_RELIABILITY_RESULTS."""

    def record(**numbers: Any) -> None:
        entry = _RESULTS.setdefault(request.node.nodeid, {})
        entry.update(numbers)

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("reliability measurements")
    for test, numbers in _RESULTS.items():
        terminalreporter.write_line(f"{test}: {json.dumps(numbers, default=str)}")
    target = os.environ.get("MAJORDOMO_RELIABILITY_RESULTS")
    if target:
        path = Path(target)
        previous = json.loads(path.read_text()) if path.exists() else {}
        previous.setdefault("runs", {}).update(_RESULTS)
        previous["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                               "platform": platform.platform(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        path.write_text(json.dumps(previous, indent=2, default=str))
