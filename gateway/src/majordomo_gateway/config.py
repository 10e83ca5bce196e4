"""Gateway configuration: defaults, then ``majordomo.yaml``, then ``MAJORDOMO_*`` environment variables.

Every setting has a dotted path (``providers.openai.base_url``) that is also its place in the YAML
file and, upper-cased and joined with underscores, its environment variable
(``MAJORDOMO_PROVIDERS_OPENAI_BASE_URL``).  A value that does not parse stops the gateway at start
with a message naming the setting, never later on a request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

DEFAULT_CONFIG_FILE = "majordomo.yaml"
DEFAULT_DATABASE_URL = "sqlite:///majordomo.db"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    openai: str = "https://api.openai.com"
    anthropic: str = "https://api.anthropic.com"
    gemini: str = "https://generativelanguage.googleapis.com"
    gemini_openai: str = "https://generativelanguage.googleapis.com/v1beta/openai"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 7680
    workers: int = 1
    database_url: str = DEFAULT_DATABASE_URL
    providers: ProviderEndpoints = field(default_factory=ProviderEndpoints)
    # LLM calls can think for minutes; the read timeout is the gap allowed between two chunks.
    upstream_connect_timeout: float = 10.0
    upstream_read_timeout: float = 600.0
    # When a client hangs up mid-stream we keep reading the upstream, bounded, to learn the usage.
    abandoned_stream_max_seconds: float = 30.0
    abandoned_stream_max_bytes: int = 8 * 1024 * 1024
    max_metadata_headers: int = 32
    max_metadata_value_bytes: int = 1024
    # Ask OpenAI-style chat streams for usage (stream_options.include_usage) and hide the extra chunk.
    inject_stream_usage: bool = True
    key_cache_ttl: float = 10.0
    key_cache_size: int = 10_000
    # Small batches keep each insert short: the tail latency of requests grew with rows per insert
    # (p99 with one connection: 4 ms at 500, 2 ms at 100; docs/performance.md).
    writer_batch_size: int = 100
    writer_flush_interval: float = 0.1
    writer_queue_size: int = 20_000
    spool_dir: str = "majordomo-spool"
    pricing_overrides: str | None = None
    # Off unless set: prices ship with genai-prices and work offline.
    pricing_refresh_url: str | None = None
    pricing_refresh_interval: float = 3600.0
    log_level: str = "info"


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _port(value: Any) -> int:
    number = int(value)
    if not 0 < number < 65536:
        raise ValueError("must be a TCP port between 1 and 65535")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _http_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("must not have a query string or fragment")
    return text


def _database_url(value: Any) -> str:
    text = str(value).strip()
    scheme = text.split(":", 1)[0]
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ValueError("must start with sqlite:/// or postgresql://")
    return text


def _log_level(value: Any) -> str:
    text = str(value).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError("must be one of debug, info, warning, error")
    return text


def _text(value: Any) -> str:
    return str(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


# dotted path → (Settings field, parser).  The path is the YAML location and the env var name.
_FIELDS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "server.host": ("host", _text),
    "server.port": ("port", _port),
    "server.workers": ("workers", _positive_int),
    "database.url": ("database_url", _database_url),
    "proxy.connect_timeout": ("upstream_connect_timeout", _positive_float),
    "proxy.read_timeout": ("upstream_read_timeout", _positive_float),
    "proxy.abandoned_stream_max_seconds": ("abandoned_stream_max_seconds", _positive_float),
    "proxy.abandoned_stream_max_bytes": ("abandoned_stream_max_bytes", _positive_int),
    "proxy.max_metadata_headers": ("max_metadata_headers", _positive_int),
    "proxy.max_metadata_value_bytes": ("max_metadata_value_bytes", _positive_int),
    "proxy.inject_stream_usage": ("inject_stream_usage", _flag),
    "auth.cache_ttl": ("key_cache_ttl", _positive_float),
    "auth.cache_size": ("key_cache_size", _positive_int),
    "writer.batch_size": ("writer_batch_size", _positive_int),
    "writer.flush_interval": ("writer_flush_interval", _positive_float),
    "writer.queue_size": ("writer_queue_size", _positive_int),
    "writer.spool_dir": ("spool_dir", _text),
    "pricing.overrides_file": ("pricing_overrides", _text),
    "pricing.refresh_url": ("pricing_refresh_url", _http_url),
    "pricing.refresh_interval": ("pricing_refresh_interval", _positive_float),
    "log.level": ("log_level", _log_level),
}
_PROVIDER_FIELDS: dict[str, str] = {
    "providers.openai.base_url": "openai",
    "providers.anthropic.base_url": "anthropic",
    "providers.gemini.base_url": "gemini",
    "providers.gemini_openai.base_url": "gemini_openai",
}
# The original gateway configured PostgreSQL piece by piece; those variables still work.
_LEGACY_POSTGRES = ("host", "port", "user", "password", "database")


def env_name(path: str) -> str:
    return "MAJORDOMO_" + path.replace(".", "_").upper()


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (server:, database:, ...)")
    return loaded


def _legacy_postgres_url(tree: Mapping[str, Any], environ: Mapping[str, str]) -> str | None:
    parts: dict[str, str] = {}
    for name in _LEGACY_POSTGRES:
        path = f"storage.postgres.{name}"
        value = environ.get(env_name(path))
        if value is None:
            value = _lookup(tree, path)
        if value is not None:
            parts[name] = str(value)
    if not parts:
        return None
    user = quote(parts.get("user", "postgres"), safe="")
    password = parts.get("password")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return (
        f"postgresql://{auth}@{parts.get('host', '127.0.0.1')}:{parts.get('port', '5432')}"
        f"/{quote(parts.get('database', 'majordomo'), safe='')}"
    )


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings.  ``overrides`` (from CLI flags) win over everything; None means unset."""
    environ = os.environ if environ is None else environ
    tree: Mapping[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        tree = _read_yaml(path)
    elif Path(DEFAULT_CONFIG_FILE).is_file():
        tree = _read_yaml(Path(DEFAULT_CONFIG_FILE))

    values: dict[str, Any] = {}
    legacy_url = _legacy_postgres_url(tree, environ)
    if legacy_url is not None:
        values["database_url"] = legacy_url

    for path, (attr, parse) in _FIELDS.items():
        raw, source = environ.get(env_name(path)), env_name(path)
        if raw is None:
            raw, source = _lookup(tree, path), f"{path} in the config file"
        if raw is None or raw == "":
            continue
        try:
            values[attr] = parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None

    endpoints: dict[str, str] = {}
    for path, attr in _PROVIDER_FIELDS.items():
        raw, source = environ.get(env_name(path)), env_name(path)
        if raw is None:
            raw, source = _lookup(tree, path), f"{path} in the config file"
        if raw is None or raw == "":
            continue
        try:
            endpoints[attr] = _http_url(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None
    values["providers"] = ProviderEndpoints(**endpoints)

    for attr, raw in overrides.items():
        if raw is None:
            continue
        path = next((p for p, (a, _) in _FIELDS.items() if a == attr), None)
        if path is None:
            raise TypeError(f"unknown setting {attr}")
        try:
            values[attr] = _FIELDS[path][1](raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"--{attr.replace('_', '-')}={raw!r}: {exc}") from None
    return Settings(**values)
