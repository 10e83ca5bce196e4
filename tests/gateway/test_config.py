from pathlib import Path

import pytest
from majordomo_gateway.config import ConfigError, load_settings


def test_defaults_without_file_or_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 7680)
    assert settings.database.url == "sqlite:///majordomo.db"
    assert settings.providers.openai.base_url == "https://api.openai.com"
    assert settings.providers.anthropic.base_url == "https://api.anthropic.com"
    assert settings.providers.gemini.base_url == "https://generativelanguage.googleapis.com"
    assert settings.providers.gemini_openai.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"


def test_yaml_then_env_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "majordomo.yaml"
    config.write_text(
        "server:\n  host: 0.0.0.0\n  port: 9000\n"
        "database:\n  url: sqlite:///from-file.db\n"
        "providers:\n  openai:\n    base_url: http://127.0.0.1:1/\n"
    )
    env = {"MAJORDOMO_SERVER_PORT": "9100", "MAJORDOMO_PROVIDERS_ANTHROPIC_BASE_URL": "http://127.0.0.1:2"}
    settings = load_settings(config, environ=env)
    assert settings.server.host == "0.0.0.0"
    assert settings.server.port == 9100  # env wins over the file
    assert settings.database.url == "sqlite:///from-file.db"
    assert settings.providers.openai.base_url == "http://127.0.0.1:1"  # trailing slash dropped
    assert settings.providers.anthropic.base_url == "http://127.0.0.1:2"
    assert load_settings(config, environ=env, port=9200).server.port == 9200  # CLI flag wins over env


def test_legacy_postgres_variables_build_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "MAJORDOMO_STORAGE_POSTGRES_HOST": "db.internal",
        "MAJORDOMO_STORAGE_POSTGRES_PORT": "6543",
        "MAJORDOMO_STORAGE_POSTGRES_USER": "mdm",
        "MAJORDOMO_STORAGE_POSTGRES_PASSWORD": "p@ss word",
        "MAJORDOMO_STORAGE_POSTGRES_DATABASE": "logs",
    }
    assert load_settings(environ=env).database.url == "postgresql://mdm:p%40ss%20word@db.internal:6543/logs"
    # MAJORDOMO_DATABASE_URL, when also set, is the more specific setting and wins.
    env["MAJORDOMO_DATABASE_URL"] = "postgresql://other/db"
    assert load_settings(environ=env).database.url == "postgresql://other/db"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MAJORDOMO_SERVER_PORT": "seventy"}, "MAJORDOMO_SERVER_PORT"),
        ({"MAJORDOMO_SERVER_PORT": "70000"}, "MAJORDOMO_SERVER_PORT"),
        ({"MAJORDOMO_DATABASE_URL": "mysql://x"}, "MAJORDOMO_DATABASE_URL"),
        ({"MAJORDOMO_PROVIDERS_OPENAI_BASE_URL": "ftp://x"}, "MAJORDOMO_PROVIDERS_OPENAI_BASE_URL"),
        ({"MAJORDOMO_WRITER_FLUSH_INTERVAL": "-1"}, "MAJORDOMO_WRITER_FLUSH_INTERVAL"),
    ],
)
def test_bad_values_fail_naming_the_setting(env: dict[str, str], named: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_bad_yaml_value_names_its_path(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("server:\n  port: nope\n")
    with pytest.raises(ConfigError, match=r"server\.port"):
        load_settings(config, environ={})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml", environ={})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("MAJORDOMO_SERVER_PORT", "http", "must be a TCP port between 1 and 65535"),
        ("MAJORDOMO_WRITER_BATCH_SIZE", "1.5", "must be a positive integer"),
        ("MAJORDOMO_WRITER_BATCH_SIZE", "true", "must be a positive integer"),
        ("MAJORDOMO_PROXY_READ_TIMEOUT", "nan", "must be a positive number of seconds"),
        ("MAJORDOMO_PROXY_READ_TIMEOUT", "soon", "must be a positive number of seconds"),
        ("MAJORDOMO_PROXY_MAX_IN_FLIGHT", "0", "must be a positive integer"),
        ("MAJORDOMO_WRITER_ON_SPOOL_FAILURE", "serve",
         "must be refuse (answer 503 while rows cannot be recorded) or accept (serve anyway)"),
    ],
)
def test_bad_numbers_say_what_is_expected(variable: str, value: str, expected: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Python's own "invalid literal for int() with base 10" would not say what the setting wants.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={variable: value})
    assert str(caught.value) == f"{variable}={value!r}: {expected}"


def test_fractional_count_in_yaml_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("writer:\n  batch_size: 1.5\n")
    with pytest.raises(ConfigError, match=r"writer\.batch_size.*positive integer"):
        load_settings(config, environ={})


def test_admission_and_spool_failure_settings(tmp_path: Path) -> None:
    settings = load_settings(environ={})
    assert settings.proxy.max_in_flight == 1024 and settings.writer.on_spool_failure == "refuse"
    config = tmp_path / "c.yaml"
    config.write_text("proxy:\n  max_in_flight: 64\nwriter:\n  on_spool_failure: Accept\n")
    settings = load_settings(config, environ={})
    assert settings.proxy.max_in_flight == 64 and settings.writer.on_spool_failure == "accept"
