"""The connection bounds on a real ``majordomo serve``: a 64 MiB header does not hold up anyone
else, and a flood of idle connections under a tight descriptor limit does not make real
requests fail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path

import aiohttp
import pytest

from tests.support import GatewayProcess
from tests.support.client import MESSAGES, post
from tests.support.upstream import MockUpstream

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def tight_gateway(mock_upstream: MockUpstream, tmp_path: Path) -> GatewayProcess:
    process = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'majordomo.db'}", upstream_url=mock_upstream.url,
                             workdir=tmp_path, fd_limit=256).start()
    yield process
    process.stop()


async def _health_latency(port: int) -> float:
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:100]
    return time.perf_counter() - started


def _send_huge_header(port: int, size: int, answers: list[bytes]) -> None:
    """Send a head with one ``size``-byte header from a blocking socket, reading what comes back
    at the same time (as the server answers long before the client is done sending)."""
    sock = socket.create_connection(("127.0.0.1", port))

    def read() -> None:
        received = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                received += chunk
        answers.append(received)

    reader = threading.Thread(target=read)
    reader.start()
    piece = b"a" * (1 << 20)
    with contextlib.suppress(OSError):
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nX-Big: ")
        for _ in range(size >> 20):
            sock.sendall(piece)
        sock.sendall(b"\r\n\r\n")
    reader.join(10)
    sock.close()


async def test_a_64_mib_header_gets_431_and_does_not_stall_other_requests(fresh_gateway: GatewayProcess) -> None:
    gw = fresh_gateway
    baseline = max([await _health_latency(gw.port) for _ in range(5)])
    answers: list[bytes] = []
    sender = threading.Thread(target=_send_huge_header, args=(gw.port, 64 << 20, answers))
    started = time.perf_counter()
    sender.start()
    latencies = []
    while sender.is_alive() or len(latencies) < 5:
        latencies.append(await _health_latency(gw.port))
        await asyncio.sleep(0.005)
    sender.join()
    print(f"sent for {time.perf_counter() - started:.3f}s; /health {sorted(latencies)[-3:]}; baseline {baseline}")
    assert answers and answers[0].startswith(b"HTTP/1.1 431"), answers[:1]
    # Before the head limit the parser joined the header piece by piece and /health waited seconds.
    assert max(latencies) < max(0.25, 10 * baseline), (baseline, sorted(latencies)[-5:])
    response, _ = await post(gw, "/v1/messages", MESSAGES)
    assert response.status == 200


async def test_an_idle_connection_flood_under_a_tight_descriptor_limit_fails_no_real_request(
        tight_gateway: GatewayProcess) -> None:
    gw = tight_gateway
    assert "server.max_connections lowered from 4096 to 80" in gw.log_text()
    flood: list[asyncio.StreamWriter] = []
    stop, flooded = asyncio.Event(), asyncio.Event()

    async def keep_flooding() -> None:
        while not stop.is_set():
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            except OSError:
                await asyncio.sleep(0.01)
                continue
            flood.append(writer)
            if len(flood) >= 600:  # far more idle connections than the gateway has descriptors
                flooded.set()
            if len(flood) % 50 == 0:
                await asyncio.sleep(0.005)

    flooding = asyncio.get_running_loop().create_task(keep_flooding())
    await asyncio.wait_for(flooded.wait(), 30)
    statuses = []
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(20):
                async with session.post(gw.url + "/v1/chat/completions", json=CHAT,
                                        headers={"X-Majordomo-Key": gw.key}) as response:
                    await response.read()
                    statuses.append(response.status)
    finally:
        stop.set()
        await flooding
        for writer in flood:
            writer.close()
    assert statuses == [200] * 20
    log = gw.log_text()
    assert "Too many open files" not in log and "Traceback" not in log
