"""The dependency-free core: configuration from the environment and the X-Majordomo-* headers."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import majordomo_frameworks as mf
import pytest
from frameworks_test_env import MAJORDOMO_KEY
from majordomo_frameworks import (
    PROVIDER_DEFAULTS,
    MissingEnvironmentVariableError,
    build_headers,
    check_environment,
    get_gateway_url,
    get_majordomo_key,
    get_provider_api_key,
    validate_provider,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_REQUIRED = f"^{re.escape('MAJORDOMO_API_KEY environment variable is required')}$"


def test_provider_defaults() -> None:
    assert mf.PROVIDERS == ("openai", "anthropic", "gemini")
    assert dict(PROVIDER_DEFAULTS) == {
        "openai": "gpt-4o",
        "anthropic": "claude-sonnet-4-20250514",
        "gemini": "gemini-2.0-flash",
    }


def test_core_imports_no_framework() -> None:
    code = (
        "import sys, majordomo_frameworks\n"
        "loaded = {'pydantic_ai', 'agno', 'openai', 'anthropic'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_core_distribution_has_no_dependencies() -> None:
    project = tomllib.loads((REPO_ROOT / "frameworks" / "pyproject.toml").read_text())["project"]
    assert project["name"] == "majordomo-frameworks"
    assert project["dependencies"] == []
    assert {"pydantic-ai", "agno"} <= set(project["optional-dependencies"])


class TestGatewayUrl:
    def test_default(self) -> None:
        assert get_gateway_url() == "http://localhost:7680"

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("http://gateway.internal:8080", "http://gateway.internal:8080"),
            ("http://gateway.internal:8080/", "http://gateway.internal:8080"),
            ("https://llm.example.com/majordomo//", "https://llm.example.com/majordomo"),
            ("  http://127.0.0.1:7680/  ", "http://127.0.0.1:7680"),
            ("", "http://localhost:7680"),
        ],
    )
    def test_from_env(self, monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
        monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", value)
        assert get_gateway_url() == expected

    def test_rejects_missing_scheme(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", "localhost:7680")
        with pytest.raises(ValueError, match=r"MAJORDOMO_GATEWAY_URL must start with http:// or https://"):
            get_gateway_url()

    def test_rejects_v1_suffix(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", "http://localhost:7680/v1/")
        with pytest.raises(ValueError, match=r"without /v1.*export MAJORDOMO_GATEWAY_URL=http://localhost:7680"):
            get_gateway_url()


class TestKeys:
    def test_majordomo_key_missing_has_exact_message(self) -> None:
        with pytest.raises(ValueError) as raised:
            get_majordomo_key()
        assert str(raised.value) == "MAJORDOMO_API_KEY environment variable is required"
        assert isinstance(raised.value, MissingEnvironmentVariableError)
        assert raised.value.variable == "MAJORDOMO_API_KEY"

    def test_majordomo_key_empty_counts_as_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_API_KEY", "  ")
        with pytest.raises(ValueError, match=KEY_REQUIRED):
            get_majordomo_key()

    def test_majordomo_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_API_KEY", MAJORDOMO_KEY)
        assert get_majordomo_key() == MAJORDOMO_KEY

    @pytest.mark.parametrize(
        ("provider", "variable"),
        [("openai", "OPENAI_API_KEY"), ("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")],
    )
    def test_provider_key_missing_names_variable(self, provider: mf.Provider, variable: str) -> None:
        with pytest.raises(MissingEnvironmentVariableError, match=rf"^{variable} environment") as raised:
            get_provider_api_key(provider)
        assert raised.value.variable == variable
        assert not isinstance(raised.value, KeyError)

    def test_provider_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("GEMINI_API_KEY", "g-key")
        assert get_provider_api_key("gemini") == "g-key"


class TestProviders:
    @pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
    def test_valid(self, provider: str) -> None:
        assert validate_provider(provider) == provider

    @pytest.mark.parametrize("provider", ["azure", "OpenAI", "", "google"])
    def test_unknown_lists_valid_ones(self, provider: str) -> None:
        with pytest.raises(ValueError, match=re.escape("Valid providers: 'openai', 'anthropic', 'gemini'")):
            validate_provider(provider)


class TestCheckEnvironment:
    def test_all_missing(self) -> None:
        assert check_environment("gemini") == ["MAJORDOMO_API_KEY", "GEMINI_API_KEY"]

    def test_only_provider_key_missing(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_API_KEY", MAJORDOMO_KEY)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
        assert check_environment("openai") == []
        assert check_environment("anthropic") == ["ANTHROPIC_API_KEY"]

    def test_gateway_url_is_optional(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_API_KEY", MAJORDOMO_KEY)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant")
        assert check_environment("anthropic") == []

    def test_unknown_provider(self) -> None:
        with pytest.raises(ValueError, match="Unknown provider 'mistral'"):
            check_environment("mistral")  # type: ignore[arg-type]


class TestBuildHeaders:
    @pytest.fixture(autouse=True)
    def _key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("MAJORDOMO_API_KEY", MAJORDOMO_KEY)

    def test_key_only(self) -> None:
        assert build_headers() == {"X-Majordomo-Key": MAJORDOMO_KEY}

    def test_all_metadata(self) -> None:
        assert build_headers(
            provider_header="gemini-openai",
            feature="chat-bot",
            step="synthesis",
            user_id="user-123",
            session_id="sess-9",
        ) == {
            "X-Majordomo-Key": MAJORDOMO_KEY,
            "X-Majordomo-Provider": "gemini-openai",
            "X-Majordomo-Feature": "chat-bot",
            "X-Majordomo-Step": "synthesis",
            "X-Majordomo-User-Id": "user-123",
            "X-Majordomo-Session-Id": "sess-9",
        }

    def test_integer_ids_become_strings(self) -> None:
        headers = build_headers(user_id=42, session_id=7)
        assert headers["X-Majordomo-User-Id"] == "42"
        assert headers["X-Majordomo-Session-Id"] == "7"

    def test_none_and_empty_values_are_left_out(self) -> None:
        assert build_headers(feature=None, step="", user_id=None) == {"X-Majordomo-Key": MAJORDOMO_KEY}

    def test_extra_headers_are_merged(self) -> None:
        headers = build_headers(feature="f", extra_headers={"X-Custom-Header": "value"})
        assert headers == {
            "X-Majordomo-Key": MAJORDOMO_KEY,
            "X-Majordomo-Feature": "f",
            "X-Custom-Header": "value",
        }

    def test_extra_headers_override_case_insensitively(self) -> None:
        headers = build_headers(feature="f", extra_headers={"x-majordomo-feature": "g"})
        assert headers == {"X-Majordomo-Key": MAJORDOMO_KEY, "x-majordomo-feature": "g"}

    def test_line_breaks_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="X-Majordomo-Step must not contain line breaks"):
            build_headers(step="a\r\nX-Evil: 1")

    def test_missing_key(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("MAJORDOMO_API_KEY")
        with pytest.raises(ValueError, match=KEY_REQUIRED):
            build_headers(feature="f")
