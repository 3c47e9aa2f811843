"""ENGINE=upstream against a real llama.cpp `llama-server` on 127.0.0.1 serving SmolLM2 (tests/llama_server.py),
with the same SmolLM2 loaded locally as the fallback: streaming through the daemon, cancel freeing the upstream's
slot, the upstream killed mid-answer and brought back, and tools / response_format passed through."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from daemon.messages import ChatMessage, GenerationRequest, Sampling
from daemon.settings import Settings
from daemon.upstream.engine import UpstreamEngine
from tests.conftest import TEST_MODEL, pulled_model
from tests.llama_server import LlamaServer
from tests.test_upstream import kiosk, metric, metrics_text, run, screen, stored_turns
from tests.wsclient import Answer, ask, read_answer

pytestmark = pytest.mark.upstream

QWEN25_TEMPLATE = Path(__file__).with_name("upstream_qwen25.jinja")
"""Qwen2.5-Instruct's chat template, as llama.cpp keeps it (models/templates/Qwen-Qwen2.5-7B-Instruct.jinja)."""
COLOUR: Any = {"type": "json_schema", "json_schema": {"name": "colour", "schema": {
    "type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}}, "required": ["colour"],
    "additionalProperties": False}}}
WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def model() -> Path:
    return pulled_model(TEST_MODEL)


@pytest.fixture
def server(model: Path) -> Iterator[LlamaServer]:
    # Qwen2.5's chat template (SmolLM2 speaks the same ChatML): SmolLM2's own template has no place for tools, so
    # llama-server would leave them out of the prompt.
    with LlamaServer(model, parallel=2, extra=("--jinja", "--chat-template-file", str(QWEN25_TEMPLATE))) as llama:
        yield llama


# A shared 2-core machine: generous limits, so only a real failure (a kill) counts as one.
LIMITS = {"upstream_read_timeout": 15.0, "upstream_first_token_timeout": 60.0, "upstream_connect_timeout": 3.0}


def poll(check: Callable[[], bool], limit: float) -> None:
    """Wait (in a thread: the checks are blocking HTTP calls) until `check()` is true, at most `limit` s."""
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"not within {limit} s"
        time.sleep(0.02)


def predicted_tokens(llama: LlamaServer) -> float:
    return metric(llama.metrics(), "llamacpp:tokens_predicted_total")


def test_an_answer_streams_from_llama_server_through_the_websocket(server: LlamaServer) -> None:
    async def test() -> None:
        async with kiosk(server.url, None, max_tokens=32, **LIMITS) as (served, engine), screen(served) as (ws, hello):
            assert hello["engine"]["serving"] == "upstream" and hello["engine"]["upstream"] == "up"
            assert hello["model"] == engine.upstream.model_id != "upstream"  # resolved from its /v1/models
            answer = await ask(ws, "Name a colour.")
            assert answer.error is None and answer.done is not None, answer.error
            assert answer.text.strip() and len(answer.tokens) > 1
            assert answer.done["usage"]["prompt_tokens"] > 5  # the upstream's own usage chunk
            assert 1 <= answer.done["usage"]["completion_tokens"] <= 32
            turns = await stored_turns(served, answer.session)
            assert (turns[-1]["content"], turns[-1]["status"]) == (answer.text, "complete")
        assert predicted_tokens(server) >= answer.done["usage"]["completion_tokens"]

    run(test())


def test_cancel_mid_answer_frees_the_upstream_slot_within_a_second(server: LlamaServer) -> None:
    async def test() -> None:
        async with kiosk(server.url, None, max_tokens=2000, **LIMITS) as (served, _), screen(served) as (ws, _):
            answer = await ask(ws, "Write a very long story about a lighthouse keeper.", cancel_after=4)
            cancelled_at = time.perf_counter()
            assert answer.done is not None and answer.done["reason"] == "cancelled"
            await asyncio.to_thread(poll, server.is_idle, 1.0)
            assert time.perf_counter() - cancelled_at < 1.0
        written = predicted_tokens(server)
        assert written < 1000, written  # it stopped, not wrote the 2000 tokens nobody reads

    run(test())


