"""ENGINE=upstream against a stand-in OpenAI server on 127.0.0.1 (tests/upstream_standin.py), with the real local
SmolLM2 model as the fallback: streaming through the WebSocket and the OpenAI API, cancel closing the upstream
stream, failover before the first token, an answer lost mid-way, recovery, and no fallback at all."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from daemon.app import create_app
from daemon.appkeys import LISTENING
from daemon.server import build_engine
from daemon.settings import load_settings
from daemon.upstream import FailoverEngine
from tests.conftest import TEST_MODEL, pulled_model
from tests.fakes import HARNESS_DEFAULTS, Served, request_json
from tests.upstream_standin import MODEL, Reply, StandIn, stand_in
from tests.wsclient import Answer, ask

TOKEN = "upstream-secret-token-5f2c9a"


def run(test: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(test, 120))


@pytest.fixture(scope="module")
def local_model() -> Path:
    return pulled_model(TEST_MODEL)


def upstream_settings(url: str, model: Path | None, **overrides: object) -> dict[str, object]:
    return {"engine": "upstream", "upstream_url": url, "upstream_connect_timeout": 1.0,
            "upstream_first_token_timeout": 2.0, "upstream_read_timeout": 1.0, "upstream_health_interval": 0.2,
            "upstream_fallback": model is not None, "model": str(model) if model else None,
            "max_tokens": 24, "temperature": 0.0, **overrides}


@asynccontextmanager
async def kiosk(url: str, model: Path | None, **overrides: object
                ) -> AsyncIterator[tuple[Served, FailoverEngine]]:
    """The daemon's app with the engine daemon.server builds for these settings, loaded as serve() loads it."""
    with tempfile.TemporaryDirectory(prefix="kioskd-upstream-") as state_dir:
        settings = load_settings({**HARNESS_DEFAULTS, "state_dir": state_dir,
                                  **upstream_settings(url, model, **overrides)}, environ={})
        engine = build_engine(settings)
        assert isinstance(engine, FailoverEngine)
        await engine.load()
        runner = web.AppRunner(create_app(settings, engine), handler_cancellation=True)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            runner.app[LISTENING].set()
            yield Served(runner.app, runner, runner.addresses[0][1]), engine
        finally:
            await runner.cleanup()
            await engine.close()


