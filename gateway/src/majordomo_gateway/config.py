"""Gateway configuration: defaults, then ``majordomo.yaml``, then ``MAJORDOMO_*`` environment variables,
then CLI flags.

Settings are grouped the way the YAML file is (``server``, ``database``, ``providers``, ``proxy``,
``auth``, ``writer``, ``pricing``, ``budgets``, ``log``, ``metrics``).  Every setting has a dotted path
(``proxy.read_timeout``) that is its place in the YAML file and, upper-cased and joined with
underscores, its environment variable (``MAJORDOMO_PROXY_READ_TIMEOUT``).  A value that does not
parse, or a key the file should not have, stops the gateway at start with a message naming it,
never later on a request.  docs/configuration.md is the reference table; a test keeps it complete.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

from majordomo_gateway.providers.registry import BUILTIN_PROVIDERS, KINDS, builtin, catalog_id
from majordomo_gateway.timebuckets import zone

DEFAULT_CONFIG_FILE = "majordomo.yaml"
DEFAULT_DATABASE_URL = "sqlite:///majordomo.db"


class ConfigError(ValueError):
    """A setting is missing or malformed; the message names it and says what is expected."""


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 7680
    workers: int = 1
    # The request line and headers together (more: 431).  SDKs send 1-4 KiB; the metadata
    # headers at their limits add 32 KiB.
    max_head_bytes: int = 64 * 1024
    # From a request's first byte to the end of its headers (then 408): a client that dribbles
    # its head holds a connection for this long at most.
    head_timeout: float = 10.0
    # A connection with no request in progress (new, or between two requests) is closed after this.
    keepalive_timeout: float = 5.0
    # Client connections one worker keeps open; past it the longest-idle one is closed to make room
    # (or, when every one is busy, the newcomer gets a 503).  Lowered at start to what the file
    # descriptor limit leaves room for (server/limits.py).
    max_connections: int = 4096


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = DEFAULT_DATABASE_URL


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """One upstream: a built-in provider, or an OpenAI/Anthropic/Gemini-compatible server."""

    #: the key under ``providers:`` (``openai``, ``gemini_openai``, ``local``)
    name: str
    #: the wire format, a key of providers.registry.KINDS
    kind: str
    base_url: str
    #: price this provider's models as this catalog provider does (``openai``, ``groq``, ...)
    pricing_provider: str | None = None


class ProviderTable(Mapping[str, ProviderSettings]):
    """The configured providers by name; built-ins are also attributes (``providers.openai``)."""

    def __init__(self, entries: Mapping[str, ProviderSettings]) -> None:
        self._entries = dict(entries)

    def __getitem__(self, name: str) -> ProviderSettings:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getattr__(self, name: str) -> ProviderSettings:
        try:
            return self._entries[name]
        except KeyError:
            raise AttributeError(name) from None

    def __repr__(self) -> str:
        return f"ProviderTable({self._entries!r})"


def _default_providers() -> ProviderTable:
    return ProviderTable({
        spec.name: ProviderSettings(spec.name, spec.kind, spec.default_base_url, spec.pricing_provider)
        for spec in BUILTIN_PROVIDERS
    })


@dataclass(frozen=True, slots=True)
class ProxySettings:
    connect_timeout: float = 10.0
    # LLM calls can think for minutes; the read timeout is the gap allowed between two chunks.
    read_timeout: float = 600.0
    # When a client hangs up mid-stream we keep reading the upstream, bounded, to learn the usage.
    abandoned_stream_max_seconds: float = 30.0
    abandoned_stream_max_bytes: int = 8 * 1024 * 1024
    # What X-Majordomo-* metadata one request may carry (more: 400 naming the limit).  The total
    # counts names (after X-Majordomo-) and values; each is capped (METADATA_CEILINGS) so that
    # no setting can make a row too big for a spool record (tests/gateway/test_row_limits.py).
    max_metadata_headers: int = 32
    max_metadata_value_bytes: int = 1024
    max_metadata_name_bytes: int = 128
    max_metadata_total_bytes: int = 16 * 1024
    max_provider_alias_bytes: int = 256
    # Ask OpenAI-style chat streams for usage (stream_options.include_usage) and hide the extra chunk.
    inject_stream_usage: bool = True
    # Requests one worker serves at once (streams included); more get an immediate 503 with
    # Retry-After.  High enough for the 1,000 open streams a worker is sized for (docs/performance.md),
    # low enough that a flood queues in 503s, not in seconds of latency (docs/reliability.md).
    max_in_flight: int = 1024


@dataclass(frozen=True, slots=True)
class AuthSettings:
    cache_ttl: float = 10.0
    cache_size: int = 10_000


@dataclass(frozen=True, slots=True)
class WriterSettings:
    # Small batches keep each insert short: tail latency grows with rows per insert
    # (docs/performance.md).
    batch_size: int = 100
    flush_interval: float = 0.1
    queue_size: int = 20_000
    spool_dir: str = "majordomo-spool"
    # Database down and spool not writable: "refuse" answers 503 rather than serve requests whose
    # rows could be lost; "accept" serves them, rows held in memory up to queue_size.
    on_spool_failure: str = "refuse"


@dataclass(frozen=True, slots=True)
class PricingSettings:
    overrides_file: str | None = None
    # Off unless set: prices ship with genai-prices and work offline.
    refresh_url: str | None = None
    refresh_interval: float = 3600.0


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    # Calendar periods (day, week, month) of budgets created without --time-zone.
    time_zone: str = "UTC"
    # How often each process re-reads the ledger and publishes its requests in flight: the
    # window in which two processes may both admit against the same budget (docs/budgets.md).
    refresh_interval: float = 0.25
    # A request without max_tokens reserves this many output tokens until its usage is known.
    default_output_tokens: int = 4096
    # The last share of a hard budget in which every admission is a reservation in the database
    # (exact across processes); before it, each process admits from its view, at most
    # exact_share x limit / processes of estimated cost per refresh (docs/budgets.md).
    exact_share: float = 0.2
    # How often each process looks for thresholds crossed and alerts due (budgets/alerts.py).
    alert_interval: float = 2.0
    # A failed webhook is retried after alert_backoff x 2^(attempts - 1) seconds (at most an hour).
    alert_backoff: float = 5.0


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "info"
    # "json": one JSON object per log line, and one access-log line per request (docs/observability.md).
    format: str = "text"


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Prometheus ``/metrics`` (docs/observability.md)."""

    enabled: bool = True
    # Serve /metrics on this port (every worker's numbers, from the supervisor) instead of the
    # gateway's port.
    port: int | None = None
    # When set, /metrics wants ``Authorization: Bearer <token>``.
    token: str | None = None
    # X-Majordomo-* metadata keys that become labels of the request, token and cost counters.
    labels: tuple[str, ...] = ()
    # Distinct values one metadata label keeps per worker; later ones are counted as ``other``.
    max_label_values: int = 100
    # Where workers publish their numbers for each other; `majordomo serve` makes a fresh
    # temporary directory when unset.
    dir: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    providers: ProviderTable = field(default_factory=_default_providers)
    proxy: ProxySettings = field(default_factory=ProxySettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    writer: WriterSettings = field(default_factory=WriterSettings)
    pricing: PricingSettings = field(default_factory=PricingSettings)
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    log: LogSettings = field(default_factory=LogSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)


Parser = Callable[[Any], Any]


def _integer(value: Any, expected: str) -> int:
    # int() would say "invalid literal for int() with base 10", which names neither the setting
    # nor what it wants; bool is an int to Python but never a count.
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(expected)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None


def _positive_int(value: Any) -> int:
    expected = "must be a positive integer"
    number = _integer(value, expected)
    if number <= 0:
        raise ValueError(expected)
    return number


#: the largest values the row-size settings accept: a row at all of them still fits a spool
#: record (16 MiB) many times over, whatever the other settings say
METADATA_CEILINGS = {"max_metadata_name_bytes": 1024, "max_metadata_total_bytes": 1024 * 1024,
                     "max_provider_alias_bytes": 4096}


def _capped_int(value: Any, ceiling: int) -> int:
    expected = f"must be a positive integer, at most {ceiling}"
    number = _integer(value, expected)
    if not 0 < number <= ceiling:
        raise ValueError(expected)
    return number


def _port(value: Any) -> int:
    expected = "must be a TCP port between 1 and 65535"
    number = _integer(value, expected)
    if not 0 < number < 65536:
        raise ValueError(expected)
    return number


def _positive_float(value: Any) -> float:
    expected = "must be a positive number of seconds"
    if isinstance(value, bool):
        raise ValueError(expected)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if not number > 0 or number == float("inf"):
        raise ValueError(expected)
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


def _spool_failure(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("refuse", "accept"):
        raise ValueError("must be refuse (answer 503 while rows cannot be recorded) or accept (serve anyway)")
    return text


def _log_format(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("text", "json"):
        raise ValueError("must be text (readable lines) or json (one JSON object per line, with access lines)")
    return text


_METADATA_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


def _label_list(value: Any) -> tuple[str, ...]:
    """A YAML list, or a comma-separated string (environment variable) of metadata keys."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, Sequence):
        raise ValueError("must be a list of X-Majordomo-* metadata keys, e.g. [Feature, User-Id]")
    names: list[str] = []
    for item in items:
        name = str(item).strip()
        if name.lower().startswith("x-majordomo-"):
            name = name[len("x-majordomo-"):]
        if not _METADATA_LABEL.match(name):
            raise ValueError(f"{item!r} is not a metadata key (letters, digits and '-', e.g. Feature or User-Id)")
        if name.lower() in ("key", "provider", "provider-alias"):
            raise ValueError(f"{item!r} is not metadata (X-Majordomo-{name} is read by the gateway itself)")
        label = metadata_label_name(name)
        if label in _BUILTIN_LABELS:
            raise ValueError(f"{item!r} would be the label {label!r}, which the metrics already have")
        if label in (metadata_label_name(n) for n in names):
            raise ValueError(f"{item!r} is listed twice")
        names.append(name)
    return tuple(names)


#: the labels the request, token and cost counters have of their own
_BUILTIN_LABELS = frozenset({"provider", "model", "route", "status", "type", "le"})


def metadata_label_name(key: str) -> str:
    """``User-Id`` → ``user_id``: a metadata key as a Prometheus label name."""
    return key.lower().replace("-", "_")


def _text(value: Any) -> str:
    return str(value)


def _share(value: Any) -> float:
    expected = "must be a number from 0 to 1 (a share of the limit)"
    if isinstance(value, bool):
        raise ValueError(expected)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(expected) from None
    if not 0 <= number <= 1:
        raise ValueError(expected)
    return number


def _time_zone(value: Any) -> str:
    name = str(value).strip()
    zone(name)  # TimeZoneError (a ValueError) names the problem
    return name


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _kind(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in KINDS:
        raise ValueError(f"must be one of {', '.join(sorted(KINDS))} (the wire format the server speaks)")
    return text


def _pricing_provider(value: Any) -> str:
    text = str(value).strip().lower()
    if not text:
        raise ValueError("must name a provider, e.g. openai")
    return text


# section -> (settings class, {key: parser}).  The dotted path section.key is the YAML location
# and, through env_name(), the environment variable.
_SECTIONS: dict[str, tuple[type[Any], dict[str, Parser]]] = {
    "server": (ServerSettings, {
        "host": _text,
        "port": _port,
        "workers": _positive_int,
        "max_head_bytes": _positive_int,
        "head_timeout": _positive_float,
        "keepalive_timeout": _positive_float,
        "max_connections": _positive_int,
    }),
    "database": (DatabaseSettings, {"url": _database_url}),
    "proxy": (ProxySettings, {
        "connect_timeout": _positive_float,
        "read_timeout": _positive_float,
        "abandoned_stream_max_seconds": _positive_float,
        "abandoned_stream_max_bytes": _positive_int,
        "max_metadata_headers": _positive_int,
        "max_metadata_value_bytes": _positive_int,
        "max_metadata_name_bytes": lambda v: _capped_int(v, METADATA_CEILINGS["max_metadata_name_bytes"]),
        "max_metadata_total_bytes": lambda v: _capped_int(v, METADATA_CEILINGS["max_metadata_total_bytes"]),
        "max_provider_alias_bytes": lambda v: _capped_int(v, METADATA_CEILINGS["max_provider_alias_bytes"]),
        "inject_stream_usage": _flag,
        "max_in_flight": _positive_int,
    }),
    "auth": (AuthSettings, {"cache_ttl": _positive_float, "cache_size": _positive_int}),
    "writer": (WriterSettings, {
        "batch_size": _positive_int,
        "flush_interval": _positive_float,
        "queue_size": _positive_int,
        "spool_dir": _text,
        "on_spool_failure": _spool_failure,
    }),
    "pricing": (PricingSettings, {
        "overrides_file": _text,
        "refresh_url": _http_url,
        "refresh_interval": _positive_float,
    }),
    "budgets": (BudgetSettings, {
        "time_zone": _time_zone,
        "refresh_interval": _positive_float,
        "default_output_tokens": _positive_int,
        "exact_share": _share,
        "alert_interval": _positive_float,
        "alert_backoff": _positive_float,
    }),
    "log": (LogSettings, {"level": _log_level, "format": _log_format}),
    "metrics": (MetricsSettings, {
        "enabled": _flag,
        "port": _port,
        "token": _text,
        "labels": _label_list,
        "max_label_values": _positive_int,
        "dir": _text,
    }),
}
_PROVIDER_KEYS: dict[str, Parser] = {"kind": _kind, "base_url": _http_url, "pricing_provider": _pricing_provider}
# The original gateway configured PostgreSQL piece by piece; those settings still work.
_LEGACY_POSTGRES = ("host", "port", "user", "password", "database")
# CLI flags by the name argparse gives them -> the setting they set.
CLI_FLAGS: dict[str, str] = {
    "host": "server.host",
    "port": "server.port",
    "workers": "server.workers",
    "database_url": "database.url",
}
_PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PROVIDER_ENV = re.compile(r"^MAJORDOMO_PROVIDERS_([A-Z][A-Z0-9_]*?)_(KIND|BASE_URL|PRICING_PROVIDER)$")


def env_name(path: str) -> str:
    return "MAJORDOMO_" + path.replace(".", "_").upper()


def setting_paths() -> list[str]:
    """Every dotted setting path, for the reference docs and their test."""
    paths = [f"{section}.{key}" for section, (_, keys) in _SECTIONS.items() for key in keys]
    paths += [f"providers.<name>.{key}" for key in _PROVIDER_KEYS]
    paths += [f"storage.postgres.{name}" for name in _LEGACY_POSTGRES]
    return paths


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, Mapping):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (server:, database:, ...)")
    _check_keys(path, loaded)
    return loaded


def _unknown(path: Path, where: str, key: object, known: list[str]) -> ConfigError:
    return ConfigError(f"{path}: unknown setting {where}{key!s}; known here: {', '.join(known)} "
                       "(see docs/configuration.md)")


def _section(path: Path, where: str, value: object) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {where} must be a mapping of settings, got {value!r}")
    return value


def _check_section(path: Path, where: str, value: object, known: Sequence[str]) -> Mapping[str, Any]:
    """The mapping at ``where``, once every key in it is one of ``known``."""
    body = _section(path, where, value)
    for key in body:
        if key not in known:
            raise _unknown(path, f"{where}.", key, list(known))
    return body


def _check_keys(path: Path, tree: Mapping[str, Any]) -> None:
    """Every key in the file must be a setting: a typo would otherwise be silently ignored."""
    top = [*_SECTIONS, "providers", "storage"]
    for section, value in tree.items():
        if section not in top:
            raise _unknown(path, "", section, top)
        if section == "providers":
            for name, entry in _section(path, "providers", value).items():
                _check_section(path, f"providers.{name}", entry, list(_PROVIDER_KEYS))
        elif section == "storage":
            storage = _check_section(path, "storage", value, ["postgres"])
            _check_section(path, "storage.postgres", storage.get("postgres"), _LEGACY_POSTGRES)
        else:
            _check_section(path, str(section), value, list(_SECTIONS[section][1]))


def _lookup(tree: Mapping[str, Any], path: str) -> Any:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


class _Source:
    """The file and environment a value may come from, with names for error messages."""

    def __init__(self, tree: Mapping[str, Any], environ: Mapping[str, str]) -> None:
        self.tree = tree
        self.environ = environ

    def raw(self, path: str) -> tuple[Any, str]:
        value = self.environ.get(env_name(path))
        if value is not None:
            return value, env_name(path)
        return _lookup(self.tree, path), f"{path} in the config file"

    def parsed(self, path: str, parse: Parser) -> Any:
        raw, source = self.raw(path)
        if raw is None or raw == "":
            return None
        try:
            return parse(raw)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}={raw!r}: {exc}") from None


def _legacy_postgres_url(source: _Source) -> str | None:
    parts: dict[str, str] = {}
    for name in _LEGACY_POSTGRES:
        value, _ = source.raw(f"storage.postgres.{name}")
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


def _provider_names(source: _Source) -> list[str]:
    names = [spec.name for spec in BUILTIN_PROVIDERS]
    file_entries = source.tree.get("providers")
    if isinstance(file_entries, Mapping):
        names += [str(name) for name in file_entries if str(name) not in names]
    for variable in source.environ:
        match = _PROVIDER_ENV.match(variable)
        if match and match.group(1).lower() not in names:
            names.append(match.group(1).lower())
    return names


def _providers(source: _Source) -> ProviderTable:
    entries: dict[str, ProviderSettings] = {}
    for name in _provider_names(source):
        if not _PROVIDER_NAME.match(name):
            raise ConfigError(f"providers.{name}: a provider name is lower-case letters, digits and '_', "
                              "starting with a letter")
        values = {key: source.parsed(f"providers.{name}.{key}", parse) for key, parse in _PROVIDER_KEYS.items()}
        spec = builtin(name)
        if spec is not None:
            if values["kind"] not in (None, spec.kind):
                raise ConfigError(f"providers.{name}.kind: the built-in provider {name} speaks {spec.kind}; "
                                  "give a server of another kind a name of its own")
            entries[name] = ProviderSettings(name, spec.kind, values["base_url"] or spec.default_base_url,
                                             values["pricing_provider"] or spec.pricing_provider)
            continue
        missing = [key for key in ("kind", "base_url") if values[key] is None]
        if missing:
            raise ConfigError(f"providers.{name}: set {' and '.join(missing)} "
                              f"({' / '.join(env_name(f'providers.{name}.{key}') for key in missing)}); "
                              f"kind is one of {', '.join(sorted(KINDS))}")
        entries[name] = ProviderSettings(name, values["kind"], values["base_url"], values["pricing_provider"])
    return ProviderTable(entries)


def pricing_ids(settings: Settings) -> dict[str, str | None]:
    """llm_requests.provider -> the genai-prices provider that prices its rows (None: only the
    overrides file can price them), for every configured provider."""
    ids: dict[str, str | None] = {}
    for name, entry in settings.providers.items():
        spec = builtin(name)
        row_name = spec.record_as if spec is not None else name
        if row_name not in ids:
            ids[row_name] = catalog_id(entry.pricing_provider or (spec.record_as if spec else None))
    return ids


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build the settings.  ``overrides`` are CLI flags (``port=9200``, see CLI_FLAGS) or dotted
    paths passed as ``**{"proxy.read_timeout": 5}``; they win over everything; None means unset."""
    environ = os.environ if environ is None else environ
    tree: Mapping[str, Any] = {}
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        tree = _read_yaml(path)
    elif Path(DEFAULT_CONFIG_FILE).is_file():
        tree = _read_yaml(Path(DEFAULT_CONFIG_FILE))
    source = _Source(tree, environ)

    values: dict[str, dict[str, Any]] = {section: {} for section in _SECTIONS}
    legacy_url = _legacy_postgres_url(source)
    if legacy_url is not None:
        values["database"]["url"] = legacy_url
    for section, (_, keys) in _SECTIONS.items():
        for key, parse in keys.items():
            value = source.parsed(f"{section}.{key}", parse)
            if value is not None:
                values[section][key] = value

    for name, raw in overrides.items():
        if raw is None:
            continue
        path_name = CLI_FLAGS.get(name, name)
        section, _, key = path_name.partition(".")
        if section not in _SECTIONS or key not in _SECTIONS[section][1]:
            raise TypeError(f"unknown setting {name}")
        try:
            values[section][key] = _SECTIONS[section][1][key](raw)
        except (TypeError, ValueError) as exc:
            flag = f"--{name.replace('_', '-')}" if name in CLI_FLAGS else path_name
            raise ConfigError(f"{flag}={raw!r}: {exc}") from None

    built = {section: cls(**values[section]) for section, (cls, _) in _SECTIONS.items()}
    return Settings(providers=_providers(source), **built)
