"""Fault-injection plumbing: a throwaway PostgreSQL cluster, the mock upstream as its own process,
gateway processes that can be signalled as a group, a bounded load generator, and the accounting
that compares what clients saw answered with what reached ``llm_requests``.

Everything here is real: real processes on loopback sockets, a real PostgreSQL server started from
``/usr/lib/postgresql/15/bin`` on its own port and data directory (never the machine's shared
server), real signals.  Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import uuid_utils
from majordomo_gateway.auth.keys import display_prefix, generate_key, hash_secret
from majordomo_gateway.storage.database import open_database

from tests.support import BIN, REPO, GatewayProcess, free_port, run_sync

PG_BIN = Path(os.environ.get("MAJORDOMO_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_OS_USER = "postgres"
SEQ_HEADER = "X-Majordomo-Seq"  # stored as raw_metadata->>'Seq': the client's own request number
WARM = "warm-"  # Seq prefix of requests outside the accounting (warming caches)
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
CHAT_STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
OPENAI_KEY = "sk-test-openai-reliability-0123456789"


def postgres_tools_missing() -> str | None:
    """None when a throwaway cluster can be made here, else why not.  PostgreSQL refuses to run as
    root: as root the cluster runs as the ``postgres`` OS user, otherwise as the current user."""
    if not (PG_BIN / "initdb").exists():
        return f"no PostgreSQL binaries in {PG_BIN} (set MAJORDOMO_TEST_PG_BIN)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_OS_USER)
        except KeyError:
            return f"running as root and there is no {PG_OS_USER!r} OS user to run PostgreSQL as"
        if shutil.which("runuser") is None:
            return "running as root and runuser(1) is missing"
    return None


def _as_postgres(args: Sequence[str], *, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = [str(a) for a in args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", PG_OS_USER, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=check)


class PgCluster:
    """A PostgreSQL cluster of our own: its own data directory (under /tmp; owned by postgres when
    we are root) and port, so tests may stop, crash and restart it at will.  Never the machine's
    shared server."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="majordomo-reliability-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam(PG_OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> PgCluster:
        _as_postgres([PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions"])
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.root}'\nmax_connections = 100\n"
                "shared_buffers = 64MB\nlog_min_messages = warning\n"
                "lock_timeout = 0\nstatement_timeout = 0\n"
            )
        return self

    def start(self, timeout: float = 30) -> None:
        _as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", int(timeout), "start"],
                     timeout=timeout + 10)

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``mode``: smart, fast (clients disconnected, clean) or immediate (like a crash)."""
        _as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", int(timeout), "stop"],
                     timeout=timeout + 10, check=False)

    def running(self) -> bool:
        return _as_postgres([PG_BIN / "pg_ctl", "-D", self.data, "status"], check=False).returncode == 0

    def destroy(self) -> None:
        if self.data.exists() and self.running():
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    async def create_database(self) -> str:
        name = f"reliability_{uuid.uuid4().hex[:10]}"
        conn = await asyncpg.connect(self.url(), timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


class MockProcess:
    """``python -m tests.support.upstream`` in its own process, so it does not share a GIL with the
    load generator."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "mock-upstream.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.upstream", "--port", str(self.port)],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        wait_for_port(self.port, self.process, self.log_path)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    async def forget(self) -> None:
        """Drop the mock's recorded requests (it keeps every one; long runs would grow it)."""
        async with aiohttp.ClientSession() as session, session.delete(self.url + "/_mock/requests") as r:
            await r.read()


