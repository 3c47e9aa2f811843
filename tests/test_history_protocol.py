"""Conversation history through /ws over real sockets: what is stored, what a follow-up sees, idle reset, retention."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.generation import Emit
from daemon.history import HistoryStore
from daemon.messages import ChatMessage, Finished, PromptTooLong
from tests.fakes import Run, ScriptedEngine, Served, request_json, serve
from tests.test_ws_protocol import LONG, STEP, Client, Frame, connect, eventually, run, text_of, w

SYSTEM = "Be brief."
Stored = list[tuple[str, str, str]]  # (role, content, status) of each stored turn, in order


async def stored(served: Served, session: str) -> Stored:
    status, body = await request_json(served, "GET", f"/api/sessions/{session}")
    assert status == 200, body
    assert [t["seq"] for t in body["turns"]] == list(range(1, len(body["turns"]) + 1))
    return [(t["role"], t["content"], t["status"]) for t in body["turns"]]


async def listed(served: Served) -> dict[str, dict[str, Any]]:
    status, body = await request_json(served, "GET", "/api/sessions")
    assert status == 200, body
    return {s["id"]: s for s in body["sessions"]}


async def stored_eventually(served: Served, session: str, count: int) -> Stored:
    """The session's turns once there are `count` of them (the answer is stored after the client has left)."""
    for _ in range(int(STEP / 0.02)):
        turns = await stored(served, session)
        if len(turns) >= count:
            return turns
        await asyncio.sleep(0.02)
    raise AssertionError(f"session {session} never had {count} turns: {turns}")


async def start_long_answer(client: Client, text: str, tokens: int = 1) -> tuple[str, list[Frame]]:
    """Ask for LONG and read the session frame and the first `tokens` token frames."""
    await client.send(type="chat", text=text)
    session = await client.recv()
    assert session["type"] == "session", session
    frames = [await client.recv() for _ in range(tokens)]
    assert all(f["type"] == "token" for f in frames), frames
    return session["session"], frames


async def silent_for(client: Client, seconds: float) -> None:
    """Assert that the server sends nothing for `seconds`."""
    with pytest.raises(TimeoutError):
        frame = await asyncio.wait_for(client.ws.receive(), seconds)
        raise AssertionError(f"unexpected frame {frame}")


# ---- continuing a conversation ----

def test_a_new_connection_is_a_new_visit_and_cannot_continue_an_earlier_session() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Paris."])
        async with serve(engine, system_prompt=SYSTEM) as served:
            async with connect(served) as first:
                session = (await first.chat("Capital of France?"))[0]["session"]
                engine.pieces = ["Rome."]
                frames = await first.chat("And of Italy?", session)  # the same visit continues
                assert frames[0] == {"type": "session", "session": session} and frames[-1]["type"] == "done"
            async with connect(served) as second:
                frames = await second.chat("What did they ask?", session)
            assert frames == [{"type": "error", "code": "unknown_session",
                               "message": f"no session {session!r}; send null to start"}]
            assert await stored(served, session) == [  # kept (history_mode keep) for the operator, untouched
                ("user", "Capital of France?", "complete"), ("assistant", "Paris.", "complete"),
                ("user", "And of Italy?", "complete"), ("assistant", "Rome.", "complete")]
        assert len(engine.requests) == 2
        assert engine.requests[1].messages == (
            ChatMessage("system", SYSTEM), ChatMessage("user", "Capital of France?"),
            ChatMessage("assistant", "Paris."), ChatMessage("user", "And of Italy?"))

    run(test)


