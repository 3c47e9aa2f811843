"""Venue knowledge through the real app and real sockets, with a scripted engine at the model seam: what each
kind of answer sends on /ws and /v1, what is stored, and a grounded answer withdrawn for the fallback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from daemon.appkeys import HISTORY
from tests.fakes import ScriptedEngine, Served, serve
from tests.test_ws_protocol import Frame, connect, run, text_of

VENUE = {
    "hours.md": "# Opening hours\nMonday to Friday 9:00-21:00, weekends 10:00-18:00.\n\n"
                "# How do I get a library card?\nBring an **ID card** to the front desk. It is free.\n",
    "zh/服务.md": "# 开放时间\n周一至周五 9:00-21:00，周末 10:00-18:00。\n\n"
                 "# 怎么办借书证？\n请带身份证到服务台办理，免费。\n",
}
FALLBACK = "I don't have that information. Please ask at the front desk."
FALLBACK_ZH = "抱歉，我没有这方面的信息，请到服务台咨询。"


@pytest.fixture
def venue(tmp_path: Path) -> Path:
    for name, text in VENUE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
    return tmp_path


async def stored_answer(served: Served, session: str) -> str:
    turns = await served.app[HISTORY].run(lambda store: store.turns(session))
    return str(turns[-1].content)


def test_faq_answers_with_the_curated_text_without_the_model(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["model", " text"])
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("How can I get a library card?")
            zh = await client.chat("怎么办借书证？")
            stored = await stored_answer(served, frames[0]["session"])
        assert text_of(frames) == "Bring an **ID card** to the front desk. It is free."
        assert len([f for f in frames if f["type"] == "token"]) > 3  # streamed in pieces like any answer
        assert frames[-1]["knowledge"] == "faq"
        assert frames[-1]["sources"] == [{"file": "hours.md", "title": "How do I get a library card?"}]
        assert text_of(zh) == "请带身份证到服务台办理，免费。"
        assert zh[-1]["sources"] == [{"file": "zh/服务.md", "title": "怎么办借书证？"}]
        assert engine.requests == []  # the model was never asked
        assert stored == text_of(frames)

    run(test)


def test_grounded_answer_reads_its_section_and_names_it(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["We", " open", " at", " 10", ":00", " on", " weekends", "."])
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("When do you open on Saturday?")
        assert text_of(frames) == "We open at 10:00 on weekends."
        assert frames[-1]["knowledge"] == "grounded"
        assert frames[-1]["sources"] == [{"file": "hours.md", "title": "Opening hours"}]
        system = engine.requests[0].messages[0].content
        assert "Monday to Friday 9:00-21:00" in system and "Venue information (Opening hours)" in system
        assert "retract" not in [f["type"] for f in frames]

    run(test)


HOURS = "Monday to Friday 9:00-21:00, weekends 10:00-18:00."


def test_an_answer_its_section_does_not_support_is_retracted_for_the_sections_words(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["We", " open", " at", " 8", ":00", " on", " weekends", "."] + [" more"] * 50,
                                delay=0.01)
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("When do you open on Saturday?")
            stored = await stored_answer(served, frames[0]["session"])
        kinds = [f["type"] for f in frames]
        retract = kinds.index("retract")
        shown_before = "".join(f["text"] for f in frames[:retract] if f["type"] == "token")
        assert "8" not in shown_before  # the invented time never reached the screen
        assert "".join(f["text"] for f in frames[retract:] if f["type"] == "token") == HOURS
        assert frames[-1]["knowledge"] == "grounded"
        assert frames[-1]["sources"] == [{"file": "hours.md", "title": "Opening hours"}]
        assert frames[-1]["reason"] == "stop"
        assert engine.runs[0].saw_cancel and len(engine.runs[0].emitted) < 20  # the model was stopped at once
        assert stored == HOURS

    run(test)


@pytest.mark.parametrize("pieces", [
    ["Yes", "."],  # says nothing the question did not
    ["No", ",", " we", " are", " never", " open", " on", " Saturday", "."],  # says no where the section says yes
])
def test_an_empty_or_contradicting_answer_is_replaced_by_the_sections_words(venue: Path, pieces: list[str]) -> None:
    async def test() -> None:
        engine = ScriptedEngine(pieces)
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("Are you open on Saturday?")
        kinds = [f["type"] for f in frames]
        said = "".join(f["text"] for f in frames[kinds.index("retract"):] if f["type"] == "token")
        assert said == HOURS and frames[-1]["knowledge"] == "grounded"

    run(test)


def test_a_model_that_finds_no_answer_in_its_section_gives_the_fallback(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["I", " don't", " know", "."])
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("When do you open on Saturday?")
        kinds = [f["type"] for f in frames]
        said = "".join(f["text"] for f in frames[kinds.index("retract"):] if f["type"] == "token")
        assert said == FALLBACK and frames[-1]["knowledge"] == "fallback" and frames[-1]["sources"] == []

    run(test)


@pytest.mark.parametrize(("question", "fallback"), [("Is there parking?", FALLBACK), ("有咖啡厅吗？", FALLBACK_ZH)])
def test_venue_questions_the_documents_do_not_answer_get_the_fallback(venue: Path, question: str,
                                                                      fallback: str) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Yes", ", of course!"])
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat(question)
        assert text_of(frames) == fallback
        assert frames[-1]["knowledge"] == "fallback" and frames[-1]["sources"] == []
        assert engine.requests == []

    run(test)


def test_general_questions_get_the_models_ordinary_answer(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Leaves", " fall."])
        async with serve(engine, knowledge=str(venue)) as served, connect(served) as client:
            frames = await client.chat("Write a poem about autumn")
        assert text_of(frames) == "Leaves fall."
        assert frames[-1]["knowledge"] == "ordinary" and frames[-1]["sources"] == []
        assert "Venue information" not in engine.requests[0].messages[0].content

    run(test)


def test_knowledge_only_gives_the_configured_fallback_to_everything_else(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Leaves", " fall."])
        async with serve(engine, knowledge=str(venue), knowledge_only=True,
                         knowledge_fallback="Only library questions, please.") as served, \
                connect(served) as client:
            frames = await client.chat("Write a poem about autumn")
        assert text_of(frames) == "Only library questions, please."
        assert engine.requests == []

    run(test)


def test_without_a_knowledge_folder_every_answer_is_ordinary() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Yes", "."])
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("Is there parking?")
        assert text_of(frames) == "Yes." and frames[-1]["knowledge"] == "ordinary"
        assert frames[-1]["sources"] == []

    run(test)


def openai_client(served: Served) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{served.url}/v1", api_key="unused", max_retries=0, timeout=10)


def test_openai_responses_carry_the_sources(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["We", " open", " at", " 9", ":00", "."])
        async with serve(engine, knowledge=str(venue)) as served:
            client = openai_client(served)
            faq = await client.chat.completions.create(
                model="kioskd", messages=[{"role": "user", "content": "How do I get a library card?"}])
            grounded = await client.chat.completions.create(
                model="kioskd", messages=[{"role": "user", "content": "When do you open on Monday?"}])
            fallback = await client.chat.completions.create(
                model="kioskd", messages=[{"role": "user", "content": "Is there parking?"}])
        extra: dict[str, Any] = faq.model_extra or {}
        assert faq.choices[0].message.content == "Bring an **ID card** to the front desk. It is free."
        assert extra["knowledge"] == "faq"
        assert extra["sources"] == [{"file": "hours.md", "title": "How do I get a library card?"}]
        assert grounded.choices[0].message.content == "We open at 9:00."
        assert (grounded.model_extra or {})["sources"] == [{"file": "hours.md", "title": "Opening hours"}]
        assert fallback.choices[0].message.content == FALLBACK
        assert (fallback.model_extra or {})["sources"] == [] and fallback.choices[0].finish_reason == "stop"

    run(test)


async def sse(served: Served, question: str) -> list[dict[str, Any]]:
    body = {"model": "kioskd", "stream": True, "messages": [{"role": "user", "content": question}]}
    async with aiohttp.ClientSession() as http, http.post(f"{served.url}/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        raw = (await resp.read()).decode()
    return [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]


def content(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])


def test_openai_stream_puts_the_sources_on_the_final_chunk(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine(["We", " open", " at", " 9", ":00", "."])
        async with serve(engine, knowledge=str(venue)) as served:
            grounded = await sse(served, "When do you open on Monday?")
            engine.pieces = ["We", " open", " at", " 7", ":00", "."]
            unsupported = await sse(served, "When do you open on Monday?")
            faq = await sse(served, "怎么办借书证？")
        final: Frame = next(c for c in grounded if c["choices"] and c["choices"][0]["finish_reason"])
        assert final["sources"] == [{"file": "hours.md", "title": "Opening hours"}]
        assert final["knowledge"] == "grounded" and content(grounded) == "We open at 9:00."
        assert content(unsupported) == HOURS  # a stream cannot take text back: nothing of it was sent
        assert next(c for c in unsupported if c.get("knowledge"))["knowledge"] == "grounded"
        assert content(faq) == "请带身份证到服务台办理，免费。"
        assert next(c for c in faq if c.get("sources"))["sources"][0]["title"] == "怎么办借书证？"

    run(test)


def test_the_engine_is_asked_to_keep_the_prompt_prefixes(venue: Path) -> None:
    async def test() -> None:
        engine = ScriptedEngine()
        async with serve(engine, knowledge=str(venue), system_prompt="Be brief.") as served:
            assert served.app  # the app starts; the daemon's server warms after the model loaded
        assert engine.warmed == []  # the app alone does not warm: daemon.server does it before READY

    run(test)