@asynccontextmanager
async def screen(served: Served) -> AsyncIterator[tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{served.url}/ws") as ws:
        hello = json.loads((await ws.receive(timeout=5)).data)
        assert hello["type"] == "hello"
        yield ws, hello


async def eventually(check: Any, limit: float = 5.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def stored_turns(served: Served, session: str | None) -> list[dict[str, Any]]:
    status, body = await request_json(served, "GET", f"/api/sessions/{session}")
    assert status == 200, body
    return list(body["turns"])


def metric(text: str, name: str) -> float:
    return next(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


async def metrics_text(served: Served) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{served.url}/metrics") as resp:
        return await resp.text()


# ---- streaming ----

def test_websocket_answer_streams_the_upstream_pieces_as_they_come() -> None:
    async def test() -> None:
        async with stand_in(default=Reply(pieces=("Bonjour", ", ", "visitor", "!"))) as upstream, \
                kiosk(upstream.url, None) as (served, _), screen(served) as (ws, hello):
            assert hello["model"] == MODEL
            assert hello["engine"] == {"kind": "upstream", "serving": "upstream", "upstream": "up",
                                       "detail": f"model {MODEL} at {upstream.url}"}
            answer = await ask(ws, "Hello?")
            assert answer.tokens == ["Bonjour", ", ", "visitor", "!"]  # not re-chunked
            assert answer.done is not None and answer.done["reason"] == "stop"
            assert answer.done["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
            body = upstream.seen[0].body
            assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
            assert body["model"] == MODEL and body["max_tokens"] == 24 and body["temperature"] == 0.0
            assert body["messages"][0]["role"] == "system" and body["messages"][-1] == {"role": "user",
                                                                                        "content": "Hello?"}
            turns = await stored_turns(served, answer.session)
            assert [(t["role"], t["content"], t["status"]) for t in turns] == [
                ("user", "Hello?", "complete"), ("assistant", "Bonjour, visitor!", "complete")]

    run(test())


def test_openai_client_streams_through_the_daemon_with_stop_and_seed_passed_on() -> None:
    async def test() -> None:
        async with stand_in() as upstream, kiosk(upstream.url, None) as (served, _):
            client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=10)
            stream = await client.chat.completions.create(
                model="any", messages=[{"role": "user", "content": "Hi"}], stream=True, stop=["\n\n"], seed=7,
                max_tokens=9, top_p=0.5)
            pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
            assert pieces == ["Hello", " from", " upstream", "."]
            models = await client.models.list()
            assert [m.id for m in models.data] == [MODEL]
            await client.close()
        body = upstream.seen[0].body
        assert (body["stop"], body["seed"], body["max_tokens"], body["top_p"]) == (["\n\n"], 7, 9, 0.5)

    run(test())


# ---- cancel closes the upstream stream ----

SLOW = Reply(pieces=tuple(f"w{i} " for i in range(200)), delay=0.05)


@pytest.mark.parametrize("how", ["cancel", "disconnect"])
def test_cancel_or_disconnect_closes_the_upstream_stream_within_a_second(how: str) -> None:
    async def test() -> None:
        async with stand_in(default=SLOW) as upstream, kiosk(upstream.url, None) as (served, engine):
            async with screen(served) as (ws, _):
                answer = await ask(ws, "Talk long", cancel_after=3 if how == "cancel" else None,
                                   disconnect_after=3 if how == "disconnect" else None)
                stopped_at = time.perf_counter()
                if how == "cancel":
                    assert answer.done is not None and answer.done["reason"] == "cancelled"
            await eventually(lambda: upstream.seen[0].closed_by_client_at > 0, 1.0)
            assert upstream.seen[0].closed_by_client_at - stopped_at < 1.0
            assert not upstream.seen[0].finished
            await eventually(lambda: engine.upstream.gate.holding == 0, 1.0)
            assert engine.upstream.up  # a cancel is not a failure

    run(test())


def test_time_limit_closes_the_upstream_stream() -> None:
    async def test() -> None:
        async with stand_in(default=SLOW) as upstream, \
                kiosk(upstream.url, None, max_generation_seconds=0.5) as (served, _), screen(served) as (ws, _):
            answer = await ask(ws, "Talk long")
            assert answer.done is not None and answer.done["reason"] == "time_limit"
            assert 0 < len(answer.tokens) < 200
            await eventually(lambda: upstream.seen[0].closed_by_client_at > 0, 1.0)

    run(test())


# ---- failover to the local model ----

@pytest.mark.parametrize(("reply", "reason"), [
    (Reply(refuse=503, message="loading model"), "refused"),
    (Reply(refuse=429, message="too many requests"), "refused"),
    (Reply(refuse=401, message="invalid api key"), "refused"),
    (Reply(first_delay=10.0), "first_token_timeout"),
])
def test_a_failure_before_the_first_token_is_answered_by_the_local_model(local_model: Path, reply: Reply,
                                                                         reason: str) -> None:
    async def test() -> None:
        async with stand_in(replies=[reply]) as upstream, \
                kiosk(upstream.url, local_model, upstream_first_token_timeout=0.5) as (served, engine):
            upstream.health_status = 503  # stays down until the test says otherwise
            async with screen(served) as (ws, _):
                answer = await ask(ws, "What is 2+2?")
            assert answer.error is None and answer.done is not None, answer.error
            assert answer.text and answer.done["reason"] in ("stop", "length")
            assert len(upstream.seen) == 1
            assert not engine.upstream.up and engine.serving == "local"
            async with screen(served) as (_, hello):
                assert hello["engine"]["serving"] == "local" and hello["engine"]["upstream"] == "down"
                assert hello["model"] == load_settings({"model": str(local_model)}, environ={}).model_id
            status, ready = await request_json(served, "GET", "/readyz")
            assert status == 200 and ready["engine"]["serving"] == "local", ready
            text = await metrics_text(served)
            assert metric(text, f'kioskd_engine_failovers_total{{reason="{reason}"}}') == 1
            assert metric(text, "kioskd_upstream_up") == 0
            assert metric(text, 'kioskd_engine_answers_total{engine="local"}') == 1
            assert metric(text, 'kioskd_engine_answers_total{engine="upstream"}') == 0
            turns = await stored_turns(served, answer.session)
            assert turns[-1]["status"] == "complete" and turns[-1]["content"] == answer.text

    run(test())


def test_an_upstream_lost_mid_answer_marks_it_and_the_next_question_goes_local(local_model: Path) -> None:
    async def test() -> None:
        reply = Reply(pieces=("One", " two", " three", " four"), delay=0.05, drop_after=2)
        async with stand_in(replies=[reply]) as upstream, kiosk(upstream.url, local_model) as (served, engine):
            upstream.health_status = 503
            async with screen(served) as (ws, _):
                lost = await ask(ws, "Count")
                assert lost.tokens == ["One", " two"]
                assert lost.error is not None and lost.error["code"] == "upstream_lost", lost
                turns = await stored_turns(served, lost.session)
                assert (turns[-1]["content"], turns[-1]["status"]) == ("One two", "interrupted")
                assert engine.serving == "local"
                follow = await ask(ws, "And now?", session=lost.session)
                assert follow.done is not None and follow.text
            assert len(upstream.seen) == 1  # the next question did not go upstream
            text = await metrics_text(served)
            assert metric(text, 'kioskd_engine_failovers_total{reason="lost"}') == 1

    run(test())


def test_a_stall_mid_answer_loses_the_answer(local_model: Path) -> None:
    async def test() -> None:
        reply = Reply(pieces=("Slow", " then", " nothing"), stall_after=1)
        async with stand_in(replies=[reply]) as upstream, \
                kiosk(upstream.url, local_model, upstream_read_timeout=0.5) as (served, _), \
                screen(served) as (ws, _):
            started = time.perf_counter()
            answer = await ask(ws, "Hm?")
            assert answer.tokens == ["Slow"] and answer.error is not None
            assert answer.error["code"] == "upstream_lost" and "stalled" in answer.error["message"]
            assert time.perf_counter() - started < 3
            assert upstream.seen[0].closed_by_client_at > 0  # the stalled stream was closed, not left open

    run(test())


def test_the_upstream_is_used_again_once_its_health_check_answers(local_model: Path) -> None:
    async def test() -> None:
        async with stand_in(replies=[Reply(refuse=502)]) as upstream, \
                kiosk(upstream.url, local_model) as (served, engine), screen(served) as (ws, _):
            upstream.health_status = 503
            await ask(ws, "First")
            assert engine.serving == "local"
            checks = upstream.health_checks
            await eventually(lambda: upstream.health_checks >= checks + 2)  # followed while down
            upstream.health_status = 200
            await eventually(lambda: engine.upstream.up)
            answer = await ask(ws, "Second")
            assert answer.text == "Hello from upstream."
            assert len(upstream.seen) == 2
            text = await metrics_text(served)
            assert metric(text, "kioskd_upstream_up") == 1
            assert metric(text, 'kioskd_engine_answers_total{engine="upstream"}') == 1
            assert metric(text, 'kioskd_engine_answers_total{engine="local"}') == 1

    run(test())


def test_an_upstream_down_at_start_leaves_the_local_model_answering(local_model: Path) -> None:
    async def test() -> None:
        upstream = StandIn()
        await upstream.start()
        await upstream.stop()  # nothing listens on its port
        async with kiosk(upstream.url, local_model) as (served, engine), screen(served) as (ws, hello):
            assert (hello["engine"]["serving"] == "local" and "cannot" in hello["engine"]["detail"]) or \
                "does not answer" in hello["engine"]["detail"]
            answer = await ask(ws, "Hi")
            assert answer.done is not None and answer.text
            await upstream.start()  # back on the same port
            await eventually(lambda: engine.upstream.up)
            assert (await ask(ws, "Hi again")).text == "Hello from upstream."
            await upstream.stop()

    run(test())


# ---- no local model ----

def test_without_a_fallback_a_down_upstream_is_upstream_unavailable() -> None:
    async def test() -> None:
        upstream = StandIn()
        await upstream.start()
        await upstream.stop()
        async with kiosk(upstream.url, None) as (served, engine):
            status, ready = await request_json(served, "GET", "/readyz")
            assert status == 503 and ready["status"] == "upstream_unavailable", ready
            assert ready["engine"]["upstream"] == "down"
            async with aiohttp.ClientSession() as http, http.get(f"{served.url}/") as page:
                assert page.status == 200  # the page is still served and can say why
            async with screen(served) as (ws, hello):
                assert hello["ready"] is False and hello["engine"]["upstream"] == "down"
                answer = await ask(ws, "Anyone?")
                assert answer.error is not None and answer.error["code"] == "upstream_unavailable"
            status, body = await request_json(served, "POST", "/v1/chat/completions",
                                              json={"model": "x", "messages": [{"role": "user", "content": "Hi"}]})
            assert status == 503 and body["error"]["code"] == "upstream_unavailable", body
            await upstream.start()
            await eventually(lambda: engine.upstream.up)
            status, ready = await request_json(served, "GET", "/readyz")
            assert status == 200 and ready["model"] == MODEL
            await upstream.stop()

    run(test())


def test_without_a_fallback_a_refusal_before_text_is_upstream_unavailable() -> None:
    async def test() -> None:
        async with stand_in(replies=[Reply(refuse=500, message="CUDA out of memory")]) as upstream, \
                kiosk(upstream.url, None) as (served, _), screen(served) as (ws, _):
            upstream.health_status = 503
            answer = await ask(ws, "Hi")
            assert answer.error is not None and answer.error["code"] == "upstream_unavailable"
            assert "CUDA out of memory" in answer.error["message"] and "500" in answer.error["message"]
            turns = await stored_turns(served, answer.session)
            assert turns == []  # the question was taken back: nothing was answered

    run(test())


def test_a_question_the_upstream_rejects_is_not_a_failover(local_model: Path) -> None:
    async def test() -> None:
        async with stand_in(replies=[Reply(refuse=400, message="bad tools")] * 2) as upstream, \
                kiosk(upstream.url, local_model) as (served, engine), screen(served) as (ws, _):
            answer = await ask(ws, "Hi")
            assert answer.error is not None and answer.error["code"] == "upstream_refused"
            assert "bad tools" in answer.error["message"]
            assert engine.upstream.up
            status, body = await request_json(served, "POST", "/v1/chat/completions",
                                              json={"messages": [{"role": "user", "content": "Hi"}]})
            assert status == 400 and body["error"]["code"] == "upstream_refused"  # the caller's fault, not ours

    run(test())


# ---- the token ----

def test_the_token_is_sent_as_bearer_reread_on_reload_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def test(token_file: Path) -> None:
        async with stand_in() as upstream, kiosk(upstream.url, None, upstream_token_file=str(token_file)) as (
                served, engine), screen(served) as (ws, _):
            await ask(ws, "Hi")
            await asyncio.to_thread(token_file.write_text, "rotated-token\n")
            engine.upstream.reload(load_settings({**upstream_settings(upstream.url, None),
                                                  "upstream_token_file": str(token_file)}, environ={}))
            await ask(ws, "Hi")
        assert upstream.seen[0].headers["Authorization"] == f"Bearer {TOKEN}"
        assert upstream.seen[1].headers["Authorization"] == "Bearer rotated-token"

    caplog.set_level(logging.DEBUG)
    with tempfile.TemporaryDirectory() as folder:
        token_file = Path(folder) / "token"
        token_file.write_text(f"{TOKEN}\n")
        run(test(token_file))
    assert TOKEN not in caplog.text and "rotated-token" not in caplog.text
    assert "upstream_token_file" in caplog.text  # the settings were logged, by the file's name only


def test_no_token_file_sends_no_authorization() -> None:
    async def test() -> None:
        async with stand_in() as upstream, kiosk(upstream.url, None) as (served, _), screen(served) as (ws, _):
            await ask(ws, "Hi")
        assert "Authorization" not in upstream.seen[0].headers

    run(test())


# ---- the wire ----

def test_queue_admits_upstream_parallel_answers_at_once() -> None:
    async def test() -> None:
        async with stand_in(default=Reply(pieces=("a", "b", "c"), delay=0.3)) as upstream, \
                kiosk(upstream.url, None, upstream_parallel=2) as (served, _):
            async def one() -> Answer:
                async with screen(served) as (ws, _):
                    return await ask(ws, "Hi")

            started = time.perf_counter()
            answers = await asyncio.gather(one(), one(), one())
            took = time.perf_counter() - started
            assert all(a.text == "abc" for a in answers)
            assert 1.5 < took < 2.8, took  # two at once (~0.9 s), the third after them (~0.9 s more)

    run(test())


def test_upstream_tool_calls_reach_an_openai_client_as_tool_calls() -> None:
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}

    async def test() -> None:
        reply = Reply(pieces=(), tool_calls=(("get_weather", ('{"city": ', '"Paris"}')),))
        async with stand_in(replies=[reply, dataclasses.replace(reply)]) as upstream, \
                kiosk(upstream.url, None) as (served, _):
            client = openai.AsyncOpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=10)
            question: Any = [{"role": "user", "content": "Weather in Paris?"}]
            whole = await client.chat.completions.create(model="any", messages=question, tools=[tool])
            calls = whole.choices[0].message.tool_calls or []
            assert whole.choices[0].finish_reason == "tool_calls"
            assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [  # type: ignore[union-attr]
                ("get_weather", {"city": "Paris"})]
            stream = await client.chat.completions.create(model="any", messages=question, tools=[tool], stream=True)
            names = [call.function.name async for chunk in stream if chunk.choices
                     for call in chunk.choices[0].delta.tool_calls or () if call.function and call.function.name]
            assert names == ["get_weather"]
            await client.close()
        assert upstream.seen[0].body["tools"] == [tool]

    run(test())