def test_a_kept_session_survives_a_restart_of_the_daemon_for_the_operator(tmp_path: Path) -> None:
    async def test() -> None:
        db = str(tmp_path / "history.db")
        engine = ScriptedEngine(["Second floor."])
        async with serve(engine, history_path=db, system_prompt=SYSTEM) as served, connect(served) as client:
            session = (await client.chat("Where is the library?"))[0]["session"]
        engine = ScriptedEngine(["9 to 5."])  # The first daemon's shutdown closed the old engine.
        async with serve(engine, history_path=db, system_prompt=SYSTEM) as served, connect(served) as client:
            assert await stored(served, session) == [
                ("user", "Where is the library?", "complete"), ("assistant", "Second floor.", "complete")]
            assert (await client.chat("Opening hours?", session))[-1]["code"] == "unknown_session"
        assert engine.requests == []

    run(test)


# ---- answers cut short ----

def test_cancelled_answer_is_stored_interrupted_with_the_streamed_text_and_followed_up() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine, system_prompt=SYSTEM) as served, connect(served) as client:
            session, first = await start_long_answer(client, "Tell me a story", tokens=3)
            await client.send(type="cancel")
            rest = await client.until_end()
            assert rest[-1]["type"] == "done" and rest[-1]["reason"] == "cancelled"
            streamed = text_of(first + rest)
            assert 0 < len(streamed) < len("".join(LONG))
            assert await stored(served, session) == [
                ("user", "Tell me a story", "complete"), ("assistant", streamed, "interrupted")]
            engine.pieces, engine.delay = ["The end."], 0.0
            assert text_of(await client.chat("Go on", session)) == "The end."
            assert (await stored(served, session))[2:] == [
                ("user", "Go on", "complete"), ("assistant", "The end.", "complete")]
        assert engine.requests[1].messages == (
            ChatMessage("system", SYSTEM), ChatMessage("user", "Tell me a story"),
            ChatMessage("assistant", streamed), ChatMessage("user", "Go on"))

    run(test)


def test_disconnect_mid_answer_stores_the_partial_answer_as_interrupted() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served:
            async with connect(served) as client:
                session, first = await start_long_answer(client, "Tell me a story", tokens=3)
            turns = await stored_eventually(served, session, 2)
        assert engine.runs[0].saw_cancel
        partial = "".join(engine.runs[0].emitted)
        assert turns == [("user", "Tell me a story", "complete"), ("assistant", partial, "interrupted")]
        assert partial.startswith(text_of(first)) and len(partial) < len("".join(LONG))

    run(test)


def test_shutdown_mid_answer_stores_the_partial_answer_as_interrupted(tmp_path: Path) -> None:
    async def test() -> None:
        path = tmp_path / "history.db"
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine, history_path=str(path)) as served, connect(served) as client:
            session, _ = await start_long_answer(client, "Tell me a story")
            await w(served.runner.cleanup(), 10)
        partial = "".join(engine.runs[0].emitted)
        store = HistoryStore(path)
        try:
            turns = [(t.role, t.content, t.status) for t in store.turns(session)]
        finally:
            store.close()
        assert turns == [("user", "Tell me a story", "complete"), ("assistant", partial, "interrupted")]
        assert 0 < len(partial) < len("".join(LONG))

    run(test)


# ---- questions the model never started on are taken back ----

def test_busy_question_is_not_stored() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Hi!"], delay=0.01, queue_size=0)
        async with serve(engine) as served, connect(served) as first, connect(served) as second:
            earlier = (await second.chat("Hello"))[0]["session"]
            engine.pieces = LONG
            running, _ = await start_long_answer(first, "Long one")
            refused = await second.chat("Me too")
            follow_up = await second.chat("Still there?", earlier)
            assert [f["type"] for f in refused] == [f["type"] for f in follow_up] == ["session", "error"]
            assert refused[-1]["code"] == follow_up[-1]["code"] == "busy"
            new = refused[0]["session"]
            assert new not in await listed(served)
            assert await stored(served, new) == []
            assert await stored(served, earlier) == [("user", "Hello", "complete"), ("assistant", "Hi!", "complete")]
            assert (await listed(served))[earlier]["title"] == "Hello"
            await first.send(type="cancel")
            await first.until_end()
            assert [t[0] for t in await stored(served, running)] == ["user", "assistant"]
            engine.pieces = ["Now yes."]
            assert text_of(await second.chat("Now?", new)) == "Now yes."
            assert (await listed(served))[new]["title"] == "Now?", "titled by a question that was taken back"

    run(test)