def test_killed_mid_answer_then_local_then_back_upstream(server: LlamaServer, model: Path) -> None:
    async def test() -> None:
        async with kiosk(server.url, model, max_tokens=300, **LIMITS) as (served, engine), screen(served) as (ws, _):
            lost = Answer()
            await ws.send_str(json.dumps({"type": "chat", "session": None, "text": "Write a long story."}))
            while len(lost.tokens) < 3:  # some of the answer is out
                frame = json.loads((await ws.receive(timeout=60)).data)
                lost.session = frame.get("session", lost.session)
                if frame["type"] == "token":
                    lost.tokens.append(frame["text"])
                assert frame["type"] in ("session", "token"), frame
            await asyncio.to_thread(server.kill)
            await read_answer(ws, lost)
            assert lost.error is not None and lost.error["code"] == "upstream_lost", lost
            turns = await stored_turns(served, lost.session)
            assert (turns[-1]["content"], turns[-1]["status"]) == (lost.text, "interrupted")
            assert engine.serving == "local"

            local = await ask(ws, "Say hello.", session=lost.session)
            assert local.error is None and local.text, local.error
            async with screen(served) as (_, hello):
                assert hello["engine"]["serving"] == "local" and hello["engine"]["upstream"] == "down"
            assert metric(await metrics_text(served), 'kioskd_engine_failovers_total{reason="lost"}') == 1

            await asyncio.to_thread(server.start)  # the same port
            await asyncio.to_thread(poll, lambda: engine.upstream.up, 10.0)  # its health check answered
            back = await ask(ws, "Say hi.", session=lost.session)
            assert back.error is None and back.text
            assert predicted_tokens(server) >= back.done["usage"]["completion_tokens"] > 0  # type: ignore[index]

    run(test())


def test_json_schema_and_tools_pass_through_the_daemon_to_llama_server(server: LlamaServer) -> None:
    async def test() -> None:
        async with kiosk(server.url, None, max_tokens=40, temperature=0.0, **LIMITS) as (served, _):
            client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=120)
            reply = await client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "Name a colour, as JSON."}], response_format=COLOUR)
            assert set(json.loads(reply.choices[0].message.content or "")) == {"colour"}  # the schema held
            question: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
            plain = await client.chat.completions.create(model="any", messages=question, max_tokens=4)
            offered = await client.chat.completions.create(model="any", messages=question, max_tokens=4,
                                                           tools=[WEATHER_TOOL])
            await client.close()
        assert plain.usage is not None and offered.usage is not None
        # The upstream rendered the tool into its prompt (Qwen2.5's "# Tools" system text and the signature).
        assert offered.usage.prompt_tokens > plain.usage.prompt_tokens + 80, (plain.usage, offered.usage)

    run(test())


def test_json_schema_reaches_llama_server_from_the_engine(server: LlamaServer) -> None:
    """The engine alone, without the OpenAI layer: response_format goes through as given."""
    async def test() -> None:
        engine = UpstreamEngine(Settings(engine="upstream", upstream_url=server.url, upstream_read_timeout=15.0,
                                         upstream_first_token_timeout=60.0))
        assert await engine.check()
        sampling = Sampling(max_tokens=40, temperature=0.0, top_p=1.0, top_k=40, repeat_penalty=1.0)
        request = GenerationRequest((ChatMessage("user", "Name a colour, as JSON."),), sampling,
                                    response_format=json.dumps(COLOUR))
        async with engine.generate(request) as generation:
            text = "".join([piece async for piece in generation])
        await engine.close()
        assert set(json.loads(text)) == {"colour"}, text
        assert generation.result is not None and generation.result.reason == "stop"

    run(test())
