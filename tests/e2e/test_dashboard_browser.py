"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real gateway
serving a database that ``majordomo demo`` filled through the proxy.  Log in through the form, the
chart draws, the group-by and a filter change the breakdown, its CSV equals ``majordomo report
--json``, the request log pages and opens a request.  Saves docs/images/dashboard.png (the README's
screenshot).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support import REPO, GatewayProcess, majordomo

SCREENSHOT = REPO / "docs" / "images" / "dashboard.png"
VIEWPORT = {"width": 1280, "height": 1000}
# Pixels of the series' colours (grid lines and labels are grey), counted on the chart's canvas.
COLOURED_PIXELS = """() => {
  const canvas = document.querySelector('#chart canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let coloured = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
    if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
  }
  return {coloured, total: canvas.width * canvas.height};
}"""


def _browser_required() -> bool:
    return os.environ.get("CI") == "true" or os.environ.get("MAJORDOMO_TEST_REQUIRE_BROWSER") == "1"


@dataclass
class Demo:
    url: str
    summary: dict[str, Any]
    gateway: GatewayProcess

    def report(self, *args: str) -> list[dict[str, Any]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
        return orjson.loads(majordomo("report", *args, "--json", "--database-url", self.url, env=env).stdout)


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed (bash gateway/scripts/ensure-chromium.sh installs it)"
        if _browser_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
async def demo(tmp_path_factory: pytest.TempPathFactory, mock_upstream: Any) -> AsyncIterator[Demo]:
    workdir = tmp_path_factory.mktemp("dashboard-browser")
    url = f"sqlite:///{workdir / 'demo.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAJORDOMO_")}
    result = majordomo("demo", "--no-serve", "--json", "--port", "0", "--requests", "900", "--days", "6",
                       "--speed", "50", "--seconds", "3", "--database-url", url, env=env, cwd=workdir)
    summary = orjson.loads(result.stdout)
    gateway = GatewayProcess(database_url=url, upstream_url=mock_upstream.url, workdir=workdir).start()
    yield Demo(url, summary, gateway)
    gateway.stop()


def _cost(value: str | float | None) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def _assert_csv_is_the_report(text: str, report: list[dict[str, Any]], labels: list[str]) -> None:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == len(report) > 0
    for got, want in zip(rows, report, strict=True):
        for label in labels:
            assert (got[label] or None) == (None if want[label] is None else str(want[label]))
        for name in ("requests", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "unpriced",
                     "errors", "aborted"):
            assert int(got[name]) == want[name], (name, got, want)
        want_cost = _cost(want["cost_usd"])
        got_cost = _cost(got["cost_usd"])
        assert (got_cost is None) == (want_cost is None)
        if got_cost is not None and want_cost is not None:
            assert abs(got_cost - want_cost) < Decimal("1e-9")


