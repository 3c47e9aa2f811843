"""The /ws chat protocol over real sockets, against the real app and a scripted engine."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import aiohttp
from aiohttp import WSMsgType

from daemon.messages import ChatMessage, PromptTooLong, Timings
from tests.fakes import ScriptedEngine, Served, prompt_tokens, serve

T = TypeVar("T")
Frame = dict[str, Any]
STEP = 3.0  # seconds any single await may take
LONG = [f"w{i} " for i in range(400)]  # with a delay, an answer that would take seconds to finish


async def w(aw: Awaitable[T], limit: float = STEP) -> T:
    return await asyncio.wait_for(aw, limit)


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


async def eventually(check: Callable[[], bool]) -> None:
    for _ in range(int(STEP / 0.005)):
        if check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


class Client:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.hello: Frame = {}

    async def send(self, **frame: Any) -> None:
        await w(self.ws.send_str(json.dumps(frame)))

    async def recv(self) -> Frame:
        msg = await w(self.ws.receive())
        assert msg.type == WSMsgType.TEXT, msg
        frame: Frame = json.loads(msg.data)
        return frame

    async def until_end(self) -> list[Frame]:
        """Frames up to and including the next done or error frame."""
        frames = [await self.recv()]
        while frames[-1]["type"] not in ("done", "error"):
            frames.append(await self.recv())
        return frames

    async def chat(self, text: str, session: str | None = None) -> list[Frame]:
        await self.send(type="chat", text=text, session=session)
        return await self.until_end()


@asynccontextmanager
async def connect(served: Served) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as http, await w(http.ws_connect(f"{served.url}/ws")) as ws:
        client = Client(ws)
        client.hello = await client.recv()
        assert client.hello["type"] == "hello", client.hello
        yield client


def text_of(frames: list[Frame]) -> str:
    return "".join(f["text"] for f in frames if f["type"] == "token")


# ---- a normal exchange ----

def test_frame_order_session_tokens_done_with_usage_and_timings() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Hel", "lo", "!"])
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("hi there")
        assert [f["type"] for f in frames] == ["session", "token", "token", "token", "done"]
        assert isinstance(frames[0]["session"], str) and frames[0]["session"]
        assert text_of(frames) == "Hello!"
        done = frames[-1]
        prompt = prompt_tokens(engine.requests[0])
        assert done["reason"] == "stop"
        assert done["usage"] == {"prompt_tokens": prompt, "completion_tokens": 3, "total_tokens": prompt + 3}
        assert set(done["timings"]) == set(Timings.__dataclass_fields__)

    run(test)


def test_follow_up_sees_previous_turns_and_null_session_starts_fresh() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Paris."])
        async with serve(engine, system_prompt="Be brief.") as served, connect(served) as client:
            first = await client.chat("Capital of France?")
            session = first[0]["session"]
            second = await client.chat("And of Italy?", session)
            fresh = await client.chat("Hello", None)
        assert second[0] == {"type": "session", "session": session}
        assert fresh[0]["session"] != session
        assert engine.requests[1].messages == (
            ChatMessage("system", "Be brief."), ChatMessage("user", "Capital of France?"),
            ChatMessage("assistant", "Paris."), ChatMessage("user", "And of Italy?"))
        assert engine.requests[2].messages == (ChatMessage("system", "Be brief."), ChatMessage("user", "Hello"))

    run(test)


def test_unknown_session_is_an_error_frame() -> None:
    async def test() -> None:
        engine = ScriptedEngine()
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("hi", "no-such-session")
        assert [f["type"] for f in frames] == ["error"]
        assert frames[0]["code"] == "unknown_session"
        assert engine.requests == []

    run(test)


def test_chinese_text_arrives_intact() -> None:
    async def test() -> None:
        pieces = ["你好", "，", "欢迎光临", "！😀"]
        async with serve(ScriptedEngine(pieces)) as served, connect(served) as client:
            frames = await client.chat("你好吗？")
        assert [f["text"] for f in frames if f["type"] == "token"] == pieces

    run(test)


# ---- cancelling ----

def test_cancel_mid_answer_stops_the_generation_promptly() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as client:
            await client.send(type="chat", text="tell me a long story")
            assert (await client.recv())["type"] == "session"
            assert (await client.recv())["type"] == "token"
            await client.send(type="cancel")
            rest = await client.until_end()
        assert rest[-1]["type"] == "done" and rest[-1]["reason"] == "cancelled", rest[-1]
        assert len(rest) - 1 <= 5, "tokens kept coming after the cancel"
        assert engine.runs[0].saw_cancel and len(engine.runs[0].emitted) < 20

    run(test)


def test_cancel_while_queued_never_runs() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as first, connect(served) as second:
            await first.send(type="chat", text="long one")
            assert (await first.recv())["type"] == "session"
            assert (await first.recv())["type"] == "token"
            await second.send(type="chat", text="me next")
            assert (await second.recv())["type"] == "session"
            assert await second.recv() == {"type": "queued", "position": 1}
            assert engine.gate.waiting == 1
            await second.send(type="cancel")
            done = await second.recv()
            assert done["type"] == "done" and done["reason"] == "cancelled"
            assert done["usage"]["completion_tokens"] == 0
            assert len(engine.runs) == 1 and engine.gate.waiting == 0
            assert (await first.recv())["type"] == "token", "the first answer was disturbed"
            await first.send(type="cancel")
            await first.until_end()

    run(test)


def test_second_chat_while_answering_is_refused_and_first_continues() -> None:
    async def test() -> None:
        engine = ScriptedEngine([f"p{i}" for i in range(30)], delay=0.005)
        async with serve(engine) as served, connect(served) as client:
            await client.send(type="chat", text="first")
            assert (await client.recv())["type"] == "session"
            await client.send(type="chat", text="second")
            frames = await client.until_end()
            errors = [f for f in frames if f["type"] == "error"]
            assert [e["code"] for e in errors] == ["generation_in_progress"]
            if frames[-1]["type"] == "error":
                frames += await client.until_end()
        assert frames[-1]["type"] == "done" and frames[-1]["reason"] == "stop"
        assert text_of(frames) == "".join(f"p{i}" for i in range(30))
        assert len(engine.requests) == 1

    run(test)


# ---- malformed input ----

BAD_FRAMES: list[tuple[str | bytes, str]] = [
    ("{not json", "bad_json"),
    ("[1, 2]", "bad_frame"),
    ('"chat"', "bad_frame"),
    ('{"type": "hello"}', "unknown_type"),
    ('{"text": "no type"}', "unknown_type"),
    ('{"type": "chat", "text": ""}', "bad_frame"),
    ('{"type": "chat", "text": "   "}', "bad_frame"),
    ('{"type": "chat", "text": 5}', "bad_frame"),
    ('{"type": "chat", "text": "hi", "session": 7}', "bad_frame"),
    (b"\x00\x01binary", "bad_frame"),
]


def test_malformed_frames_get_error_frames_and_the_connection_stays_usable() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["ok"])
        async with serve(engine) as served, connect(served) as client:
            for raw, code in BAD_FRAMES:
                if isinstance(raw, bytes):
                    await w(client.ws.send_bytes(raw))
                else:
                    await w(client.ws.send_str(raw))
                frame = await client.recv()
                assert frame["type"] == "error" and frame["code"] == code, (raw, frame)
                assert isinstance(frame["message"], str) and frame["message"]
                assert text_of(await client.chat("still there?")) == "ok"
        assert len(engine.requests) == len(BAD_FRAMES)

    run(test)


def test_engine_error_becomes_an_error_frame() -> None:
    async def test() -> None:
        engine = ScriptedEngine(error=PromptTooLong)
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("hi")
            assert [f["type"] for f in frames] == ["session", "error"]
            assert frames[-1]["code"] == "prompt_too_long"
            engine.error = None
            assert (await client.chat("again"))[-1]["type"] == "done"

    run(test)


# ---- sharing the one model ----

def test_busy_when_the_waiting_line_is_full() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01, queue_size=0)
        async with serve(engine, retry_after=7) as served, connect(served) as first, connect(served) as second:
            await first.send(type="chat", text="long one")
            assert (await first.recv())["type"] == "session"
            assert (await first.recv())["type"] == "token"
            frames = await second.chat("me too")
            assert [f["type"] for f in frames] == ["session", "error"]
            assert frames[-1]["code"] == "busy" and frames[-1]["retry_after"] == 7
            await first.send(type="cancel")
            assert (await first.until_end())[-1]["reason"] == "cancelled"
            engine.pieces = ["yes"]
            assert text_of(await second.chat("now?")) == "yes"

    run(test)


def test_disconnecting_mid_answer_frees_the_model() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01, queue_size=0)
        async with serve(engine) as served:
            async with connect(served) as first:
                await first.send(type="chat", text="long one")
                assert (await first.recv())["type"] == "session"
                assert (await first.recv())["type"] == "token"
            await w(asyncio.to_thread(engine.runs[0].done.wait, STEP))
            assert engine.runs[0].saw_cancel and len(engine.runs[0].emitted) < 50
            await eventually(lambda: not engine.gate.busy)
            engine.pieces = ["free"]
            async with connect(served) as second:
                assert text_of(await second.chat("hello?")) == "free"

    run(test)


def test_model_not_ready_is_an_error_frame() -> None:
    async def test() -> None:
        engine = ScriptedEngine(ready=False)
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("hi")
            assert [f["type"] for f in frames] == ["session", "error"]
            assert frames[-1]["code"] == "model_loading"
            engine.ready = True
            assert (await client.chat("hi", frames[0]["session"]))[-1]["type"] == "done"

    run(test)


def test_shutdown_closes_open_sockets_with_going_away() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as idle, connect(served) as busy:
            await busy.send(type="chat", text="long one")
            assert (await busy.recv())["type"] == "session"
            assert (await busy.recv())["type"] == "token"  # The answer is being written.
            cleanup = asyncio.create_task(served.runner.cleanup())
            for client in (idle, busy):
                msg = await w(client.ws.receive())
                while msg.type == WSMsgType.TEXT:
                    msg = await w(client.ws.receive())
                assert msg.type == WSMsgType.CLOSE and msg.data == 1001, msg
            await w(cleanup, 10)
        assert engine.runs[0].done.is_set() and engine.runs[0].saw_cancel

    run(test)


# ---- the page's set-up frame and the voice controls ----

def test_hello_is_the_first_frame_and_tells_the_page_how_to_set_up() -> None:
    async def test() -> None:
        engine = ScriptedEngine(ready=False)
        async with serve(engine, suggestions="Opening hours?|营业时间？", max_question_chars=50) as served:
            async with connect(served) as client:
                hello = client.hello
                assert hello["model"] == "scripted-model" and hello["ready"] is False
                assert hello["suggestions"] == ["Opening hours?", "营业时间？"]
                assert hello["max_question_chars"] == 50 and hello["idle_reset"] == 120
                assert hello["voice"]["type"] == "voice" and hello["voice"]["available"] is False
            engine.ready = True
            async with connect(served) as client:
                assert client.hello["ready"] is True

    run(test)


def test_question_over_the_limit_is_refused_and_nothing_starts() -> None:
    async def test() -> None:
        engine = ScriptedEngine()
        async with serve(engine, max_question_chars=10) as served, connect(served) as client:
            frames = await client.chat("x" * 11)
            assert [(f["type"], f.get("code")) for f in frames] == [("error", "question_too_long")]
            assert engine.requests == []
            assert (await client.chat("x" * 10))[-1]["type"] == "done"

    run(test)


def test_voice_controls_report_state_and_refuse_listening_without_voice() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine()) as served, connect(served) as client:
            await client.send(type="speech", on=False)
            state = await client.recv()
            assert state["type"] == "voice" and state["speech"] is False and state["available"] is False
            await client.send(type="listen", on=True)
            refused = await client.recv()
            assert refused["type"] == "error" and refused["code"] == "voice_unavailable"
            await client.send(type="listen", on="yes")
            assert (await client.recv())["code"] == "bad_frame"
            assert (await client.chat("still works"))[-1]["type"] == "done"

    run(test)