def test_prompt_too_long_is_not_stored() -> None:
    async def test() -> None:
        engine = ScriptedEngine(["Yes."])
        async with serve(engine) as served, connect(served) as client:
            session = (await client.chat("Short question"))[0]["session"]
            engine.error = PromptTooLong
            frames = await client.chat("A question too long for the model", session)
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "prompt_too_long"
            fresh = await client.chat("Also too long")
            assert fresh[-1]["code"] == "prompt_too_long"
            assert await stored(served, session) == [
                ("user", "Short question", "complete"), ("assistant", "Yes.", "complete")]
            assert await stored(served, fresh[0]["session"]) == []
            assert list(await listed(served)) == [session]

    run(test)


def test_model_loading_is_not_stored() -> None:
    async def test() -> None:
        engine = ScriptedEngine(ready=False)
        async with serve(engine) as served, connect(served) as client:
            frames = await client.chat("Hello?")
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "model_loading"
            assert await stored(served, frames[0]["session"]) == []
            assert await listed(served) == {}

    run(test)


def test_cancel_while_queued_is_not_stored() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as first, connect(served) as second:
            running, _ = await start_long_answer(first, "Long one")
            await second.send(type="chat", text="Me next")
            queued = (await second.recv())["session"]
            await eventually(lambda: engine.gate.waiting == 1)
            await second.send(type="cancel")
            done = (await second.until_end())[-1]  # after any `queued` (waiting-line position) frames
            assert done["type"] == "done" and done["reason"] == "cancelled"
            assert await stored(served, queued) == []
            assert list(await listed(served)) == [running]
            await first.send(type="cancel")
            await first.until_end()

    run(test)


# ---- titles ----

def test_title_is_the_first_question_on_one_line_and_long_ones_are_cut() -> None:
    async def test() -> None:
        chinese = "请问这台自助服务终端可以办理哪些业务，" * 8
        english = "Could you please tell me " + " ".join(f"word{i}" for i in range(40))
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            short = (await client.chat("  Where is\n the   exit? "))[0]["session"]
            await client.chat("A later question", short)
            zh = (await client.chat(chinese))[0]["session"]
            en = (await client.chat(english))[0]["session"]
            titles = {k: v["title"] for k, v in (await listed(served)).items()}
        assert titles[short] == "Where is the exit?"
        for session, question in ((zh, chinese), (en, english)):
            title = titles[session]
            assert title.endswith("…") and 10 < len(title) <= 80, title
            assert question.startswith(title[:-1])
        assert english[len(titles[en]) - 1] == " ", "an English title is cut between words"

    run(test)


# ---- many screens at once ----

class EchoEngine(ScriptedEngine):
    """Answers every question with a reply naming it, so stored turns show whose answer they are."""

    def _run(self, run: Run, cancel: threading.Event, emit: Emit, queue_ms: float) -> Finished:
        question = run.request.messages[-1].content
        self.pieces = ["re: ", *question.split()]  # Runs one at a time, so this is safe.
        return super()._run(run, cancel, emit, queue_ms)


def test_concurrent_clients_never_mix_turns() -> None:
    async def test() -> None:
        engine = EchoEngine(delay=0.005)
        async with serve(engine, queue_size=10) as served:

            async def converse(name: str) -> str:
                session: str | None = None
                async with connect(served) as client:
                    for i in range(3):
                        frames = await client.chat(f"{name} question {i}", session)
                        session = frames[0]["session"]
                        assert text_of(frames) == f"re: {name}question{i}"
                assert session is not None
                return session

            names = ("alice", "bob", "carol")
            sessions = dict(zip(names, await w(asyncio.gather(*map(converse, names)), 10), strict=True))
            for name, session in sessions.items():
                expected: Stored = []
                for i in range(3):
                    expected += [("user", f"{name} question {i}", "complete"),
                                 ("assistant", f"re: {name}question{i}", "complete")]
                assert await stored(served, session) == expected
        order = [r.request.conversation for r in engine.runs]
        assert order[:3] != [order[0]] * 3, "the answers did not interleave"
        for r in engine.runs:
            name = next(n for n, s in sessions.items() if s == r.request.conversation)
            assert all(name in m.content for m in r.request.messages[1:]), r.request.messages

    run(test)


