"""Processes and ports: where the repo and its virtualenv are, free loopback ports, the ``majordomo`` CLI."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def majordomo(*args: str, env: dict[str, str] | None = None, check: bool = True,
              cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """``input`` is the command's standard input (a password, a provider key); by default none."""
    return subprocess.run([str(BIN / "majordomo"), *args], capture_output=True, text=True,
                          env=env, check=check, cwd=cwd, timeout=60, input=input,
                          stdin=None if input is not None else subprocess.DEVNULL)


def run_sync(coro: Any) -> Any:
    """Run a coroutine to completion from any context (a fresh loop on a helper thread)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
