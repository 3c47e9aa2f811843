"""The kiosk page in Debian's Chromium against the real daemon and the SmolLM2 test model.

What a visitor does: ask and watch the answer grow, stop it, find the conversation again after a reload, and
keep going when the daemon restarts underneath the page.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.browser import (
    SMALL,
    ask,
    kiosk_page,
    last_answer,
    needs_chromium,
    screenshot,
    wait_answer_state,
    wait_status,
)
from tests.conftest import Daemon, start_daemon

pytestmark = needs_chromium

# Each animation frame, the length of the newest answer's text, until the answer is no longer streaming.
SAMPLE_FRAMES = """() => new Promise((resolve) => {
  const lengths = [];
  const tick = () => {
    const answers = document.querySelectorAll('[data-testid=message][data-role=assistant]');
    const answer = answers[answers.length - 1];
    if (answer) {
      lengths.push(answer.querySelector('[data-testid=message-body]').textContent.length);
      if (answer.getAttribute('data-state') !== 'streaming') { resolve(lengths); return; }
    }
    requestAnimationFrame(tick);
  };
  tick();
})"""


def model_args(test_model: Path, *extra: str) -> tuple[str, ...]:
    return ("--model", str(test_model), "--threads", "2", "--n-ctx", "1024", "--max-tokens", "200", *extra)


async def answer_text(page: Page) -> str:
    return await last_answer(page).get_by_test_id("message-body").inner_text()


def stored_session(daemon: Daemon, session: str) -> dict[str, object]:
    status, body = daemon.get(f"/api/sessions/{session}")
    assert status == 200, body
    return dict(json.loads(body))


def test_answer_grows_over_several_frames(daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        async with kiosk_page(daemon.url, viewport=SMALL) as (page, log):
            await wait_status(page, "ready")
            frames = asyncio.create_task(page.evaluate(SAMPLE_FRAMES))
            await ask(page, "Name three colours of the rainbow and say one thing about each.")
            lengths: list[int] = await asyncio.wait_for(frames, 60)
            growing = sorted({n for n in lengths if n > 0})
            assert len(growing) >= 3, f"the answer did not grow over several frames: {lengths}"
            await wait_answer_state(page, "done")
            assert (await answer_text(page)).strip()
            await expect(page.get_by_test_id("tokens-per-second")).to_contain_text(".")
            user = page.locator("[data-testid=message][data-role=user]").last
            await expect(user).to_contain_text("three colours")
            await wait_status(page, "ready")
            await screenshot(page, "800x480-en-answer")
            assert not log.errors, log.errors

    asyncio.run(test())


def test_stop_cancels_the_answer_at_once_and_keeps_what_was_written(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model, "--max-tokens", "400"))

    async def test() -> None:
        async with kiosk_page(daemon.url) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "Write a long story about a dragon who learns to bake bread.")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop()"
                "?.textContent.length > 40", timeout=30000)
            await page.get_by_test_id("stop").click()
            await wait_answer_state(page, "cancelled", within=5)
            written = await answer_text(page)
            await page.wait_for_timeout(600)
            assert await answer_text(page) == written, "text kept arriving after stop"
            await expect(page.get_by_test_id("stop")).to_be_hidden()
            session = await page.get_by_test_id("app").get_attribute("data-session")
            assert session
            turns = stored_session(daemon, session)["turns"]
            assert isinstance(turns, list) and turns[-1]["status"] == "interrupted"
            assert turns[-1]["content"].strip()[:20] in written

    asyncio.run(test())


def test_history_of_the_visit_can_switch_and_delete_and_a_reload_is_a_new_visit(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model, "--max-tokens", "40"))

    async def test() -> None:
        async with kiosk_page(daemon.url) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "What is a library card?")
            await wait_answer_state(page, "done")
            session = await page.get_by_test_id("app").get_attribute("data-session")
            assert session
            await page.get_by_test_id("history-toggle").click()
            await page.get_by_test_id("new-session").click()
            assert await page.locator("[data-testid=message]").count() == 0
            await page.get_by_test_id("history-toggle").click()
            item = page.locator(f"[data-testid=session-item][data-session-id='{session}']")
            await expect(item).to_contain_text("library card")
            await item.click()
            await expect(page.locator("[data-testid=message][data-role=user]").first).to_contain_text(
                "library card")
            await expect(page.get_by_test_id("app")).to_have_attribute("data-session", session)
            await page.get_by_test_id("history-toggle").click()
            await item.get_by_test_id("session-delete").click()
            await item.get_by_test_id("session-delete-confirm").click()
            await expect(item).to_have_count(0)
            assert daemon.get(f"/api/sessions/{session}")[0] == 404
            # A reload is a fresh screen, and a new visit: the drawer lists nothing of the one before.
            await page.get_by_test_id("history-toggle").click()  # closed again
            await ask(page, "Is the library open today?")
            await wait_answer_state(page, "done")
            await page.reload()
            await wait_status(page, "ready")
            assert await page.locator("[data-testid=message]").count() == 0
            await page.get_by_test_id("history-toggle").click()
            await expect(page.get_by_test_id("history-empty")).to_be_visible()
            await expect(page.get_by_test_id("session-item")).to_have_count(0)

    asyncio.run(test())


def test_page_reconnects_after_the_daemon_restarts_and_marks_a_lost_answer(
        tmp_path: Path, test_model: Path) -> None:
    daemon = start_daemon(tmp_path, *model_args(test_model, "--max-tokens", "400"))
    restarted: list[Daemon] = []

    async def test() -> None:
        async with kiosk_page(daemon.url) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "Tell me a long story about the sea.")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('[data-testid=message][data-role=assistant]')].pop()"
                "?.textContent.length > 20", timeout=30000)
            daemon.stop(signal.SIGKILL)  # Mid-answer: the page must say the answer was lost.
            await wait_answer_state(page, "lost", within=10)
            await wait_status(page, "reconnecting", "connecting", "offline")
            assert (await answer_text(page)).strip(), "the partial answer was dropped"
            restarted.append(start_daemon(tmp_path, *model_args(test_model, "--max-tokens", "30"),
                                          port=daemon.port))
            await wait_status(page, "ready", within=30)
            await ask(page, "Are you back?")
            await wait_answer_state(page, "done")
            assert await page.locator("[data-testid=message][data-state=lost]").count() == 1

    try:
        asyncio.run(test())
    finally:
        for d in (daemon, *restarted):
            if d.proc.poll() is None:
                d.stop(signal.SIGKILL)


@pytest.mark.parametrize("locale, html_lang", [("zh-CN", "zh"), ("en-GB", "en")])
def test_interface_follows_the_browser_language_and_switches(
        daemon_factory: Callable[..., Daemon], test_model: Path, locale: str, html_lang: str) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        async with kiosk_page(daemon.url, locale=locale) as (page, _log):
            await wait_status(page, "ready")
            assert (await page.locator("html").get_attribute("lang") or "").startswith(html_lang)
            placeholder = await page.get_by_test_id("composer-input").get_attribute("placeholder")
            await page.get_by_test_id("lang-toggle").click()
            other = "en" if html_lang == "zh" else "zh"
            assert (await page.locator("html").get_attribute("lang") or "").startswith(other)
            assert await page.get_by_test_id("composer-input").get_attribute("placeholder") != placeholder
            await page.reload()
            await wait_status(page, "ready")
            assert (await page.locator("html").get_attribute("lang") or "").startswith(other)  # Remembered.

    asyncio.run(test())
