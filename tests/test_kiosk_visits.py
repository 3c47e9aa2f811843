"""Visits on the kiosk page in Debian's Chromium (touch emulation) against the real app with a scripted engine:
what one visitor can see of another, the operator unlock, the welcome screen, larger text and the touch
guards. Needs the daemon side of visits (hello `visit`, `new_visit`, X-Kioskd-Visit, /api/operator/*)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from playwright.async_api import Page, expect

from daemon.appkeys import SETTINGS
from daemon.visits.pin import hash_pin
from tests.browser import LARGE, SMALL, ask, kiosk_page, needs_chromium, screenshot, wait_answer_state, wait_status
from tests.fakes import ScriptedEngine, serve

pytestmark = needs_chromium

PIN = "2468"
# The on-screen keyboard is tested in test_kiosk_keyboard.py; here it stays out of the way of fill().
PAGE = "/?keyboard=off"
FETCH = """async ([path, headers]) => {
  const r = await fetch(path, { headers, cache: 'no-store' });
  let body = null;
  try { body = await r.json(); } catch {}
  return { status: r.status, body };
}"""


def record_visits(page: Page) -> list[str]:
    """The visit tokens the daemon hands this page (hello, visit and reset frames), in order."""
    visits: list[str] = []

    def on_frame(data: str | bytes) -> None:
        frame: dict[str, Any] = json.loads(data)
        if frame.get("type") in ("hello", "visit", "reset") and frame.get("visit"):
            visits.append(str(frame["visit"]))

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    return visits


async def until(condition: Any, within: float = 10.0) -> None:
    for _ in range(int(within / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def fetch(page: Page, path: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return dict(await page.evaluate(FETCH, [path, headers or {}]))


async def press_pin(page: Page, pin: str) -> None:
    for digit in pin:
        await page.locator(f"[data-testid=pin-digit][data-digit='{digit}']").tap()
    await page.get_by_test_id("pin-ok").tap()


def test_a_new_customer_sees_nothing_of_the_visitor_before() -> None:
    engine = ScriptedEngine(["Down", " the hall", "."], delay=0.005)

    async def test() -> None:
        async with serve(engine, history_mode="keep") as served, kiosk_page(served.url + PAGE) as (page, log):
            visits = record_visits(page)
            await page.reload()
            await wait_status(page, "ready")
            await page.get_by_test_id("welcome").tap()
            await ask(page, "Where is the pharmacy, visitor A?")
            await wait_answer_state(page, "done")
            a_session = await page.get_by_test_id("app").get_attribute("data-session")
            assert a_session and visits
            a_visit = visits[-1]
            await page.get_by_test_id("new-customer").tap()
            await expect(page.locator("[data-testid=message]")).to_have_count(0)
            await until(lambda: len(visits) >= 2 and visits[-1] != a_visit)
            await page.get_by_test_id("history-toggle").tap()
            await expect(page.get_by_test_id("history-empty")).to_be_visible()
            await expect(page.get_by_test_id("session-item")).to_have_count(0)
            await expect(page.get_by_test_id("history-panel")).not_to_contain_text("visitor A")
            # Visitor B's page asking the API directly: without a visit, with A's old one, or with B's own.
            assert (await fetch(page, "/api/sessions"))["status"] == 403
            assert (await fetch(page, f"/api/sessions/{a_session}"))["status"] == 403
            old = {"X-Kioskd-Visit": a_visit}
            assert (await fetch(page, "/api/sessions", old))["status"] == 403
            assert (await fetch(page, f"/api/sessions/{a_session}", old))["status"] == 403
            mine = {"X-Kioskd-Visit": visits[-1]}
            listed = await fetch(page, "/api/sessions", mine)
            assert listed["status"] == 200 and listed["body"]["sessions"] == [], listed
            assert (await fetch(page, f"/api/sessions/{a_session}", mine))["status"] in (403, 404)
            await screenshot(page, "800x480-en-new-visit-history")
            assert log.errors == []

    asyncio.run(test())


def test_the_operator_pin_unlocks_the_archive_and_wrong_pins_lock_out() -> None:
    engine = ScriptedEngine(["Nine", " to five", "."], delay=0.005)
    settings = {"history_mode": "keep", "operator_pin": hash_pin(PIN), "operator_lockout_attempts": 3,
                "operator_lockout_seconds": 60}

    async def test() -> None:
        async with serve(engine, **settings) as served, kiosk_page(served.url + PAGE) as (page, log):
            await wait_status(page, "ready")
            await ask(page, "Opening hours for visitor A?")
            await wait_answer_state(page, "done")
            a_session = await page.get_by_test_id("app").get_attribute("data-session")
            await page.get_by_test_id("new-customer").tap()
            await page.get_by_test_id("history-toggle").tap()
            await expect(page.get_by_test_id("history-empty")).to_be_visible()
            await page.get_by_test_id("operator-unlock").tap()
            await expect(page.get_by_test_id("pin-pad")).to_be_visible()
            await press_pin(page, "1111")
            await expect(page.get_by_test_id("pin-message")).to_have_text(re.compile(r"\d+ attempts left"))
            await screenshot(page, "800x480-en-operator-pin")
            await press_pin(page, PIN)
            await expect(page.get_by_test_id("pin-pad")).to_have_count(0)
            await expect(page.get_by_test_id("operator-banner")).to_be_visible()
            item = page.locator(f"[data-testid=session-item][data-session-id='{a_session}']")
            await expect(item).to_contain_text("visitor A")
            await page.get_by_test_id("operator-lock").tap()
            await expect(page.get_by_test_id("operator-banner")).to_have_count(0)
            await expect(item).to_have_count(0)
            await page.get_by_test_id("operator-unlock").tap()
            digit = page.locator("[data-testid=pin-digit]").first
            for _ in range(3):  # (fewer when the daemon still counts the wrong PIN before the unlock)
                if await digit.is_disabled():
                    break
                await press_pin(page, "9999")
                await expect(page.get_by_test_id("pin-message")).not_to_have_text("")
            await expect(page.get_by_test_id("pin-message")).to_have_text(re.compile(r"Try again in \d+ s"))
            await expect(digit).to_be_disabled()
            await screenshot(page, "800x480-en-operator-locked-out")
            assert log.errors == []

    asyncio.run(test())


def test_the_welcome_screen_greets_at_start_and_after_the_idle_reset() -> None:
    engine = ScriptedEngine(["Yes", "."], delay=0.005)
    settings = {"idle_reset": 1.0, "venue_name": "City Library", "welcome_en": "Welcome! Ask me anything.",
                "welcome_zh": "欢迎！请随便问。", "suggestions": "Opening hours?|Where are the toilets?"}

    async def test() -> None:
        async with serve(engine, **settings) as served, kiosk_page(served.url + PAGE, viewport=LARGE) as (page, log):
            await wait_status(page, "ready")
            welcome = page.get_by_test_id("welcome")
            await expect(page.get_by_test_id("welcome-venue")).to_have_text("City Library")
            await expect(page.get_by_test_id("welcome-line")).to_have_text("Welcome! Ask me anything.")
            await expect(page.get_by_test_id("welcome-tap")).to_contain_text("Tap to start / 点击开始")
            await expect(welcome.get_by_test_id("suggestion")).to_have_count(2)
            await screenshot(page, "1920x1080-en-welcome")
            await page.get_by_test_id("welcome-line").tap()  # any touch starts the visit
            await expect(welcome).to_have_count(0)
            await ask(page, "Are you open?")
            await wait_answer_state(page, "done")
            await expect(welcome).to_be_visible(timeout=10000)  # the idle reset welcomes the next visitor
            await expect(page.locator("[data-testid=message]")).to_have_count(0)
            await page.set_viewport_size(SMALL)
            await page.get_by_test_id("lang-toggle").tap()
            await expect(page.get_by_test_id("welcome-line")).to_have_text("欢迎！请随便问。")
            await screenshot(page, "800x480-zh-welcome")
            assert log.errors == []

    asyncio.run(test())


def test_history_mode_visit_leaves_no_trace_in_the_database_after_the_idle_reset() -> None:
    engine = ScriptedEngine(["Noted", "."], delay=0.005)
    marker = "zebra umbrella 4711"

    async def test() -> None:
        async with serve(engine, history_mode="visit", idle_reset=1.0) as served, \
                kiosk_page(served.url + PAGE) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, f"Remember {marker}")
            await wait_answer_state(page, "done")
            await expect(page.get_by_test_id("welcome")).to_be_visible(timeout=10000)
            path = served.app[SETTINGS].current.history_file
            files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
            assert files, f"no database at {path}"
            for file in files:
                assert marker.encode() not in file.read_bytes(), f"{file} still holds the visit's text"

    asyncio.run(test())


TOUCH_STATE = """() => {
  const fire = (el) => { const e = new MouseEvent('contextmenu', {bubbles: true, cancelable: true});
                         el.dispatchEvent(e); return e.defaultPrevented; };
  const box = document.querySelector('[data-testid=composer-input]');
  const message = document.querySelector('[data-testid=message]');
  const css = (el, p) => getComputedStyle(el).getPropertyValue(p);
  return { viewport: document.querySelector('meta[name=viewport]').content,
           touchAction: css(document.body, 'touch-action'), overscroll: css(document.body, 'overscroll-behavior-x'),
           messageSelect: css(message, 'user-select'), boxSelect: css(box, 'user-select'),
           menuOnMessage: !fire(message), menuOnBox: !fire(box) };
}"""


def test_touch_polish_and_the_larger_text_toggle() -> None:
    engine = ScriptedEngine(["Fine", "."], delay=0.005)

    async def test() -> None:
        async with serve(engine) as served, kiosk_page(served.url + PAGE) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "How are you?")
            await wait_answer_state(page, "done")
            state = await page.evaluate(TOUCH_STATE)
            assert "user-scalable=no" in state["viewport"] and "maximum-scale=1" in state["viewport"]
            assert state["touchAction"] == "pan-x pan-y" and state["overscroll"] == "none", state
            assert state["messageSelect"] == "none" and state["boxSelect"] == "text", state
            assert not state["menuOnMessage"] and state["menuOnBox"], state
            size = "() => parseFloat(getComputedStyle(document.documentElement).fontSize)"
            normal = await page.evaluate(size)
            await page.get_by_test_id("text-size").tap()
            assert await page.evaluate(size) > normal * 1.2
            await expect(page.get_by_test_id("text-size")).to_have_attribute("aria-pressed", "true")
            await screenshot(page, "800x480-en-large-text")
            await page.get_by_test_id("new-customer").tap()  # the next visitor starts with the usual size
            await expect(page.get_by_test_id("text-size")).to_have_attribute("aria-pressed", "false")
            assert await page.evaluate(size) == normal

    asyncio.run(test())
