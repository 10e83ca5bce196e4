"""``majordomo pricing show|unpriced`` and ``majordomo reprice``, against real rows on SQLite and PostgreSQL."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from majordomo_gateway.cli.reprice import _repriced
from majordomo_gateway.pricing.price import Price
from majordomo_gateway.storage.database import UsageRow
from majordomo_gateway.usage import Usage

from tests.support import GatewayProcess, majordomo
from tests.support.client import post

CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}]}
GEMINI = {"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}
OVERRIDES = """\
models:
  - provider: openai
    model: acme-custom-9000
    prices: {input_mtok: 1, output_mtok: 2}
  - provider: openai
    model: gpt-4o
    prices: {input_mtok: 5, output_mtok: 20, cache_read_mtok: 2.5}
"""


def cli_json(gw: GatewayProcess, *args: str, env: dict[str, str] | None = None) -> object:
    result = majordomo(*args, "--json", env={**gw.env(), **(env or {})}, cwd=gw.workdir)
    return orjson.loads(result.stdout)


async def costs(gw: GatewayProcess, model: str) -> list[tuple[Decimal | None, Decimal | None, Decimal | None, bool]]:
    rows = await gw.query(f"SELECT input_cost, output_cost, total_cost, model_alias_found FROM llm_requests "
                          f"WHERE model = '{model}' ORDER BY id")

    def dec(value: object) -> Decimal | None:
        return None if value is None else Decimal(str(value)).quantize(Decimal("1e-10"))

    return [(dec(a), dec(b), dec(c), bool(found)) for a, b, c, found in rows]


async def make_rows(gw: GatewayProcess) -> None:
    for _ in range(3):
        await post(gw, "/v1/chat/completions", {**CHAT, "model": "acme-custom-9000"},
                   {"X-Mock-Model": "acme-custom-9000"})
    for _ in range(2):
        await post(gw, "/v1/chat/completions", CHAT, {"X-Mock-Usage": '{"input_tokens": 1000, "output_tokens": 100, '
                                                                      '"cached_tokens": 400}'})
    await post(gw, "/v1beta/models/acme-gem:generateContent", GEMINI)
    # Neither reports usage: not "unpriced", not repriced.
    await post(gw, "/v1/chat/completions", {**CHAT, "model": "nousage-model"},
               {"X-Mock-Model": "nousage-model", "X-Mock-Scenario": "no-usage"})
    last, _ = await post(gw, "/v1/chat/completions", {**CHAT, "model": "errored"}, {"X-Mock-Status": "500"})
    await gw.row(last.headers["X-Majordomo-Request-Id"])


@pytest.mark.parametrize("fresh_gateway", ["sqlite", "postgres"], indirect=True)
async def test_unpriced_then_reprice_with_overrides(fresh_gateway: GatewayProcess, tmp_path: Path) -> None:
    gw = fresh_gateway
    await make_rows(gw)

    unpriced = cli_json(gw, "pricing", "unpriced")
    assert [(u["provider"], u["model"], u["requests"], u["priced_now"]) for u in unpriced] == [
        ("gemini", "acme-gem", 1, False),
        ("openai", "acme-custom-9000", 3, False),
    ]
    gpt4o_before = await costs(gw, "gpt-4o")
    # gpt-4o catalog: $2.50 input, $1.25 cached, $10 output.
    assert gpt4o_before == [(Decimal("0.0020000000"), Decimal("0.0010000000"), Decimal("0.0030000000"), True)] * 2

    overrides = tmp_path / "prices.yaml"
    overrides.write_text(OVERRIDES)
    config = tmp_path / "with-overrides.yaml"
    config.write_text(f"pricing:\n  overrides_file: {overrides}\n")
    # The database from --database-url, the overrides from --config: like `keys`, nothing from the env.
    env = {"MAJORDOMO_DATABASE_URL": "sqlite:///nowhere/else.db"}
    flags = ("--config", str(config), "--database-url", gw.database_url)

    dry = cli_json(gw, "reprice", "--dry-run", *flags, env=env)
    assert (dry["rows_examined"], dry["rows_changed"], dry["newly_priced"], dry["dry_run"]) == (6, 5, 3, True)
    assert await costs(gw, "gpt-4o") == gpt4o_before
    assert (await costs(gw, "acme-custom-9000"))[0] == (None, None, None, False)

    unpriced = cli_json(gw, "pricing", "unpriced", *flags, env=env)
    assert [(u["model"], u["priced_now"]) for u in unpriced] == [("acme-gem", False), ("acme-custom-9000", True)]

    done = cli_json(gw, "reprice", "--batch-size", "2", *flags, env=env)
    assert {k: v for k, v in done.items() if k != "dry_run"} == {k: v for k, v in dry.items() if k != "dry_run"}
    assert Decimal(done["total_cost_after"]) - Decimal(done["total_cost_before"]) == (
        3 * Decimal("0.00014") + 2 * (Decimal("0.006") - Decimal("0.003")))
    by_model = {c["model"]: c for c in done["changes"]}
    assert set(by_model) == {"acme-custom-9000", "gpt-4o"}
    assert by_model["acme-custom-9000"]["rows"] == 3
    # 100 input at $1 + 20 output at $2 per million (the mock's default usage).
    assert await costs(gw, "acme-custom-9000") == [
        (Decimal("0.0001000000"), Decimal("0.0000400000"), Decimal("0.0001400000"), True)] * 3
    # 600 uncached at $5 + 400 cached at $2.50 + 100 output at $20 per million.
    assert await costs(gw, "gpt-4o") == [
        (Decimal("0.0040000000"), Decimal("0.0020000000"), Decimal("0.0060000000"), True)] * 2

    again = cli_json(gw, "reprice", *flags, env=env)
    assert (again["rows_examined"], again["rows_changed"], again["newly_priced"]) == (6, 0, 0)
    assert again["total_cost_before"] == again["total_cost_after"] == done["total_cost_after"]

    assert [u["model"] for u in cli_json(gw, "pricing", "unpriced", *flags, env=env)] == ["acme-gem"]

    # Back to the catalog for one model only; --since in the future selects nothing.
    assert cli_json(gw, "reprice", "--since", "2999-01-01", "--database-url", gw.database_url)["rows_examined"] == 0
    back = cli_json(gw, "reprice", "--model", "gpt-4o", "--since", "2000-01-01T00:00:00",
                    "--database-url", gw.database_url)
    assert (back["rows_examined"], back["rows_changed"], back["no_longer_priced"]) == (2, 2, 0)
    assert await costs(gw, "gpt-4o") == gpt4o_before
    assert (await costs(gw, "acme-custom-9000"))[0][3] is True  # untouched by --model gpt-4o


def test_text_output(fresh_gateway: GatewayProcess, tmp_path: Path) -> None:
    gw = fresh_gateway
    shown = gw.cli("pricing", "show", "claude-sonnet-4-5").stdout
    assert "anthropic / claude-sonnet-4-5" in shown
    assert "cache write (1h)" in shown and "prompt > 200,000 tokens" in shown and "$22.5" in shown
    assert "no provider prices" in gw.cli("pricing", "show", "acme-unknown", check=False).stdout
    assert gw.cli("pricing", "show", "acme-unknown", check=False).returncode == 1
    assert gw.cli("pricing", "unpriced").stdout.strip() == "every request with usage was priced"
    report = gw.cli("reprice", "--dry-run").stdout
    assert "rows examined      0" in report and "dry run" in report

    overrides = tmp_path / "prices.yaml"
    overrides.write_text(OVERRIDES)
    env = {**gw.env(), "MAJORDOMO_PRICING_OVERRIDES_FILE": str(overrides)}
    [described] = orjson.loads(majordomo("pricing", "show", "ACME-custom-9000", "--provider", "openai", "--json",
                                         env=env).stdout)
    assert (described["source"], described["model_id"], described["prices"]) == (
        "override", "acme-custom-9000", {"input_mtok": "1", "output_mtok": "2"})
    text = majordomo("pricing", "show", "gpt-4o", "--provider", "openai", env=env).stdout
    assert "override" in text and "$5" in text and "$2.5" in text

    overrides.write_text("models: [{provider: openai}]\n")
    bad = majordomo("pricing", "show", "gpt-4o", env=env, check=False)
    assert bad.returncode == 2 and "prices.yaml" in bad.stderr


def test_pricing_show_knows_configured_providers(tmp_path: Path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")},
           "MAJORDOMO_PROVIDERS_LOCAL_KIND": "openai", "MAJORDOMO_PROVIDERS_LOCAL_BASE_URL": "http://127.0.0.1:9/v1",
           "MAJORDOMO_PROVIDERS_LOCAL_PRICING_PROVIDER": "openai",
           "MAJORDOMO_PROVIDERS_BARE_KIND": "openai", "MAJORDOMO_PROVIDERS_BARE_BASE_URL": "http://127.0.0.1:9/v1",
           "MAJORDOMO_DATABASE_URL": f"sqlite:///{tmp_path / 'm.db'}"}
    [local] = orjson.loads(majordomo("pricing", "show", "gpt-4o", "--provider", "local", "--json", env=env).stdout)
    assert (local["provider"], local["found"], local["model_id"]) == ("local", True, "gpt-4o")
    # Without a pricing_provider only the overrides file could price its models.
    bare = majordomo("pricing", "show", "gpt-4o", "--provider", "bare", "--json", env=env, check=False)
    assert bare.returncode == 1 and orjson.loads(bare.stdout)[0]["found"] is False
    listed = {d["provider"] for d in orjson.loads(majordomo("pricing", "show", "gpt-4o", "--json", env=env).stdout)}
    assert {"openai", "local"} <= listed and "bare" not in listed
    unknown = majordomo("pricing", "show", "gpt-4o", "--provider", "nowhere", env=env, check=False)
    assert unknown.returncode == 2 and "unknown provider 'nowhere'" in unknown.stderr and "local" in unknown.stderr

class _Book:
    def __init__(self, total: Decimal) -> None:
        self.total = total

    def price(self, provider: str, model: str | None, usage: Usage, *, when: datetime | None = None) -> Price:
        return Price(self.total, Decimal(0), self.total, True, "m")


@pytest.mark.parametrize(("total", "stored"), [(Decimal("12.5"), Decimal("12.5")), (Decimal(10) ** 10, None)])
def test_reprice_leaves_a_cost_the_columns_cannot_hold_unpriced(total: Decimal, stored: Decimal | None) -> None:
    row = UsageRow("id-1", "openai", "gpt-4.1", datetime(2026, 1, 1, tzinfo=UTC), Usage(10, 1), None, None, None,
                   False)
    update = _repriced(row, _Book(total))  # type: ignore[arg-type]
    assert (update.total_cost, update.input_cost, update.model_alias_found) == (stored, stored, stored is not None)
