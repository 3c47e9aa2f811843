"""Accessibility of the kiosk page, checked with axe-core (kiosk/node_modules/axe-core, from the page's
devDependencies) in Debian's Chromium at the two screen sizes the kiosk ships for: colour contrast, touch
target sizes (WCAG 2.2 target-size, on for these runs), names and roles, in the states a visitor meets — the
welcome screen, an answer with the history open, the operator PIN pad, larger text, the on-screen keyboard.
No serious or critical violation is allowed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from playwright.async_api import Page, expect

from daemon.visits.pin import hash_pin
from tests.browser import LARGE, SMALL, ask, kiosk_page, needs_chromium, wait_answer_state, wait_status
from tests.conftest import ROOT
from tests.fakes import ScriptedEngine, serve

pytestmark = needs_chromium

AXE = ROOT / "kiosk" / "node_modules" / "axe-core" / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]
RUN_AXE = """async (tags) => {
  const result = await axe.run(document, {
    runOnly: { type: 'tag', values: tags },
    rules: { 'target-size': { enabled: true } },
    resultTypes: ['violations'],
  });
  return result.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ': ' + n.failureSummary) }));
}"""
SETTINGS = {"history_mode": "keep", "operator_pin": hash_pin("2468"), "venue_name": "City Library",
            "suggestions": "Opening hours?|Where are the toilets?|How do I get a library card?"}
SIZES = [pytest.param(SMALL, id="800x480"), pytest.param(LARGE, id="1920x1080")]


async def serious_violations(page: Page, state: str) -> list[str]:
    """What axe finds serious or critical on the page as it is now, one line each."""
    await page.wait_for_timeout(300)  # drawer and scrim transitions finished: contrast is read from the end state
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        # Evaluated through the DevTools protocol: the page's CSP (script-src 'self') forbids a script tag.
        await page.evaluate(AXE.read_text(encoding="utf-8") + "\n;undefined")
    violations: list[dict[str, Any]] = await page.evaluate(RUN_AXE, TAGS)
    return [f"[{state}] {v['impact']} {v['id']}: {v['help']} {json.dumps(v['nodes'], ensure_ascii=False)}"
            for v in violations if v["impact"] in ("serious", "critical")]


def test_axe_core_is_installed() -> None:
    assert AXE.is_file(), f"{AXE} is missing: run npm ci in kiosk/ (axe-core is a devDependency)"
    version = json.loads((AXE.parent / "package.json").read_text())["version"]
    assert version == "4.14.1", version


@pytest.mark.parametrize("viewport", SIZES)
def test_no_serious_violations_in_the_visitor_states(viewport: dict[str, int]) -> None:
    engine = ScriptedEngine(["The library", " opens at", " **nine**", ".\n\n- Monday\n- Tuesday"], delay=0.005)

    async def test() -> None:
        found: list[str] = []
        async with serve(engine, **SETTINGS) as served, \
                kiosk_page(served.url + "/?keyboard=off", viewport=viewport) as (page, log):
            await wait_status(page, "ready")
            await expect(page.get_by_test_id("welcome")).to_be_visible()
            found += await serious_violations(page, "welcome")
            await ask(page, "When do you open?")
            await wait_answer_state(page, "done")
            await page.get_by_test_id("history-toggle").tap()
            await expect(page.get_by_test_id("session-item")).to_have_count(1)
            found += await serious_violations(page, "answer and history")
            await page.get_by_test_id("operator-unlock").tap()
            await expect(page.get_by_test_id("pin-pad")).to_be_visible()
            found += await serious_violations(page, "PIN pad")
            await page.get_by_test_id("pin-cancel").tap()
            await page.get_by_test_id("text-size").tap()
            await page.get_by_test_id("lang-toggle").tap()
            found += await serious_violations(page, "larger text, Chinese")
            assert log.errors == []
        assert not found, "\n".join(found)

    asyncio.run(test())


@pytest.mark.parametrize("viewport", SIZES)
def test_no_serious_violations_with_the_on_screen_keyboard(viewport: dict[str, int]) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), **SETTINGS) as served, \
                kiosk_page(served.url + "/?keyboard=always", viewport=viewport) as (page, _log):
            await wait_status(page, "ready")
            await page.get_by_test_id("composer-input").tap()
            found = await serious_violations(page, "on-screen keyboard")
        assert not found, "\n".join(found)

    asyncio.run(test())

