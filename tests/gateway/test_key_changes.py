"""A key or proxy key revoked with the CLI is refused by every process within a second.

Two uvicorn workers (``majordomo serve --workers 2``) and two ``serve`` processes, each on SQLite
and on PostgreSQL.  Every process (every worker, told apart by the pid ``/readyz`` reports on the
same connection) first serves the key, so that its cache holds it; then the key is revoked by
the CLI, and each process is asked until a second has passed and many times after: no answer
after the first second may be a 200.  The cache's TTL is 10 s, so without the change feed the
processes would keep serving the key for up to 10 s.  A provider key replaced with
``proxy-keys set-provider`` is, a second later, the one every process sends upstream.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from majordomo_gateway.auth.secrets import generate_secrets_key

from tests.support import BIN, GatewayProcess, PostgresServer
from tests.support.upstream import MockUpstream

OPENAI_KEY = "sk-proj-changes-0123456789"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
PROPAGATION_LIMIT = 1.0
# after the limit, every process must refuse this many times in a row
PROBES_AFTER_LIMIT = 8


@dataclass
class Fleet:
    """Gateway processes on one database; ``urls`` are where to reach them (one per process,
    or one for a process with several workers), ``processes`` how many answer in all."""

    gateways: list[GatewayProcess]
    processes: int
    latencies: dict[str, float] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [g.url for g in self.gateways]

    @property
    def first(self) -> GatewayProcess:
        return self.gateways[0]


async def _probe(url: str, headers: dict[str, str]) -> tuple[int, int]:
    """(pid of the process that answered, status of a chat completion) over one fresh connection."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1, force_close=False)) as session:
        async with session.get(url + "/readyz") as response:
            pid = int((await response.json())["writer"]["pid"])
        async with session.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as response:
            await response.read()
            return pid, response.status


async def _warm(fleet: Fleet, headers: dict[str, str]) -> set[int]:
    """Until every process has served ``headers`` twice (so its cache holds the key)."""
    served: dict[int, int] = {}
    for attempt in range(400):
        pid, status = await _probe(fleet.urls[attempt % len(fleet.urls)], headers)
        assert status == 200, status
        served[pid] = served.get(pid, 0) + 1
        if len(served) >= fleet.processes and min(served.values()) >= 2:
            return set(served)
    raise AssertionError(f"not every process answered: {served}")


async def _refused_everywhere(fleet: Fleet, headers: dict[str, str], pids: set[int], *revoke: str) -> float:
    """Probe every process while the CLI revokes, and on until each has refused many times after
    the limit.  Returns the propagation latency: from the revocation's own timestamp (the CLI's
    ``revoked_at``, taken just before its UPDATE) to the first refusal of the last process to refuse."""
    cli = asyncio.ensure_future(asyncio.to_thread(_cli, fleet.first, *revoke))
    revoked_at: float | None = None
    last_served: dict[int, float] = {}
    first_refusal: dict[int, float] = {}
    after_limit: dict[int, int] = {}
    attempt = 0
    started = time.time()
    while revoked_at is None or min(after_limit.get(pid, 0) for pid in pids) < PROBES_AFTER_LIMIT:
        pid, status = await _probe(fleet.urls[attempt % len(fleet.urls)], headers)
        attempt += 1
        now = time.time()
        assert pid in pids, f"an unknown process {pid} answered"
        if status == 200:
            assert pid not in first_refusal, f"process {pid} served the key again after refusing it"
            last_served[pid] = now
        else:
            assert status == 401, status
            first_refusal.setdefault(pid, now)
        if revoked_at is None and cli.done():
            revoked_at = datetime.fromisoformat(cli.result()["revoked_at"]).timestamp()
        if revoked_at is not None:
            late = [p for p, t in last_served.items() if t - revoked_at > PROPAGATION_LIMIT]
            assert not late, f"processes {late} served the revoked key more than {PROPAGATION_LIMIT} s after it"
            if status == 401 and now - revoked_at > PROPAGATION_LIMIT:
                after_limit[pid] = after_limit.get(pid, 0) + 1
        assert now - started < 30, f"too few answers from every process: {after_limit}"
    assert revoked_at is not None and set(first_refusal) == pids
    return max(first_refusal.values()) - revoked_at


