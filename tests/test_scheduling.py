"""Sharing the one model fairly: places in line, one answer per HTTP client, and limits on every answer."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from daemon.gate import ModelGate
from daemon.generation import Emit, Generation
from daemon.messages import Finished, Timings, Usage
from tests.conftest import AUTH, Daemon, lan_address
from tests.fakes import ScriptedEngine, serve
from tests.test_ws_protocol import LONG, STEP, Client, Frame, connect, eventually, run, text_of, w

LONG_QUESTION = "Write a very long story about a lighthouse keeper and the sea."


async def answer_started(client: Client, text: str) -> None:
    await client.send(type="chat", text=text)
    assert (await client.recv())["type"] == "session"
    assert (await client.recv())["type"] == "token"


# ---- places in line over the WebSocket ----

def test_waiting_clients_are_told_their_place_until_their_answer_starts() -> None:
    async def test() -> tuple[list[Frame], list[Frame]]:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as a, connect(served) as b, connect(served) as c:
            await answer_started(a, "long one")
            await b.send(type="chat", text="b here")
            assert [await b.recv(), await b.recv()][1] == {"type": "queued", "position": 1}
            await c.send(type="chat", text="c here")
            assert [await c.recv(), await c.recv()][1] == {"type": "queued", "position": 2}
            engine.pieces = ["short", " answer"]  # for the runs still to come
            await a.send(type="cancel")
            assert (await a.until_end())[-1]["reason"] == "cancelled"
            return await b.until_end(), await c.until_end()

    b_frames, c_frames = asyncio.run(asyncio.wait_for(test(), 20))
    assert [f["type"] for f in b_frames] == ["token", "token", "done"]
    # c moved up when b got the model, and heard nothing more once its own answer started.
    assert [f["type"] for f in c_frames] == ["queued", "token", "token", "done"]
    assert c_frames[0]["position"] == 1 and text_of(c_frames) == "short answer"


def test_max_tokens_caps_a_websocket_answer() -> None:
    async def test() -> None:
        engine = ScriptedEngine([f"t{i} " for i in range(10)])
        async with serve(engine, max_tokens=3) as served, connect(served) as client:
            frames = await client.chat("go on and on")
        assert engine.requests[0].sampling.max_tokens == 3
        assert [f["type"] for f in frames].count("token") == 3 and frames[-1]["reason"] == "length"

    run(test)


# ---- the time limit on an answer ----

def _endless(started: list[float]) -> Callable[[threading.Event, Emit, float], Finished]:
    """A model that writes a piece every 5 ms until it is told to stop, as the engine's thread does."""

    def run(cancel: threading.Event, emit: Emit, queue_ms: float) -> Finished:
        started.append(time.monotonic())
        n = 0
        while not cancel.wait(0.005):
            emit("x")
            n += 1
        timings = Timings(queue_ms, 0.0, 0, 0.0, 0.0, 0.0)
        return Finished(reason="cancelled", text="x" * n, usage=Usage(1, n), timings=timings)

    return run


async def _write(generation: Generation) -> Finished:
    async with generation:
        async for _ in generation:
            pass
    assert generation.result is not None
    return generation.result


def test_an_answer_past_the_time_limit_stops_with_reason_time_limit() -> None:
    async def test() -> tuple[Finished, float, float]:
        gate, started = ModelGate(1), []
        await gate.acquire()  # Busy for a while first: waiting in line does not count against the limit.
        writing = asyncio.create_task(_write(Generation(gate, _endless(started), time_limit=0.3)))
        await asyncio.sleep(0.4)
        gate.release()
        finished = await asyncio.wait_for(writing, STEP)
        return finished, started[0], time.monotonic()

    finished, started, ended = asyncio.run(test())
    assert finished.reason == "time_limit"
    assert 0.25 <= ended - started < 1.5, ended - started
    assert finished.usage.completion_tokens > 10 and finished.text == "x" * finished.usage.completion_tokens


def test_cancelled_before_the_time_limit_is_cancelled() -> None:
    async def test() -> Finished:
        generation = Generation(ModelGate(1), _endless([]), time_limit=5.0)
        async with generation:
            async for _ in generation:
                generation.cancel()
        assert generation.result is not None
        return generation.result

    assert asyncio.run(asyncio.wait_for(test(), STEP)).reason == "cancelled"


def test_the_daemon_stops_long_answers_at_max_generation_seconds(test_model: Path,
                                                                  daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--max-generation-seconds", "1", "--max-tokens", "2000",
                       "--temperature", "0")

    async def scenario() -> tuple[list[Frame], Frame, Frame]:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(d.url + "/ws") as ws:
                await ws.send_str(json.dumps({"type": "chat", "session": None, "text": LONG_QUESTION}))
                frames = []
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads((await asyncio.wait_for(ws.receive(), 60)).data))
            session = next(f["session"] for f in frames if f["type"] == "session")
            async with http.get(f"{d.url}/api/sessions/{session}", headers=AUTH) as resp:
                stored = await resp.json()
            body = {"messages": [{"role": "user", "content": LONG_QUESTION}]}
            async with http.post(d.url + "/v1/chat/completions", json=body) as resp:
                completion = await resp.json()
        return frames, stored, completion

    frames, stored, completion = asyncio.run(asyncio.wait_for(scenario(), 120))
    done = frames[-1]
    assert done["type"] == "done" and done["reason"] == "time_limit", done
    # (On a loaded machine reading the prompt alone may take longer than the limit: then nothing was written.)
    assert done["usage"]["completion_tokens"] < 2000
    answer = stored["turns"][-1]  # Kept as written so far, like an answer cut short by max_tokens.
    assert answer["role"] == "assistant" and answer["status"] == "complete"
    assert answer["content"] == text_of(frames)
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"]["completion_tokens"] < 2000


# ---- one answer at a time per HTTP client ----

def test_a_network_client_gets_429_for_a_second_answer_and_loopback_is_exempt() -> None:
    outside = lan_address()
    if outside is None:
        pytest.skip("this machine has no network address other than loopback")
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    token = "a-token-for-other-machines"

    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine, hosts=(outside, "127.0.0.1"), api_token=token) as served, \
                aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
            remote, local = served.urls
            async with http.post(remote + "/v1/chat/completions", json=body) as first:
                assert first.status == 200
                await w(first.content.readline())  # The answer is being written for the network client.
                async with http.post(remote + "/v1/chat/completions", json=body) as second:
                    assert second.status == 429
                    error = (await second.json())["error"]
                    assert error["code"] == "generation_in_progress" and error["type"] == "rate_limit_error"
                assert engine.gate.clients.active(outside) == 1 and engine.gate.waiting == 0
                # Loopback is the device itself: not limited, its request waits in line.
                local_one = asyncio.create_task(_post(http, local, {**body, "stream": False}))
                await eventually(lambda: engine.gate.waiting == 1)
                engine.pieces = ["ok"]
            # The first answer was abandoned: the model moves on, and the network client may ask again.
            assert await w(local_one) == (200, "ok")
            await eventually(lambda: engine.gate.clients.active(outside) == 0)
            assert await w(_post(http, remote, {**body, "stream": False})) == (200, "ok")

    run(test)


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, object]) -> tuple[int, str]:
    async with http.post(url + "/v1/chat/completions", json=body) as resp:
        return resp.status, (await resp.json())["choices"][0]["message"]["content"]
