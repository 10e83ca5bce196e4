"""A real gateway process on its own port, database and spool, and reading back the rows it wrote."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import sqlite3
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from tests.support.processes import BIN, free_port, majordomo


@dataclass
class GatewayProcess:
    """A real ``majordomo serve`` in a subprocess, on its own port, database and spool."""

    database_url: str
    upstream_url: str
    workdir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    key: str = ""
    key_id: str = ""
    #: run the gateway under this RLIMIT_NOFILE (soft and hard), as a tight ``ulimit -n`` would
    fd_limit: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "gateway.log"

    @property
    def dialect(self) -> str:
        return "sqlite" if self.database_url.startswith("sqlite") else "postgres"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
        env.update({
            "MAJORDOMO_DATABASE_URL": self.database_url,
            "MAJORDOMO_SERVER_PORT": str(self.port),
            "MAJORDOMO_PROVIDERS_OPENAI_BASE_URL": self.upstream_url,
            "MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL": self.upstream_url,
            "MAJORDOMO_PROVIDERS_GEMINI_BASE_URL": self.upstream_url,
            "MAJORDOMO_PROVIDERS_GEMINI_OPENAI_BASE_URL": f"{self.upstream_url}/v1beta/openai",
            "MAJORDOMO_WRITER_FLUSH_INTERVAL": "0.02",
            "MAJORDOMO_WRITER_SPOOL_DIR": str(self.workdir / "spool"),
            "MAJORDOMO_LOG_LEVEL": "info",
        })
        env.update(self.extra_env)
        return env

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return majordomo(*args, env=self.env(), check=check, cwd=self.workdir)

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([str(BIN / "majordomo"), "serve"], env=self.env(),
                                            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
                                            preexec_fn=self._limit_fds if self.fd_limit else None)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start:\n{self.log_path.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"gateway did not start:\n{self.log_path.read_text()}")
        if not self.key:
            created = orjson.loads(self.cli("keys", "create", "--name", "tests", "--json").stdout)
            self.key, self.key_id = created["key"], created["id"]
        return self

    def _limit_fds(self) -> None:
        assert self.fd_limit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.fd_limit, self.fd_limit))

    def stop(self, sig: int | None = None) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            if sig is None:
                self.process.terminate()
            else:
                self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # -- reading what the gateway wrote ---------------------------------------------------------
    async def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.dialect == "sqlite":
            path = self.database_url[len("sqlite:///"):]
            path = path if os.path.isabs(path) else str(self.workdir / path)

            def run() -> list[tuple[Any, ...]]:
                conn = sqlite3.connect(path, timeout=10)
                try:
                    return [tuple(r) for r in conn.execute(sql, args).fetchall()]
                finally:
                    conn.close()

            return await asyncio.to_thread(run)
        conn = await asyncpg.connect(self.database_url, timeout=5)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    async def row(self, request_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The llm_requests row for a request id, waiting for the writer's next flush."""
        param = "?" if self.dialect == "sqlite" else "$1"
        cast = "" if self.dialect == "sqlite" else "::uuid"
        deadline = time.monotonic() + timeout
        while True:
            rows = await self._dict_rows(f"SELECT * FROM llm_requests WHERE id = {param}{cast}", request_id)
            if rows:
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no llm_requests row for {request_id} after {timeout}s")
            await asyncio.sleep(0.02)

    async def count_rows(self) -> int:
        return (await self.query("SELECT COUNT(*) FROM llm_requests"))[0][0]

    async def _dict_rows(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if self.dialect == "sqlite":
            path = self.database_url[len("sqlite:///"):]
            path = path if os.path.isabs(path) else str(self.workdir / path)

            def run() -> list[dict[str, Any]]:
                conn = sqlite3.connect(path, timeout=10)
                conn.row_factory = sqlite3.Row
                try:
                    return [dict(r) for r in conn.execute(sql, args).fetchall()]
                finally:
                    conn.close()

            rows = await asyncio.to_thread(run)
            for row in rows:
                row["raw_metadata"] = orjson.loads(row["raw_metadata"])
                for flag in ("streamed", "aborted", "model_alias_found"):
                    row[flag] = bool(row[flag])
            return rows
        conn = await asyncpg.connect(self.database_url, timeout=5)
        try:
            rows = [dict(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()
        for row in rows:
            row["raw_metadata"] = orjson.loads(row["raw_metadata"])
            row["id"] = str(row["id"])
            if row["majordomo_api_key_id"] is not None:
                row["majordomo_api_key_id"] = str(row["majordomo_api_key_id"])
        return rows


def assert_no_secret(texts: Sequence[str], secrets: Sequence[str]) -> None:
    for secret in secrets:
        for text in texts:
            assert secret not in text, "a secret leaked"


async def latest_rows(gw: GatewayProcess, count: int) -> list[dict]:
    """The ``count`` most recent rows, oldest first (ids are time-ordered UUIDs)."""
    await _settle(gw)
    ids = await gw.query(f"SELECT id FROM llm_requests ORDER BY requested_at DESC, id DESC LIMIT {count}")
    rows = [await gw.row(str(row_id)) for (row_id,) in ids]
    return list(reversed(rows))


async def _settle(gw: GatewayProcess) -> None:
    before = -1
    for _ in range(50):  # wait until the writer has flushed (count stable over two flush windows)
        count = await gw.count_rows()
        if count == before:
            return
        before = count
        await asyncio.sleep(0.05)