async def test_dashboard_in_a_browser(chromium: str, demo: Demo, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    login = demo.summary["login"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium)
        context = await browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        # Without a session: the login form, and a wrong password says so.
        await page.goto(f"{demo.gateway.url}/dashboard#range=7d")
        await page.fill("#email", login["email"])
        await page.fill("#password", "not the password")
        await page.click("#login button[type=submit]")
        await page.wait_for_function("() => document.getElementById('login-message').textContent.length > 0")
        assert "wrong email or password" in await page.text_content("#login-message") or ""
        await page.fill("#password", login["password"])
        await page.click("#login button[type=submit]")

        # The overview: the chart draws one band per feature, the cards and top lists are the report's.
        await page.wait_for_selector("#chart canvas")
        await page.wait_for_function("() => document.getElementById('chart').dataset.series > 0")
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT), full_page=False)
        pixels = await page.evaluate(COLOURED_PIXELS)
        assert pixels["coloured"] > 0.02 * pixels["total"], pixels
        by_feature = demo.report("--group-by", "feature", "--since", "7d")
        legend = await page.locator(".u-legend .u-series .u-label").all_text_contents()
        assert {name for name in legend if name != "Time"} == {row["feature"] or "(none)" for row in by_feature}
        assert await page.locator("#who").text_content() == f"{login['email']} (admin)"
        top_models = [row["model"] for row in demo.report("--group-by", "model", "--since", "7d", "--limit", "10")]
        shown = await page.locator("[data-top=model] tbody tr td:first-child").all_text_contents()
        assert shown == top_models
        assert "acme-support-llm-v1" in (await page.text_content("#unpriced") or "")  # the model without a price

        # Stack the chart by model instead.
        await page.select_option("#stack-by", "model")
        await page.wait_for_function("() => location.hash.includes('stack_by=model')")
        stacks = min(len(top_models), 9)  # 8 models and "(other)" at most
        await page.wait_for_function(f"() => document.getElementById('chart').dataset.series == {stacks}")

        # Breakdown: group by model instead of feature, filter on the costliest feature, download the CSV.
        await page.click("nav button[data-tab=breakdown]")
        await page.wait_for_selector("#breakdown-table table")
        await page.click("#group-chips .chip button")  # remove "feature"
        await page.select_option("#group-add", "model")
        await page.wait_for_selector("#breakdown-table th:first-child:text-is('model')")
        feature = by_feature[0]["feature"]
        await page.fill("#where-input", f"feature={feature}")
        await page.press("#where-input", "Enter")
        await page.wait_for_function("() => location.hash.includes('where=feature')")
        await page.wait_for_selector("#where-chips .chip")
        want = demo.report("--group-by", "model", "--where", f"feature={feature}", "--since", "7d")
        await page.wait_for_function(
            f"() => document.querySelectorAll('#breakdown-table tbody tr').length == {len(want)}")
        async with page.expect_download() as download_info:
            await page.click("#breakdown-csv")
        download = await download_info.value
        saved = tmp_path / "breakdown.csv"
        await download.save_as(saved)
        _assert_csv_is_the_report(saved.read_text(), want, ["model"])
        first_row = await page.locator("#breakdown-table tbody tr:first-child td").all_text_contents()
        assert first_row[0] == want[0]["model"] and first_row[1] == f"{want[0]['requests']:,}"

        # A top list's CSV is the report's too.
        await page.click("nav button[data-tab=overview]")
        await page.wait_for_selector("[data-top=user] a")
        async with page.expect_download() as download_info:
            await page.click("[data-top=user] a")
        await (await download_info.value).save_as(tmp_path / "users.csv")
        _assert_csv_is_the_report((tmp_path / "users.csv").read_text(),
                                  demo.report("--group-by", "user", "--since", "7d", "--limit", "10"), ["user"])

        # The request log: errors only, newest first, the next page, one request in detail.
        await page.click("nav button[data-tab=requests]")
        await page.select_option("#req-status", "error")
        await page.click("#req-apply")
        await page.wait_for_function("() => location.hash.includes('status=error')")
        await page.wait_for_selector("#requests-table tbody tr")
        statuses = await page.locator("#requests-table tbody tr td:nth-child(4)").all_text_contents()
        assert statuses and all(int(status) >= 400 for status in statuses)
        first_page = await page.locator("#requests-table tbody tr td:first-child").all_text_contents()
        assert first_page == sorted(first_page, reverse=True)
        errors_total = sum(row["errors"] for row in demo.report("--since", "7d"))
        if errors_total > 50:
            await page.click("#req-older")
            await page.wait_for_function("() => document.getElementById('req-page').textContent.startsWith('page 2')")
            second_page = await page.locator("#requests-table tbody tr td:first-child").all_text_contents()
            assert second_page and max(second_page) <= min(first_page)
        await page.click("#requests-table tbody tr:first-child")
        await page.wait_for_selector("#detail:not([hidden]) dl")
        detail = await page.text_content("#detail") or ""
        assert "error_message" in detail and "request_path" in detail and "Feature" in detail

        await page.click("#detail-close")
        assert await page.locator("#detail").is_hidden()

        # Logging out ends the session: the page is the login form again.
        await page.click("#logout")
        await page.wait_for_selector("#login")
        assert errors == []
        await browser.close()