def _cli(gateway: GatewayProcess, *args: str, stdin: str | None = None) -> dict[str, Any]:
    result = subprocess.run([str(BIN / "majordomo"), *args, "--json"], input=stdin, capture_output=True, text=True,
                            env=gateway.env(), cwd=gateway.workdir, timeout=60)
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = orjson.loads(result.stdout)
    return parsed


@pytest.fixture(params=["sqlite-workers", "sqlite-processes", "postgres-workers", "postgres-processes"])
async def fleet(request: pytest.FixtureRequest, mock_upstream: MockUpstream, tmp_path: Path) -> AsyncIterator[Fleet]:
    database, topology = request.param.split("-")
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'majordomo.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres")
        url = server.create()
    env = {"MAJORDOMO_SECRETS_KEY": generate_secrets_key()}
    if topology == "workers":
        env["MAJORDOMO_SERVER_WORKERS"] = "2"
    first = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path / "a",
                           extra_env=env).start()
    gateways = [first]
    try:
        if topology == "processes":
            gateways.append(GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=tmp_path / "b",
                                           extra_env=env, key=first.key, key_id=first.key_id).start())
        yield Fleet(gateways, processes=2)
    finally:
        for gateway in gateways:
            gateway.stop()


async def test_changes_reach_every_process_within_a_second(fleet: Fleet, mock_upstream: MockUpstream,
                                                           request: pytest.FixtureRequest) -> None:
    """One fleet for three changes (starting fleets is most of this test's time)."""
    await _replaced_provider_key_is_used_everywhere(fleet, mock_upstream)
    gateway = fleet.first
    # A proxy key first (its own Majordomo key), then a Majordomo key presented directly.
    owner = _cli(gateway, "keys", "create", "--name", "proxy-owner")
    proxy = _cli(gateway, "proxy-keys", "create", "--name", "app", "--key", owner["id"])
    _cli(gateway, "proxy-keys", "set-provider", proxy["id"], "openai", stdin=OPENAI_KEY)
    proxy_headers = {"Authorization": f"Bearer {proxy['key']}"}
    pids = await _warm(fleet, proxy_headers)
    proxy_latency = await _refused_everywhere(fleet, proxy_headers, pids, "proxy-keys", "revoke", proxy["id"])

    key_headers = {"X-Majordomo-Key": gateway.key, "Authorization": f"Bearer {OPENAI_KEY}"}
    assert await _warm(fleet, key_headers) == pids
    key_latency = await _refused_everywhere(fleet, key_headers, pids, "keys", "revoke", gateway.key_id)
    print(f"\n{request.node.callspec.id}: every process refused {proxy_latency * 1000:.0f} ms (proxy key), "
          f"{key_latency * 1000:.0f} ms (key) after the revocation")




async def _replaced_provider_key_is_used_everywhere(fleet: Fleet, mock_upstream: MockUpstream) -> None:
    gateway = fleet.first
    owner = _cli(gateway, "keys", "create", "--name", "rotating-owner")
    proxy = _cli(gateway, "proxy-keys", "create", "--name", "rotating", "--key", owner["id"])
    _cli(gateway, "proxy-keys", "set-provider", proxy["id"], "openai", stdin="sk-old-0000")
    headers = {"Authorization": f"Bearer {proxy['key']}"}
    pids = await _warm(fleet, headers)
    _cli(gateway, "proxy-keys", "set-provider", proxy["id"], "openai", stdin="sk-new-1111")
    changed_at = time.monotonic()
    await asyncio.sleep(PROPAGATION_LIMIT)
    mock_upstream.clear()
    answered: dict[int, int] = {}
    attempt = 0
    while min((answered.get(pid, 0) for pid in pids), default=0) < PROBES_AFTER_LIMIT:
        pid, status = await _probe(fleet.urls[attempt % len(fleet.urls)], headers)
        attempt += 1
        assert status == 200
        answered[pid] = answered.get(pid, 0) + 1
        assert time.monotonic() - changed_at < 20
    sent = {r.headers["authorization"] for r in mock_upstream.requests}
    assert sent == {"Bearer sk-new-1111"}, sent
