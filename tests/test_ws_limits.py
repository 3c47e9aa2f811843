"""Bounds on what one WebSocket client can do: connections, frame sizes and frame rates."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp
import pytest
from aiohttp import WSMsgType

from daemon.ws_flow import FrameRate, Verdict
from tests.fakes import ScriptedEngine, serve
from tests.test_ws_protocol import LONG, Client, connect, run, text_of, w

# ---- connections ----


def test_one_connection_past_max_connections_is_refused_before_the_upgrade(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), max_connections=2, retry_after=5) as served:
            async with connect(served), connect(served) as second, aiohttp.ClientSession() as http:
                with caplog.at_level(logging.WARNING, logger="daemon.chat_ws"):
                    for _ in range(2):
                        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                            await w(http.ws_connect(f"{served.url}/ws"))
                        assert refused.value.status == 503
                        assert refused.value.headers is not None and refused.value.headers["Retry-After"] == "5"
                    async with http.get(f"{served.url}/ws", headers=_UPGRADE) as resp:
                        assert resp.status == 503
                        assert (await resp.json())["error"]["code"] == "too_many_connections"
                refusals = [r for r in caplog.records if "max_connections" in r.getMessage()]
                assert len(refusals) == 3, "one log line per refusal"
                assert text_of(await second.chat("still fine?")) == "ok"
            async with connect(served) as again:  # Room again once they closed.
                assert text_of(await again.chat("hi")) == "ok"

    run(test)


_UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


# ---- frame sizes ----

def test_a_frame_over_the_limit_is_refused_and_the_connection_stays() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), max_message_bytes=1024) as served, connect(served) as client:
            big = json.dumps({"type": "chat", "session": None, "text": "x" * 1100})
            await w(client.ws.send_str(big))
            refused = await client.recv()
            assert refused["type"] == "error" and refused["code"] == "frame_too_large"
            wide = json.dumps({"type": "chat", "session": None, "text": "字" * 400})  # 400 chars, 1200 bytes
            await w(client.ws.send_str(wide))
            assert (await client.recv())["code"] == "frame_too_large"
            assert text_of(await client.chat("y" * 900)) == "ok"

    run(test)


def test_a_frame_over_four_times_the_limit_closes_the_connection_with_1009() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), max_message_bytes=1024) as served, connect(served) as client:
            await w(client.ws.send_str(json.dumps({"type": "chat", "text": "x" * 4200})))
            msg = await w(client.ws.receive())
            assert msg.type == WSMsgType.CLOSE and msg.data == 1009, msg
            async with connect(served) as other:
                assert text_of(await other.chat("hi")) == "ok"

    run(test)


# ---- frame rates ----

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_frame_rate_allows_bursts_of_twice_the_rate_then_refills() -> None:
    clock = Clock()
    rate = FrameRate(10, flood_seconds=5, clock=clock)
    assert [rate.admit() for _ in range(20)] == [Verdict.ACCEPT] * 20
    assert [rate.admit() for _ in range(3)] == [Verdict.WARN, Verdict.DROP, Verdict.DROP]
    clock.now += 0.5  # five frames' worth
    assert [rate.admit() for _ in range(6)] == [Verdict.ACCEPT] * 5 + [Verdict.DROP]
    clock.now += 1.0  # quiet for a second: the flood is over, the next one is told again
    assert [rate.admit() for _ in range(11)] == [Verdict.ACCEPT] * 10 + [Verdict.WARN]


def test_frame_rate_closes_a_client_that_floods_for_flood_seconds() -> None:
    clock = Clock()
    rate = FrameRate(10, flood_seconds=2, clock=clock)
    verdicts = []
    for _ in range(300):  # 100 frames a second for 3 seconds
        verdicts.append(rate.admit())
        clock.now += 0.01
    first_close = verdicts.index(Verdict.CLOSE)
    assert verdicts.count(Verdict.WARN) == 1
    # The burst (20 frames) lasts 0.2 s; the flood starts with the first dropped frame and is closed 2 s later.
    assert 218 <= first_close <= 222, first_close


def test_a_flood_of_frames_is_rate_limited_and_other_clients_are_unaffected() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["fine"])
        async with serve(engine, ws_frames_per_second=20) as served, connect(served) as flooder, \
                connect(served) as other, aiohttp.ClientSession() as http:
            started = time.perf_counter()
            for i in range(1000):
                await flooder.ws.send_str(json.dumps({"type": "speech", "on": i % 2 == 0}))
            sent_in = time.perf_counter() - started
            health_started = time.perf_counter()
            async with http.get(f"{served.url}/healthz") as resp:
                assert resp.status == 200
            # Server and clients share this event loop: the answer waits until the 1,000 queued frames are read
            # and dropped (~0.5 s on a busy 2-core machine). A server that did work per dropped frame (or
            # answered each) would take far longer.
            assert time.perf_counter() - health_started < 2.0
            assert text_of(await other.chat("am I served?")) == "fine"
            replies = await _replies_until_refilled(flooder)
            took = time.perf_counter() - started
        limited = [f for f in replies if f["type"] == "error" and f["code"] == "rate_limited"]
        assert len(limited) == 1, "told once, not once per dropped frame"
        voice = [f for f in replies if f["type"] == "voice"]
        # The burst (40) and what refilled meanwhile got through; the rest of the 1,000 was dropped.
        assert 40 <= len(voice) <= 40 + 20 * took + 1, (len(voice), sent_in, took)

    run(test)


def test_cancel_still_stops_an_answer_while_flooding() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine, ws_frames_per_second=5) as served, connect(served) as client:
            await client.send(type="chat", text="long one")
            assert (await client.recv())["type"] == "session"
            assert (await client.recv())["type"] == "token"
            for _ in range(30):
                await client.ws.send_str("{}")
            await client.send(type="cancel")
            frames = await _until_done(client)
        assert frames[-1]["reason"] == "cancelled"
        assert [f["code"] for f in frames if f["type"] == "error"].count("rate_limited") == 1
        assert len(engine.runs[0].emitted) < 200

    run(test)


def test_a_client_that_keeps_flooding_is_closed_with_1008() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), ws_frames_per_second=10, ws_flood_seconds=0.5) as served, \
                connect(served) as client:
            async def flood() -> None:
                while True:
                    await client.ws.send_str("{}")
                    await asyncio.sleep(0.002)

            flooding = asyncio.create_task(flood())
            try:
                msg = await w(_close_of(client))
            finally:
                flooding.cancel()
                await asyncio.gather(flooding, return_exceptions=True)
            assert msg.type == WSMsgType.CLOSE and msg.data == 1008, msg
            async with connect(served) as other:
                assert text_of(await other.chat("hi")) == "ok"

    run(test)


async def _close_of(client: Client) -> aiohttp.WSMessage:
    msg = await client.ws.receive()
    while msg.type == WSMsgType.TEXT:
        msg = await client.ws.receive()
    return msg


async def _until_done(client: Client) -> list[dict[str, object]]:
    frames = [await client.recv()]
    while frames[-1]["type"] != "done":
        frames.append(await client.recv())
    return frames


async def _replies_until_refilled(client: Client) -> list[dict[str, object]]:
    """Every frame the server sent back for the flood: after the time one frame's allowance takes to refill
    (at 20/s), a `listen` (refused without voice) marks the end of the replies."""
    await asyncio.sleep(2 / 20)
    await client.send(type="listen", on=True)
    frames = [await client.recv()]
    while frames[-1].get("code") != "voice_unavailable":
        frames.append(await client.recv())
    return frames[:-1]
