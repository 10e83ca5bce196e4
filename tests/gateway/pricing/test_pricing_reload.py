"""The override file is picked up when it changes, checked at most once a second."""

from __future__ import annotations

import logging
import os
from decimal import Decimal
from pathlib import Path

import pytest
from majordomo_gateway.pricing import PriceBook
from majordomo_gateway.pricing import reload as reload_module
from majordomo_gateway.usage import Usage

ONE_MTOK = Usage(input_tokens=1_000_000)
LOGGER = "majordomo.pricing"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def overrides(input_mtok: str) -> str:
    prices = f"{{input_mtok: {input_mtok}, output_mtok: 1}}"
    return f"models:\n  - {{provider: openai, model: acme, prices: {prices}}}\n"


_generation = 0


def rewrite(path: Path, text: str) -> None:
    # Give every write a distinct mtime: some filesystems only keep whole seconds.
    global _generation
    _generation += 1
    path.write_text(text, encoding="utf-8")
    stamp = 1_700_000_000_000_000_000 + _generation * 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "pricing.yaml"
    rewrite(path, overrides("1"))
    return path


def acme_cost(book: PriceBook) -> Decimal | None:
    return book.price("openai", "acme", ONE_MTOK).total_cost


def test_change_is_picked_up_after_the_check_interval(path: Path, clock: FakeClock) -> None:
    book = PriceBook(path, clock=clock)
    assert acme_cost(book) == Decimal(1)

    rewrite(path, overrides("2"))
    clock.advance(0.5)
    assert acme_cost(book) == Decimal(1)  # not looked at yet

    clock.advance(0.5)
    assert acme_cost(book) == Decimal(2)


def test_file_is_stat_at_most_once_per_interval(
    path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = PriceBook(path, clock=clock)
    stats: list[object] = []
    real_stat = os.stat

    def counting_stat(target: object) -> os.stat_result:
        stats.append(target)
        return real_stat(target)  # type: ignore[arg-type]

    monkeypatch.setattr(reload_module.os, "stat", counting_stat)

    for _ in range(1_000):
        acme_cost(book)
    assert stats == []

    clock.advance(1.0)
    for _ in range(1_000):
        acme_cost(book)
    assert len(stats) == 1


def test_broken_edit_keeps_previous_prices_and_logs_once(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    book = PriceBook(path, clock=clock)

    rewrite(path, overrides("1").replace("input_mtok", "input_mtokk"))
    for _ in range(3):
        clock.advance(1.0)
        assert acme_cost(book) == Decimal(1)

    errors = [record.getMessage() for record in caplog.records if record.levelno == logging.ERROR]
    assert len(errors) == 1
    assert str(path) in errors[0]
    assert "'input_mtokk'" in errors[0]
    assert "keeping the previous prices" in errors[0]

    rewrite(path, overrides("3"))
    clock.advance(1.0)
    assert acme_cost(book) == Decimal(3)


def test_deleted_file_keeps_previous_prices(
    path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger=LOGGER)
    book = PriceBook(path, clock=clock)

    path.unlink()
    clock.advance(1.0)

    assert acme_cost(book) == Decimal(1)
    assert any("disappeared" in record.getMessage() for record in caplog.records)

    rewrite(path, overrides("4"))
    clock.advance(1.0)
    assert acme_cost(book) == Decimal(4)


def test_file_replaced_by_rename_is_picked_up(path: Path, clock: FakeClock) -> None:
    # Editors and config tools often write a new file and rename it over the old one.
    book = PriceBook(path, clock=clock)
    replacement = path.with_name("pricing.yaml.tmp")
    rewrite(replacement, overrides("5"))
    os.replace(replacement, path)

    clock.advance(1.0)

    assert acme_cost(book) == Decimal(5)


def test_added_model_is_found_after_reload(path: Path, clock: FakeClock) -> None:
    book = PriceBook(path, clock=clock)
    assert not book.price("openai", "brand-new-model", ONE_MTOK).found

    rewrite(
        path,
        overrides("1")
        + "  - {provider: openai, model: brand-new-model, prices: {input_mtok: 7, output_mtok: 9}}\n",
    )
    clock.advance(1.0)

    assert book.price("openai", "brand-new-model", ONE_MTOK).total_cost == Decimal(7)
