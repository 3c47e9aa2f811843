"""The kiosk page in Debian's Chromium against the real app with a scripted token source at the engine seam:
answers we choose exactly (hostile Markdown, very long answers, Chinese) and timing we control (idle reset)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from playwright.async_api import Page, expect

from tests.browser import (
    LARGE,
    SMALL,
    ask,
    kiosk_page,
    last_answer,
    needs_chromium,
    screenshot,
    wait_answer_state,
    wait_status,
)
from tests.fakes import API_TOKEN, ScriptedEngine, serve

pytestmark = needs_chromium

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}  # another machine, with the API token: the whole archive

# Each payload sets window.__xss (or opens a dialog) if it ever runs.
HOSTILE = [
    "Here you go: <script>window.__xss = 'script'</script>\n\n",
    '<img src=x onerror="window.__xss = \'img\'">\n\n',
    "[click me](javascript:window.__xss='md-link')\n\n",
    '<a href="javascript:window.__xss=\'a\'">tap here</a>\n\n',
    "<svg onload=\"window.__xss='svg'\"></svg>\n\n",
    "<iframe src=\"javascript:window.__xss='iframe'\"></iframe>\n\n",
    "<style>body{display:none}</style>\n\n",
    "![pic](x\" onerror=\"window.__xss='alt')\n\n",
    "```html\n<script>window.__xss='code'</script>\n<b onclick=\"alert(1)\">b</b>\n```\n\n",
    "<details open ontoggle=\"alert('details')\">d</details>\n",
]
ACTIVE_MARKUP = ("script, iframe, object, embed, svg, style, form, [onerror], [onload], [onclick], "
                 "[ontoggle], [href^='javascript' i], [src^='javascript' i], img[src]")
RECORD_CSP = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
              "(e) => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


def chop(text: str, size: int = 7) -> list[str]:
    """Split an answer into token-sized pieces (tags and fences arrive in parts, as from a model)."""
    return [text[i:i + size] for i in range(0, len(text), size)]


async def assert_inert(page: Page) -> None:
    for body in await page.locator("[data-testid=message-body]").all():
        active = await body.evaluate(f"(el) => [...el.querySelectorAll({ACTIVE_MARKUP!r})].map(e => e.outerHTML)")
        assert active == [], active
    assert await page.evaluate("window.__xss") is None
    assert await page.evaluate("window.__csp") == []


def test_hostile_answers_are_shown_as_text_and_never_run() -> None:
    engine = ScriptedEngine(chop("".join(HOSTILE)), delay=0.002)

    async def test() -> None:
        async with serve(engine) as served, kiosk_page(served.url, viewport=LARGE) as (page, log):
            await page.add_init_script(RECORD_CSP)
            await page.reload()
            await wait_status(page, "ready")
            await ask(page, "Show me some HTML")
            await wait_answer_state(page, "done")
            body = last_answer(page).get_by_test_id("message-body")
            await expect(body.locator("pre code")).to_contain_text("<script>window.__xss='code'</script>")
            await body.get_by_text("click me").click()
            await body.get_by_text("tap here").click()
            await assert_inert(page)
            assert page.url.rstrip("/") == served.url
            await screenshot(page, "1920x1080-en-hostile-markdown")
            session = await page.get_by_test_id("app").get_attribute("data-session")
            # The same answer read back from the history (of this visit) is just as inert.
            await page.get_by_test_id("history-toggle").click()
            await page.get_by_test_id("new-session").click()
            await expect(page.locator("[data-testid=message]")).to_have_count(0)
            await page.locator(f"[data-testid=session-item][data-session-id='{session}']").click()
            await expect(last_answer(page).get_by_test_id("message-body")).to_contain_text("tap here")
            await assert_inert(page)
            assert log.dialogs == [] and log.errors == []

    asyncio.run(test())


def long_markdown(parts: int) -> str:
    return "".join(f"## Part {i}\n\nSome *text* for part {i}.\n\n- first {i}\n- second {i}\n\n"
                   f"```python\nprint({i})\n```\n\n" for i in range(parts))


def test_a_very_long_answer_arrives_whole_and_rendered() -> None:
    parts = 80
    engine = ScriptedEngine(chop(long_markdown(parts), 4), delay=0.0005)

    async def test() -> None:
        async with serve(engine, max_tokens=32768) as served, kiosk_page(served.url) as (page, log):
            await wait_status(page, "ready")
            await ask(page, "Everything, please")
            await wait_answer_state(page, "done", within=120)
            body = last_answer(page).get_by_test_id("message-body")
            assert await body.locator("h2").count() == parts
            assert await body.locator("li").count() == 2 * parts
            assert await body.locator("pre code").count() == parts
            assert await body.locator("pre code .hljs-built_in, pre code .hljs-number").count() >= parts
            await expect(body.locator("h2").last).to_have_text(f"Part {parts - 1}")
            # The view followed the newest text: the last heading is on screen.
            await expect(body.locator("pre").last).to_be_in_viewport()
            assert log.errors == []

    asyncio.run(test())


CHINESE_ANSWER = (
    "您好！本馆的**开放时间**如下：\n\n"
    "| 日期 | 时间 |\n|---|---|\n| 周一至周五 | 9:00–21:00 |\n| 周六、周日 | 10:00–18:00 |\n\n"
    "借书需要：\n\n1. 读者证\n2. 身份证件\n\n"
    "```python\nprint(\"欢迎光临\")\n```\n\n还有其他问题吗？"
)


def test_chinese_answers_and_interface_for_the_screenshots() -> None:
    engine = ScriptedEngine(chop(CHINESE_ANSWER, 3), delay=0.01)

    async def test() -> None:
        async with (serve(engine, suggestions="开放时间？|怎么借书？") as served,
                    kiosk_page(served.url, viewport=LARGE, locale="zh-CN") as (page, log)):
            await wait_status(page, "ready")
            await expect(page.get_by_test_id("suggestion")).to_have_count(2)
            await page.get_by_test_id("suggestion").first.click()
            await wait_answer_state(page, "done")
            body = last_answer(page).get_by_test_id("message-body")
            await expect(body.locator("table td").first).to_have_text("周一至周五")
            await expect(page.locator("[data-testid=message][data-role=user]")).to_contain_text("开放时间？")
            await screenshot(page, "1920x1080-zh-answer")
            await page.set_viewport_size(SMALL)
            await page.get_by_test_id("history-toggle").click()
            await expect(page.get_by_test_id("session-item")).to_have_count(1)
            await expect(page.get_by_test_id("history-panel")).to_be_in_viewport(ratio=1.0)  # slid fully in
            await screenshot(page, "800x480-zh-history")
            assert log.errors == []

    asyncio.run(test())


def test_idle_reset_and_new_customer_clear_the_screen() -> None:
    engine = ScriptedEngine(["Fine", "."], delay=0.01)

    async def test() -> None:
        async with serve(engine, idle_reset=1.0) as served, kiosk_page(served.url) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "How are you?")
            await wait_answer_state(page, "done")
            first = await page.get_by_test_id("app").get_attribute("data-session")
            assert first
            await expect(page.locator("[data-testid=message]")).to_have_count(0, timeout=5000)
            await expect(page.get_by_test_id("app")).to_have_attribute("data-session", "")
            await ask(page, "Hello again")
            await wait_answer_state(page, "done")
            second = await page.get_by_test_id("app").get_attribute("data-session")
            assert second and second != first  # The next visitor did not continue the old conversation.
            assert engine.requests[-1].messages[-1].content == "Hello again"
            assert len(engine.requests[-1].messages) <= 2  # (system prompt) + the new question only
            await page.get_by_test_id("new-customer").click()
            await expect(page.locator("[data-testid=message]")).to_have_count(0)
            await expect(page.get_by_test_id("app")).to_have_attribute("data-session", "")

    asyncio.run(test())


def test_a_session_deleted_elsewhere_is_forgotten_and_the_question_still_answered() -> None:
    engine = ScriptedEngine(["Sure", "."], delay=0.005)

    async def test() -> None:
        async with serve(engine) as served, kiosk_page(served.url) as (page, _log):
            await wait_status(page, "ready")
            await ask(page, "First question")
            await wait_answer_state(page, "done")
            session = await page.get_by_test_id("app").get_attribute("data-session")
            async with aiohttp.ClientSession(headers=AUTH) as http, \
                    http.delete(f"{served.url}/api/sessions/{session}") as r:
                assert r.status == 204
            await ask(page, "Second question")
            await wait_answer_state(page, "done")
            new_session = await page.get_by_test_id("app").get_attribute("data-session")
            assert new_session and new_session != session
            assert engine.requests[-1].messages[-1].content == "Second question"

    asyncio.run(test())


def test_stop_reaches_the_daemon_and_busy_is_explained() -> None:
    engine = ScriptedEngine(chop("word " * 2000), delay=0.01, queue_size=0)

    async def test() -> None:
        async with serve(engine) as served, kiosk_page(served.url) as (page, _log):
            await wait_status(page, "ready")
            # Another client holds the model: the page says the kiosk is busy.
            async with aiohttp.ClientSession() as http, http.ws_connect(served.url + "/ws") as other:
                await other.send_str(json.dumps({"type": "chat", "text": "hold the model"}))
                while json.loads((await other.receive()).data)["type"] != "token":
                    pass
                await ask(page, "Am I next?")
                await expect(page.get_by_test_id("notice")).to_be_visible()
                await other.send_str(json.dumps({"type": "cancel"}))
            await ask(page, "Talk for a long time")
            await page.wait_for_function("() => document.querySelector('[data-testid=stop]') !== null")
            await page.wait_for_timeout(200)
            await page.get_by_test_id("stop").click()
            await wait_answer_state(page, "cancelled", within=5)
            run: Any = engine.runs[-1]
            assert await asyncio.to_thread(run.done.wait, 5) and run.saw_cancel

    asyncio.run(test())
