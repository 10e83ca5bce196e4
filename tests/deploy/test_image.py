"""The container image (issue 16, point 1): built with docker where a daemon answers; everywhere, what
the image runs is checked without docker: the wheel holds the migrations, the Dockerfile's own build
commands give a working ``majordomo`` (slow: it installs from the package index), and its HEALTHCHECK
command tells a serving gateway from a dead one."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from majordomo_gateway.cli.serve import DRAIN_SECONDS

from tests.support import GatewayProcess
from tests.support.processes import BIN, REPO, free_port

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            word, _, rest = stripped.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def healthcheck_command() -> list[str]:
    (args,) = [args for word, args in instructions() if word == "HEALTHCHECK"]
    command: list[str] = json.loads(args.split(" CMD ", 1)[1])
    return command


def run_healthcheck(port: int, python: str = sys.executable) -> int:
    command = healthcheck_command()
    assert command[0] == "python"
    env = {"PATH": os.environ["PATH"], "MAJORDOMO_SERVER_PORT": str(port)}
    return subprocess.run([python, *command[1:]], env=env, capture_output=True, timeout=10).returncode


def test_the_wheel_holds_every_migration_and_runs_from_a_plain_install(tmp_path: Path) -> None:
    source = tmp_path / "gateway"
    shutil.copytree(REPO / "gateway", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    subprocess.run([str(BIN / "pip"), "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=120)
    (wheel,) = (tmp_path / "dist").glob("majordomo_gateway-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(REPO / "gateway" / "src")) for p in
               (REPO / "gateway" / "src" / "majordomo_gateway" / "storage" / "migrations").rglob("*.sql")}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert "majordomo_gateway/py.typed" in names

    # Installed the way the image installs it (not editable), with this venv's dependencies.
    target = tmp_path / "site"
    subprocess.run([str(BIN / "pip"), "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import majordomo_gateway; print(majordomo_gateway.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    assert where.startswith(str(target)), where
    database = tmp_path / "plain.db"
    migrate = subprocess.run([sys.executable, "-m", "majordomo_gateway.cli.main", "db", "migrate", "--json",
                              "--database-url", f"sqlite:///{database}"], env=env, capture_output=True,
                             text=True, cwd=tmp_path, timeout=60)
    assert migrate.returncode == 0, migrate.stderr
    assert len(list((REPO / "gateway/src/majordomo_gateway/storage/migrations/sqlite").glob("*.sql"))) == \
        len(json.loads(migrate.stdout)["applied"])


def test_the_healthcheck_command_passes_on_a_serving_gateway_and_fails_on_a_dead_one(
        tmp_path: Path, mock_upstream) -> None:
    gateway = GatewayProcess(database_url=f"sqlite:///{tmp_path / 'm.db'}", upstream_url=mock_upstream.url,
                             workdir=tmp_path).start()
    try:
        assert run_healthcheck(gateway.port) == 0
    finally:
        gateway.stop()
    assert run_healthcheck(gateway.port) != 0
    assert run_healthcheck(free_port()) != 0


def build_commands(prefix: Path, source: Path) -> tuple[dict[str, str], list[str]]:
    """The build stage's ENV and RUN lines, with its paths moved under ``prefix``."""
    stages: list[list[tuple[str, str]]] = []
    for word, args in instructions():
        if word == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((word, args))
    stage = stages[0]
    env: dict[str, str] = {}
    runs: list[str] = []
    for word, args in stage:
        if word == "ENV":
            env.update(part.split("=", 1) for part in shlex.split(args))
        elif word == "RUN":
            runs.append(args.replace("/opt/majordomo", str(prefix)).replace("/src/gateway", str(source)))
    return env, runs


@pytest.mark.slow
def test_the_dockerfile_build_stage_makes_a_gateway_that_serves_and_drains(tmp_path: Path) -> None:
    """What `docker build` runs, run here on this machine's Python (needs the package index)."""
    source = tmp_path / "src" / "gateway"
    shutil.copytree(REPO / "gateway", source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    prefix = tmp_path / "opt"
    env, runs = build_commands(prefix, source)
    assert runs[0] == f"python -m venv {prefix}"
    base = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    for command in runs:
        subprocess.run(command, shell=True, check=True, env={**base, **env}, cwd=tmp_path, timeout=540)
    port = free_port()
    run_env = {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "MAJORDOMO_SERVER_PORT": str(port),
               "MAJORDOMO_SERVER_HOST": "127.0.0.1", "MAJORDOMO_WRITER_SPOOL_DIR": str(tmp_path / "spool")}
    with open(tmp_path / "serve.log", "wb") as log:
        process = subprocess.Popen([str(prefix / "bin" / "majordomo"), "serve"], env=run_env, cwd=tmp_path,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while run_healthcheck(port, str(prefix / "bin" / "python")) != 0:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "the image's gateway never became healthy"
            time.sleep(0.2)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=DRAIN_SECONDS + 10)
    finally:
        if process.poll() is None:
            process.kill()
    assert code in (0, -signal.SIGTERM)
    assert time.monotonic() - started < DRAIN_SECONDS
    assert "Application shutdown complete" in (tmp_path / "serve.log").read_text()


def docker_problem() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command on this machine"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                          timeout=30)
    if info.returncode != 0:
        return f"docker has no daemon to talk to: {info.stderr.strip().splitlines()[-1:]}"
    return None


def test_docker_builds_the_image_and_it_becomes_healthy_and_stops_on_sigterm(tmp_path: Path) -> None:
    problem = docker_problem()
    if problem is not None:
        pytest.skip(f"{problem}; the image's build stage is checked by the slow test above")
    tag = f"majordomo-gateway:test-{os.getpid()}"
    subprocess.run(["docker", "build", "-t", tag, str(REPO)], check=True, timeout=900)
    name = f"majordomo-test-{os.getpid()}"
    try:
        subprocess.run(["docker", "run", "-d", "--name", name, "--network", "none", tag], check=True, timeout=60)
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline and status != "healthy":
            time.sleep(1)
            status = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}", name],
                                    capture_output=True, text=True, timeout=30).stdout.strip()
        assert status == "healthy"
        user = subprocess.run(["docker", "exec", name, "id", "-u"], capture_output=True, text=True,
                              timeout=30).stdout.strip()
        assert user == "10001"
        started = time.monotonic()
        subprocess.run(["docker", "stop", "-t", str(DRAIN_SECONDS + 15), name], check=True, timeout=120)
        assert time.monotonic() - started < DRAIN_SECONDS
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
        assert "Application shutdown complete" in logs.stdout + logs.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)