# ---- idle reset ----

def test_idle_reset_once_after_the_answer_and_never_while_answering() -> None:
    async def test() -> None:
        engine = ScriptedEngine([f"p{i} " for i in range(8)], delay=0.08)  # 0.64 s, longer than idle_reset
        async with serve(engine, idle_reset=0.3) as served, connect(served) as client:
            frames = await client.chat("Slow answer please")
            assert [f["type"] for f in frames][-1] == "done" and frames[-1]["reason"] == "stop"
            assert "reset" not in [f["type"] for f in frames]
            session = frames[0]["session"]
            done_at = asyncio.get_running_loop().time()
            reset = await client.recv()
            assert reset == {"type": "reset", "reason": "idle", "session": session, "visit": reset["visit"]}
            assert asyncio.get_running_loop().time() - done_at >= 0.25
            await silent_for(client, 0.8)

    run(test)


def test_any_frame_postpones_the_idle_reset() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), idle_reset=0.3) as served, connect(served) as client:
            session = (await client.chat("Hi"))[0]["session"]
            await asyncio.sleep(0.2)
            await client.send(type="cancel")  # Nothing to cancel, but the visitor is still there.
            await silent_for(client, 0.2)
            reset = await client.recv()
            assert reset == {"type": "reset", "reason": "idle", "session": session, "visit": reset["visit"]}

    run(test)


def test_no_idle_reset_for_a_connection_that_never_chatted() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), idle_reset=0.3) as served, connect(served) as client:
            await silent_for(client, 0.8)

    run(test)


# ---- retention ----

def old_and_fresh_sessions(path: Path) -> tuple[str, str]:
    store = HistoryStore(path)
    try:
        old, fresh = store.create_session(), store.create_session()
        for session in (old, fresh):
            store.add_turn(session, "user", "question")
            store.add_turn(session, "assistant", "answer")
    finally:
        store.close()
    long_ago = time.time() - 3 * 86400
    with sqlite3.connect(path) as db:
        db.execute("UPDATE sessions SET created_at = ?, updated_at = ? WHERE id = ?", (long_ago, long_ago, old))
    return old, fresh


def turn_count(path: Path, session: str) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT COUNT(*) FROM turns WHERE session_id = ?", (session,)).fetchone()[0])


def test_retention_deletes_old_sessions_at_start_up(tmp_path: Path) -> None:
    async def test() -> None:
        path = tmp_path / "history.db"
        old, fresh = old_and_fresh_sessions(path)
        async with serve(ScriptedEngine(), history_path=str(path), retention_days=1) as served:
            for _ in range(int(STEP / 0.02)):
                if old not in await listed(served):
                    break
                await asyncio.sleep(0.02)
            assert list(await listed(served)) == [fresh]
            status, body = await request_json(served, "GET", f"/api/sessions/{old}")
            assert status == 404 and body["error"]["code"] == "unknown_session"
        assert turn_count(path, old) == 0 and turn_count(path, fresh) == 2

    run(test)


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    async def test() -> None:
        path = tmp_path / "history.db"
        old, fresh = old_and_fresh_sessions(path)
        async with serve(ScriptedEngine(), history_path=str(path), retention_days=0) as served:
            await asyncio.sleep(0.1)
            assert list(await listed(served)) == [fresh, old]
            assert len(await stored(served, old)) == 2

    run(test)
