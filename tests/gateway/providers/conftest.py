"""Test setup for the provider parsers; the shared helpers live in provider_testkit.py."""

from __future__ import annotations

import random

import pytest
from provider_testkit import SEED


@pytest.fixture
def rng() -> random.Random:
    return random.Random(SEED)
