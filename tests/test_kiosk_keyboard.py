"""The on-screen keyboard, in Debian's Chromium with touch emulation against the real daemon and SmolLM2.

A Chinese question typed entirely on the keyboard (pinyin -> word candidates -> pick -> ask) and an English
one get answers; the keyboard never covers the newest answer at 800x480; "auto" shows it on touch and hides
it when a real key is pressed; "off" never shows it. Screenshots of both languages at both screen sizes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from playwright.async_api import Page, expect

from tests.browser import (
    LARGE,
    SMALL,
    kiosk_page,
    last_answer,
    needs_chromium,
    screenshot,
    wait_answer_state,
    wait_status,
)
from tests.conftest import Daemon

pytestmark = needs_chromium

KEYBOARD = "[data-testid=onscreen-keyboard]"


def model_args(test_model: Path) -> tuple[str, ...]:
    return ("--model", str(test_model), "--threads", "2", "--n-ctx", "1024", "--max-tokens", "120")


async def tap_key(page: Page, button: str) -> None:
    await page.locator(f'{KEYBOARD} [data-skbtn="{button}"]').tap()


async def tap_keys(page: Page, letters: str) -> None:
    for letter in letters:
        await tap_key(page, "{space}" if letter == " " else letter)


async def pick_word(page: Page, pinyin: str, word: str) -> None:
    """Types `pinyin` on the keys, then taps `word` among the candidates (turning pages if needed)."""
    await tap_keys(page, pinyin)
    await expect(page.get_by_test_id("kb-pinyin")).to_have_text(pinyin)
    candidate = page.get_by_test_id("kb-candidate").filter(has_text=word)
    for _ in range(5):
        if await candidate.count():
            break
        await page.get_by_test_id("kb-next").tap()
    await candidate.first.tap()


async def question_box(page: Page) -> str:
    return await page.get_by_test_id("composer-input").input_value()


async def assert_newest_answer_visible(page: Page) -> None:
    """The keyboard is below the conversation, and the end of the newest answer is in view above it."""
    keys = await page.locator(KEYBOARD).bounding_box()
    scroller = await page.locator(".conversation-scroll").bounding_box()
    answer = await last_answer(page).bounding_box()
    assert keys and scroller and answer
    assert scroller["y"] + scroller["height"] <= keys["y"] + 1, (scroller, keys)
    answer_bottom = answer["y"] + answer["height"]
    assert scroller["y"] < answer_bottom <= scroller["y"] + scroller["height"] + 2, (answer, scroller)
    assert answer_bottom <= keys["y"], "the keyboard covers the newest answer"


def test_chinese_question_typed_on_the_keyboard_gets_an_answer(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        async with kiosk_page(f"{daemon.url}/?keyboard=always", locale="zh-CN") as (page, log):
            await wait_status(page, "ready")
            await page.get_by_test_id("composer-input").tap()
            await expect(page.locator(KEYBOARD)).to_be_visible()
            await expect(page.locator(KEYBOARD)).to_have_attribute("data-lang", "zh")
            await pick_word(page, "tushuguan", "图书馆")
            await pick_word(page, "jidian", "几点")
            await pick_word(page, "kaifang", "开放")
            await tap_key(page, "?")
            assert await question_box(page) == "图书馆几点开放？"
            await screenshot(page, "800x480-zh-keyboard")
            await tap_key(page, "{enter}")
            user = page.locator("[data-testid=message][data-role=user]").last
            await expect(user).to_contain_text("图书馆几点开放？")
            await wait_answer_state(page, "done")
            assert (await last_answer(page).get_by_test_id("message-body").inner_text()).strip()
            assert await question_box(page) == ""
            await assert_newest_answer_visible(page)
            await screenshot(page, "800x480-zh-keyboard-answer")
            assert not log.errors, log.errors
            assert not [m for m in log.console if "Content Security Policy" in m], log.console

    asyncio.run(test())


def test_english_question_typed_on_the_keyboard_and_paging_and_language_key(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        async with kiosk_page(f"{daemon.url}/?keyboard=always", locale="en-US") as (page, log):
            await wait_status(page, "ready")
            await page.get_by_test_id("composer-input").tap()
            await tap_key(page, "{shift}")
            await tap_keys(page, "W")
            await tap_keys(page, "hat colour is the sky")
            await tap_key(page, "?")
            await tap_key(page, "{symbols}")
            await tap_keys(page, "42")
            await tap_key(page, "{bksp}")
            await tap_key(page, "{bksp}")
            await tap_key(page, "{abc}")
            assert await question_box(page) == "What colour is the sky?"
            await screenshot(page, "800x480-en-keyboard")
            await tap_key(page, "{enter}")
            await wait_answer_state(page, "done")
            assert (await last_answer(page).get_by_test_id("message-body").inner_text()).strip()
            await assert_newest_answer_visible(page)
            # The language key switches the page to Chinese; then the keys type pinyin with paged candidates.
            await tap_key(page, "{lang}")
            await expect(page.locator("html")).to_have_attribute("lang", "zh")
            await tap_keys(page, "shi")
            first = await page.get_by_test_id("kb-candidate").all_inner_texts()
            await page.get_by_test_id("kb-next").tap()
            second = await page.get_by_test_id("kb-candidate").all_inner_texts()
            assert first and second and not set(first) & set(second)
            await page.get_by_test_id("kb-prev").tap()
            assert await page.get_by_test_id("kb-candidate").all_inner_texts() == first
            assert not log.errors, log.errors

    asyncio.run(test())


def test_auto_shows_on_touch_hides_for_a_real_keyboard_and_off_never_shows(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        async with kiosk_page(daemon.url) as (page, _log):
            await wait_status(page, "ready")
            box = page.get_by_test_id("composer-input")
            await box.tap()
            await expect(page.locator(KEYBOARD)).to_be_visible()
            await tap_keys(page, "hi")
            await page.keyboard.type(" there")  # a hardware key: the keyboard steps aside, typing goes on
            await expect(page.locator(KEYBOARD)).to_be_hidden()
            assert await question_box(page) == "hi there"
            await box.click()  # a mouse click does not bring it back
            await expect(page.locator(KEYBOARD)).to_be_hidden()
            await box.tap()
            await expect(page.locator(KEYBOARD)).to_be_visible()
            await page.get_by_test_id("app").locator(".conversation-scroll").tap()
            await expect(page.locator(KEYBOARD)).to_be_hidden()  # the box lost the focus
            await page.goto(f"{daemon.url}/?keyboard=off")
            await wait_status(page, "ready")
            await page.get_by_test_id("composer-input").tap()
            await page.wait_for_timeout(300)
            assert await page.locator(KEYBOARD).count() == 0

    asyncio.run(test())


def test_keyboard_screenshots_at_both_sizes_in_both_languages(
        daemon_factory: Callable[..., Daemon], test_model: Path) -> None:
    daemon = daemon_factory(*model_args(test_model))

    async def test() -> None:
        for viewport in (SMALL, LARGE):
            for locale, pinyin in (("en-US", ""), ("zh-CN", "tushug")):
                async with kiosk_page(f"{daemon.url}/?keyboard=always", viewport=viewport,
                                      locale=locale) as (page, log):
                    await wait_status(page, "ready")
                    await page.get_by_test_id("composer-input").tap()
                    if pinyin:
                        await tap_keys(page, pinyin)
                        await expect(page.get_by_test_id("kb-candidate").first).to_have_text("图书馆")
                    else:
                        await tap_keys(page, "hello")
                    keys = await page.locator(KEYBOARD).bounding_box()
                    assert keys and keys["y"] + keys["height"] <= viewport["height"] + 1
                    size = f"{viewport['width']}x{viewport['height']}"
                    await screenshot(page, f"{size}-{locale[:2]}-keyboard-typing")
                    assert not log.errors, log.errors

    asyncio.run(test())