def wait_for_port(port: int, process: subprocess.Popen[bytes], log_path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited at start:\n{log_path.read_text(errors='replace')[-4000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s:\n{log_path.read_text(errors='replace')[-4000:]}")


@dataclass
class Gateway(GatewayProcess):
    """``GatewayProcess`` in its own process group: with ``--workers N`` a signal reaches the
    uvicorn supervisor and every worker, and RSS is summed over all of them."""

    def start(self) -> Gateway:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(BIN / "majordomo"), "serve"], env=self.env(), cwd=self.workdir,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.process, self.log_path)
        if not self.key:
            # What `majordomo keys create` does, without starting a Python process for it: the
            # gateway listens only once it has migrated, so the table is there.
            self.key, self.key_id = run_sync(_create_key(self.database_url))
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pids(self) -> list[int]:
        """The serve process and its children (uvicorn workers)."""
        if self.process is None or self.process.poll() is not None:
            return []
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
        return found

    def rss_mb(self) -> float:
        return round(sum(rss_kb(pid) for pid in self.pids()) / 1024, 1)

    def kill(self) -> None:
        """SIGKILL the whole group: no drain, no cleanup, exactly what a crash or the OOM killer does."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None

    def terminate(self, timeout: float = 60) -> tuple[int | None, float]:
        """SIGTERM (the supervisor forwards it to workers); returns (exit code, seconds to exit)."""
        if self.process is None:
            return None, 0.0
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            code = None
        self.process = None
        return code, round(time.monotonic() - started, 2)

    def stop(self, sig: int | None = None) -> int | None:
        if sig == signal.SIGKILL:
            self.kill()
            return -9
        code, _ = self.terminate()
        return code

    async def readyz(self, timeout: float = 5) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(self.url + "/readyz") as response:
            return response.status, await response.json(content_type=None)


async def _create_key(database_url: str) -> tuple[str, str]:
    database = open_database(database_url)
    await database.connect()
    try:
        key = generate_key()
        record = await database.create_key(str(uuid_utils.uuid7()), "reliability", None, hash_secret(key),
                                           display_prefix(key), datetime.now(UTC))
    finally:
        await database.close()
    return key, record.id


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- load --------------------------------------------------------------------------------------

@dataclass(slots=True)
class Outcome:
    seq: str
    started: float
    ended: float = 0.0
    status: int | None = None
    request_id: str | None = None  # X-Majordomo-Request-Id: the id of the row this request must have
    complete: bool = False  # the whole body arrived
    error: str | None = None

    @property
    def answered(self) -> bool:
        return self.request_id is not None


@dataclass
class LoadResult:
    outcomes: list[Outcome]
    duration: float
    not_sent: int = 0  # open loop: ticks skipped because max_in_flight requests were pending

    @property
    def answered(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.answered]

    def statuses(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            name = str(o.status) if o.status is not None else f"no answer ({o.error})"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    def latency_ms(self, *, only_ok: bool = True) -> dict[str, float]:
        values = sorted((o.ended - o.started) * 1000 for o in self.outcomes
                        if o.ended and (not only_ok or (o.status == 200 and o.complete)))
        if not values:
            return {}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))], 1)

        return {"p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": round(values[-1], 1)}

    def rate(self) -> float:
        ok = sum(1 for o in self.outcomes if o.status == 200 and o.complete)
        return round(ok / self.duration, 1) if self.duration else 0.0


class Load:
    """Sends chat completions (streamed or not) to one or more gateways, each with a unique
    ``X-Majordomo-Seq``, and records what every client saw.  Bounded by count and by time."""

    def __init__(self, urls: str | Sequence[str], key: str, *, stream: bool = False,
                 mock_headers: dict[str, str] | None = None, timeout: float = 60, run: str | None = None) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        self.key = key
        self.stream = stream
        self.timeout = timeout
        self.run = run or uuid.uuid4().hex[:8]
        self.headers = {"X-Majordomo-Key": key, "Content-Type": "application/json",
                        "Authorization": f"Bearer {OPENAI_KEY}", **(mock_headers or {})}
        self.body = orjson.dumps(CHAT_STREAM if stream else CHAT)
        self.outcomes: list[Outcome] = []
        self._n = 0
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None

    def stop(self) -> None:
        self._stop.set()

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=self.timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def one(self) -> Outcome:
        assert self._session is not None
        self._n += 1
        n = self._n
        outcome = Outcome(seq=f"{self.run}-{n}", started=time.monotonic())
        self.outcomes.append(outcome)
        url = self.urls[n % len(self.urls)] + "/v1/chat/completions"
        try:
            async with self._session.post(url, data=self.body,
                                          headers={**self.headers, SEQ_HEADER: outcome.seq}) as response:
                outcome.status = response.status
                outcome.request_id = response.headers.get("X-Majordomo-Request-Id")
                body = await response.read()
                outcome.complete = not self.stream or response.status != 200 or body.rstrip().endswith(b"[DONE]")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            outcome.error = type(exc).__name__
        outcome.ended = time.monotonic()
        return outcome

    async def closed_loop(self, concurrency: int, *, duration: float, max_requests: int) -> LoadResult:
        """``concurrency`` clients, each sending its next request when the last one is answered."""
        started = time.monotonic()
        deadline = started + duration
        first = len(self.outcomes)

        async def client() -> None:
            while not self._stop.is_set() and time.monotonic() < deadline and self._n < max_requests:
                outcome = await self.one()
                if outcome.status is None:
                    await asyncio.sleep(0.02)  # the gateway is gone: do not spin

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return LoadResult(self.outcomes[first:], time.monotonic() - started)

    async def open_loop(self, rate: float, *, duration: float, max_in_flight: int) -> LoadResult:
        """A new request every 1/rate seconds whatever happens to the earlier ones (arrivals do not
        slow down when the gateway does), at most ``max_in_flight`` pending."""
        started = time.monotonic()
        first = len(self.outcomes)
        tasks: set[asyncio.Task[Outcome]] = set()
        not_sent = 0
        total = int(rate * duration)
        for i in range(total):
            if self._stop.is_set():
                break
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                not_sent += 1
                continue
            task = asyncio.get_running_loop().create_task(self.one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout + 5)
        return LoadResult(self.outcomes[first:], time.monotonic() - started, not_sent)


# -- watching the gateway --------------------------------------------------------------------

@dataclass
class Sample:
    t: float
    status: int | None
    body: dict[str, Any]
    rss_mb: float


@dataclass
class Watcher:
    """Samples ``/readyz`` and RSS every ``interval`` seconds while a scenario runs."""

    gateways: Sequence[Gateway]
    interval: float = 0.25
    samples: list[Sample] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _t0: float = field(default_factory=time.monotonic)

    async def _loop(self) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            for _ in range(100_000):
                for gw in self.gateways:
                    status, body = None, {}
                    if gw.process is not None:
                        with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError, ValueError):
                            async with session.get(gw.url + "/readyz") as response:
                                status, body = response.status, await response.json(content_type=None)
                    self.samples.append(Sample(round(time.monotonic() - self._t0, 2), status, body, gw.rss_mb()))
                await asyncio.sleep(self.interval)

    def start(self) -> Watcher:
        self._t0 = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._loop())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def writer(self, name: str) -> list[Any]:
        return [s.body.get("writer", {}).get(name) for s in self.samples if s.body]

    def max_writer(self, name: str) -> Any:
        values = [v for v in self.writer(name) if v is not None]
        return max(values) if values else None

    def peak_rss_mb(self) -> float:
        return max((s.rss_mb for s in self.samples), default=0.0)

    def statuses(self) -> set[int | None]:
        return {s.status for s in self.samples}


# -- accounting -------------------------------------------------------------------------------

@dataclass
class Accounting:
    sent: int
    answered: int
    rows: int
    lost: list[Outcome]
    duplicated: int  # client requests (Seq) with more than one row
    foreign: int  # rows whose Seq no client sent
    mismatched: int  # rows whose id is not the X-Majordomo-Request-Id that client saw
    unanswered_with_row: int  # requests that never saw an answer but were recorded anyway

    def as_dict(self) -> dict[str, int]:
        return {"sent": self.sent, "answered": self.answered, "rows": self.rows, "lost": len(self.lost),
                "duplicated": self.duplicated, "foreign": self.foreign, "mismatched": self.mismatched,
                "unanswered_with_row": self.unanswered_with_row}


async def account(gateway: GatewayProcess, outcomes: Iterable[Outcome]) -> Accounting:
    outcomes = list(outcomes)
    if gateway.dialect == "sqlite":
        rows = await gateway.query("SELECT id, json_extract(raw_metadata, '$.Seq') FROM llm_requests")
    else:
        rows = await gateway.query("SELECT id::text, raw_metadata->>'Seq' FROM llm_requests")
    by_seq: dict[str, list[str]] = {}
    for row_id, seq in rows:
        if seq is None or not seq.startswith(WARM):
            by_seq.setdefault(seq, []).append(str(row_id))
    sent = {o.seq: o for o in outcomes}
    lost = [o for o in outcomes if o.answered and o.seq not in by_seq]
    mismatched = sum(1 for o in outcomes if o.answered and o.seq in by_seq and o.request_id not in by_seq[o.seq])
    return Accounting(
        sent=len(outcomes),
        answered=sum(1 for o in outcomes if o.answered),
        rows=len(rows),
        lost=lost,
        duplicated=sum(1 for ids in by_seq.values() if len(ids) > 1),
        foreign=sum(len(ids) for seq, ids in by_seq.items() if seq not in sent),
        mismatched=mismatched,
        unanswered_with_row=sum(1 for o in outcomes if not o.answered and o.seq in by_seq),
    )


async def wait_settled(gateways: Sequence[Gateway], *, timeout: float = 60) -> float:
    """Until every gateway reports an empty queue and an empty spool (returns seconds waited)."""
    started = time.monotonic()
    deadline = started + timeout
    last: Any = None
    while time.monotonic() < deadline:
        settled = True
        for gw in gateways:
            try:
                status, body = await gw.readyz()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                settled, last = False, exc
                continue
            writer = body.get("writer", {})
            last = body
            if status != 200 or writer.get("queue_depth") or writer.get("inflight_rows") or writer.get("spool_bytes"):
                settled = False
        if settled:
            return round(time.monotonic() - started, 2)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the writers did not settle in {timeout}s: {last}")


@contextlib.contextmanager
def full_filesystem(path: Path, size: str = "64k") -> Iterator[Path]:
    """A spool directory no file can be written in: on a tmpfs of ``size`` filled to the last byte
    (as root, locally and in CI), else a read-only directory; as root where mounting is not
    allowed, a path under a regular file (root ignores permissions).  The directory exists, as
    one made before the disk filled up would."""
    path.mkdir(parents=True, exist_ok=True)
    spool = path / "spool"
    if os.geteuid() != 0:
        spool.mkdir()
        spool.chmod(0o555)
        try:
            yield spool
        finally:
            spool.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        (path / "not-a-dir").write_text("a regular file where the spool directory should be\n")
        yield path / "not-a-dir" / "spool"
        return
    try:
        spool.mkdir()
        with open(path / "filler", "wb", buffering=0) as filler, contextlib.suppress(OSError):  # ENOSPC: full
            for _ in range(100_000):
                filler.write(b"\0" * 4096)
        yield spool
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def spool_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.spool")) if directory.is_dir() else []


def log_lines(gateway: GatewayProcess, *needles: str) -> list[str]:
    return [line for line in gateway.log_text().splitlines() if any(n in line for n in needles)]
