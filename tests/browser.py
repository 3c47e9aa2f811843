"""Debian's Chromium driven by Playwright (async API), for the kiosk page tests.

Playwright never downloads a browser here: it launches /usr/bin/chromium with the flags that keep it off the
network. Each test gets a fresh browser and profile, and whatever the page logs to its console or reports as a
CSP violation is collected so tests can assert on it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ROOT

CHROMIUM = os.environ.get("KIOSKD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("KIOSKD_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "kiosk"
SMALL = {"width": 800, "height": 480}
LARGE = {"width": 1920, "height": 1080}

needs_chromium = pytest.mark.skipif(
    not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file(),
    reason=f"{CHROMIUM} is missing: scripts/setup.sh test installs Debian's chromium")


@dataclass
class PageLog:
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def kiosk_page(url: str, *, viewport: dict[str, int] = SMALL, locale: str = "en-US",
                     browser: Browser | None = None) -> AsyncIterator[tuple[Page, PageLog]]:
    """The kiosk page at `url` in a fresh context, ready to be driven; the log of what it reported."""
    async with _browser(browser) as owned:
        context = await owned.new_context(viewport=viewport, locale=locale, has_touch=True)
        page = await context.new_page()
        log = PageLog()
        page.on("console", lambda msg: log.console.append(f"{msg.type}: {msg.text}"))
        page.on("pageerror", lambda exc: log.errors.append(str(exc)))

        async def on_dialog(dialog: Any) -> None:
            log.dialogs.append(dialog.message)
            await dialog.dismiss()

        page.on("dialog", on_dialog)
        await page.goto(url)
        try:
            yield page, log
        finally:
            await context.close()


@asynccontextmanager
async def _browser(browser: Browser | None) -> AsyncIterator[Browser]:
    if browser is not None:
        yield browser
        return
    async with chromium() as fresh:
        yield fresh


async def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    await page.screenshot(path=str(path), animations="disabled")  # finished transitions, not mid-slide
    return path


async def _wait_data_state(page: Page, selector: str, states: tuple[str, ...], within: float) -> None:
    """Until the last element matching `selector` has one of `states` as its data-state."""
    await page.wait_for_function(
        "([selector, states]) => { const m = [...document.querySelectorAll(selector)].pop();"
        " return !!m && states.includes(m.getAttribute('data-state')); }",
        arg=[selector, list(states)], timeout=within * 1000)


async def wait_status(page: Page, *states: str, within: float = 30.0) -> None:
    await _wait_data_state(page, "[data-testid=status]", states, within)


async def ask(page: Page, question: str) -> None:
    await page.get_by_test_id("composer-input").fill(question)
    await page.get_by_test_id("send").click()


def last_answer(page: Page) -> Any:
    return page.locator("[data-testid=message][data-role=assistant]").last


async def wait_answer_state(page: Page, *states: str, within: float = 60.0) -> None:
    await _wait_data_state(page, "[data-testid=message][data-role=assistant]", states, within)
