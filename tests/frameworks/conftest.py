"""Fixtures for the majordomo-frameworks tests: an isolated environment and a fake gateway on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from frameworks_fake_gateway import FakeGateway
from frameworks_test_env import CLEARED_ENV, MAJORDOMO_KEY, PROVIDER_KEYS


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    # agno reports runs to its cloud unless told not to; these tests use loopback only.
    monkeypatch.setenv("AGNO_TELEMETRY", "false")


@pytest.fixture(scope="session")
def fake_gateway_server() -> Iterator[FakeGateway]:
    server = FakeGateway().start()
    yield server
    server.stop()


@pytest.fixture
def fake_gateway(fake_gateway_server: FakeGateway) -> FakeGateway:
    fake_gateway_server.clear()
    return fake_gateway_server


@pytest.fixture
def gateway_env(monkeypatch: pytest.MonkeyPatch, fake_gateway: FakeGateway) -> FakeGateway:
    """All variables set, with ``MAJORDOMO_GATEWAY_URL`` pointing at the fake gateway."""
    monkeypatch.setenv("MAJORDOMO_GATEWAY_URL", fake_gateway.url)
    monkeypatch.setenv("MAJORDOMO_API_KEY", MAJORDOMO_KEY)
    for name, value in PROVIDER_KEYS.items():
        monkeypatch.setenv(name, value)
    return fake_gateway
