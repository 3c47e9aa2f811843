"""Venue knowledge on the kiosk page, in Debian's Chromium against the real app with a scripted engine: a curated
FAQ answer shows the venue section it came from under it, an ordinary answer shows none, and an answer the
venue's documents do not support is replaced by the fallback without a trace of it left on the screen."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser import ask, kiosk_page, last_answer, needs_chromium, screenshot, wait_answer_state, wait_status
from tests.fakes import ScriptedEngine, serve

pytestmark = needs_chromium

HOURS = """# Opening hours

The library is open every day: Monday to Friday from 9:00 to 21:00, Saturday and Sunday from 10:00 to 18:00.

## When does the library open?

The library opens at 9:00 and closes at 21:00.
"""
FAQ_ANSWER = "The library opens at 9:00 and closes at 21:00."
POEM = "Red leaves drift down,\nthe wind hums low,\nautumn walks home."
# A grounded answer that goes on to state a time the venue's documents never give: the daemon withdraws it.
UNSUPPORTED = "The library is open every day. The reading garden opens at 7:45 in the morning."
DECLINED = "I'm sorry, but the information does not mention the opening hours."


def venue(tmp_path: Path) -> Path:
    folder = tmp_path / "venue"
    folder.mkdir()
    (folder / "hours.md").write_text(HOURS, encoding="utf-8")
    return folder


def pieces(text: str, size: int = 5) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_answers_from_the_venue_show_their_source_and_others_do_not(tmp_path: Path) -> None:
    engine = ScriptedEngine(pieces(POEM), delay=0.005)

    async def test() -> None:
        async with serve(engine, knowledge=str(venue(tmp_path))) as served, \
                kiosk_page(served.url) as (page, log):
            await wait_status(page, "ready")
            await ask(page, "When does the library open?")
            await wait_answer_state(page, "done")
            answer = last_answer(page)
            await expect(answer.get_by_test_id("message-body")).to_have_text(FAQ_ANSWER)
            await expect(answer).to_have_attribute("data-knowledge", "faq")
            await expect(answer.get_by_test_id("sources")).to_have_text("From: When does the library open?")
            assert engine.runs == []  # the curated text, not the model
            await expect(page.get_by_test_id("tokens-per-second")).to_have_text("— tokens/s")  # no model speed
            await screenshot(page, "800x480-en-knowledge-faq")

            await ask(page, "Write a poem about autumn")
            await expect(page.locator("[data-testid=message][data-role=assistant]")).to_have_count(2)
            await wait_answer_state(page, "done")
            answer = last_answer(page)
            await expect(answer.get_by_test_id("message-body")).to_contain_text("autumn walks home")
            await expect(answer).to_have_attribute("data-knowledge", "ordinary")
            await expect(answer.get_by_test_id("sources")).to_have_count(0)
            await expect(page.get_by_test_id("sources")).to_have_count(1)  # the FAQ answer's, still there
            assert engine.requests[-1].messages[-1].content == "Write a poem about autumn"

            await page.get_by_test_id("lang-toggle").click()
            await expect(page.get_by_test_id("sources")).to_have_text("来源：When does the library open?")
            await screenshot(page, "800x480-zh-knowledge-sources")
            assert log.errors == []

    asyncio.run(test())


@pytest.mark.parametrize(("answer_text", "kind"), [
    (UNSUPPORTED, "grounded"),  # an invented time: replaced by the section's own words, its source shown
    (DECLINED, "fallback"),  # the model says the section does not answer: the fallback, styled as one
])
def test_an_unsupported_answer_is_replaced(tmp_path: Path, answer_text: str, kind: str) -> None:
    engine = ScriptedEngine(pieces(answer_text), delay=0.01)

    async def test() -> None:
        async with serve(engine, knowledge=str(venue(tmp_path))) as served, \
                kiosk_page(served.url) as (page, log):
            frames: list[dict[str, Any]] = []
            page.on("websocket", lambda ws: ws.on("framereceived", lambda data: frames.append(json.loads(data))))
            await page.reload()
            await wait_status(page, "ready")
            await ask(page, "What are the opening hours of the library?")
            await wait_answer_state(page, "done")
            for _ in range(100):  # the frame events may reach us just after the page has shown the answer
                if any(frame["type"] == "done" for frame in frames):
                    break
                await asyncio.sleep(0.05)
            kinds = [frame["type"] for frame in frames]
            assert "retract" in kinds and "token" in kinds[:kinds.index("retract")], kinds
            done = next(frame for frame in frames if frame["type"] == "done")
            assert done["knowledge"] == kind, done
            titles = [s["title"] for s in done["sources"]]
            grounded_in = (["Opening hours"], ["When does the library open?"])
            assert titles == [] if kind == "fallback" else titles in grounded_in
            withdrawn = "".join(f["text"] for f in frames[:kinds.index("retract")] if f["type"] == "token")
            answer = last_answer(page)
            await expect(answer).to_have_attribute("data-knowledge", kind)
            if kind == "fallback":
                await expect(answer).to_have_class(re.compile(r"\bmsg-fallback\b"))
                await expect(answer.get_by_test_id("sources")).to_have_count(0)
            else:
                await expect(answer.get_by_test_id("sources")).to_contain_text(titles[0])
            body = (await answer.get_by_test_id("message-body").inner_text()).strip()
            replacement = "".join(f["text"] for f in frames[kinds.index("retract"):] if f["type"] == "token")
            assert body == replacement.strip() and body, (body, replacement)
            assert withdrawn.strip() not in await page.locator("body").inner_text()
            await screenshot(page, f"800x480-en-knowledge-replaced-{kind}")
            assert log.errors == []

    asyncio.run(test())
