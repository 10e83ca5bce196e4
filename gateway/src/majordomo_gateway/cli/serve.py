"""``majordomo serve``: the gateway on uvicorn (uvloop + httptools)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator

from majordomo_gateway.app import Gateway
from majordomo_gateway.config import ConfigError, Settings, env_name, load_settings
from majordomo_gateway.logs import json_lines
from majordomo_gateway.metrics.endpoint import MetricsServer
from majordomo_gateway.metrics.shared import SnapshotDirectory
from majordomo_gateway.proxy.server_glue import install_log_filter
from majordomo_gateway.server import protocol
from majordomo_gateway.server.limits import ConnectionLimits, fd_budget, raise_fd_limit
from majordomo_gateway.tracing.settings import OtelConfigError, otel_settings

CONFIG_ENV = "MAJORDOMO_CONFIG"
# On SIGTERM uvicorn stops accepting and lets in-flight requests (streams included) finish for up
# to this long; then the writer drains.  Container stop timeouts (compose stop_grace_period,
# Kubernetes terminationGracePeriodSeconds) must be longer (docs/deploy.md; tests/deploy).
DRAIN_SECONDS = 30
# uvicorn's httptools protocol with the gateway's connection bounds (server/protocol.py).
PROTOCOL = "majordomo_gateway.server.protocol:GatewayHttpProtocol"


def create_app() -> Gateway:
    """Factory for each worker process: settings come from the config file and environment."""
    settings = load_settings(os.environ.get(CONFIG_ENV) or None)
    configure_logging(settings)
    # After uvicorn's own logging set-up, which runs before the app is built, in every worker.
    install_log_filter()
    limits = ConnectionLimits.from_settings(settings.server)
    if limits.max_connections < settings.server.max_connections:
        logging.getLogger("majordomo").warning(
            "server.max_connections lowered from %d to %d: that is what the file descriptor limit "
            "(ulimit -n) leaves room for, with an upstream connection for each", settings.server.max_connections,
            limits.max_connections)
    protocol.configure(limits)
    return Gateway(settings)


def configure_logging(settings: Settings) -> None:
    json_lines.configure(settings.log.level, settings.log.format)


def run(args: argparse.Namespace) -> int:
    # Validate everything now, in the parent, so a bad value fails before any worker starts.
    settings = load_settings(args.config, host=args.host, port=args.port,
                             database_url=args.database_url, workers=args.workers)
    try:
        otel_settings(os.environ)
    except OtelConfigError as exc:
        raise ConfigError(str(exc)) from None
    # Workers rebuild the settings from the environment: hand the CLI flags down that way.
    if args.config:
        os.environ[CONFIG_ENV] = os.path.abspath(args.config)
    os.environ[env_name("server.host")] = settings.server.host
    os.environ[env_name("server.port")] = str(settings.server.port)
    os.environ[env_name("database.url")] = settings.database.url
    configure_logging(settings)
    with _metrics_directory(settings):
        _serve(settings)
    return 0


@contextlib.contextmanager
def _metrics_directory(settings: Settings) -> Iterator[MetricsServer | None]:
    """Workers publish their numbers to one directory (metrics.dir, or a fresh temporary one),
    emptied first so that counting starts at zero; metrics.port serves them from this process."""
    config = settings.metrics
    if not config.enabled:
        yield None
        return
    temporary = None
    if config.dir is None:
        temporary = tempfile.mkdtemp(prefix="majordomo-metrics-")
        os.environ[env_name("metrics.dir")] = temporary
    directory = SnapshotDirectory(config.dir or temporary or "")
    directory.clear()
    server = None
    if config.port is not None:
        server = MetricsServer(settings.server.host, config.port, directory, config.token)
        server.start()
    try:
        yield server
    finally:
        if server is not None:
            server.stop()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def _serve(settings: Settings) -> None:
    import uvicorn

    # Workers inherit the limit: raised once here, the connection cap is sized against it.
    descriptors = raise_fd_limit(settings.server.max_connections)
    _, backlog = fd_budget(settings.server.max_connections, descriptors)
    logging.getLogger("majordomo").info(
        "Majordomo Gateway on http://%s:%d, database %s", settings.server.host, settings.server.port,
        _redact(settings.database.url),
    )
    # JSON lines for uvicorn's loggers too; else uvicorn's own readable default.
    log_config = json_lines.uvicorn_log_config(settings.log.format) or uvicorn.config.LOGGING_CONFIG
    uvicorn.run(
        "majordomo_gateway.cli.serve:create_app",
        log_config=log_config,
        factory=True,
        host=settings.server.host,
        port=settings.server.port,
        workers=settings.server.workers if settings.server.workers > 1 else None,
        loop="uvloop",
        http=PROTOCOL,
        backlog=backlog,
        timeout_keep_alive=settings.server.keepalive_timeout,  # type: ignore[arg-type]
        lifespan="on",
        access_log=False,
        server_header=False,
        date_header=False,
        log_level=settings.log.level,
        timeout_graceful_shutdown=DRAIN_SECONDS,
    )


def _redact(url: str) -> str:
    """Never print a database password."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if ":" in credentials else f"{scheme}{sep}{user}@{host}"
