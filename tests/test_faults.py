"""Faults on the real daemon process, the real SmolLM2 model, a real SQLite file and real sockets.

A history database locked by another process or full, the model failing inside llama.cpp mid-answer, and a
client whose TCP connection is reset mid-answer: each is answered, logged once, and loses no completed turn.
The database faults are real SQLite errors: this test holds `BEGIN EXCLUSIVE` on the daemon's file (SQLITE_BUSY),
or fills the file up to the page limit that `fault_history_max_pages` sets for the daemon (SQLITE_FULL).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
import struct
import time
from collections.abc import Callable, Coroutine
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from tests.conftest import AUTH, Daemon
from tests.wsclient import Answer, ask, read_answer

T = TypeVar("T")
Rows = list[tuple[str, str, str]]
Factory = Callable[..., Daemon]

STORY = "Write a long story about a lighthouse keeper, the sea and the storms of the winter."
PAGES = 64  # the daemon's history may hold 256 KiB: the test fills it up with a table of its own


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 150))


@pytest.fixture
def start(test_model: Path, daemon_factory: Factory) -> Factory:
    def factory(*args: str) -> Daemon:
        return daemon_factory("--model", str(test_model), "--max-tokens", "16", "--temperature", "0", *args)
    return factory


def history_file(d: Daemon) -> Path:
    return Path(d.args[d.args.index("--state-dir") + 1]) / "history.db"


def rows(db: Path, session: str) -> Rows:
    """The session's turns in the file, read as a second process would (WAL readers are never blocked)."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
        return [tuple(r) for r in reader.execute(  # type: ignore[misc]
            "SELECT role, content, status FROM turns WHERE session_id = ? ORDER BY seq", (session,))]


def exchange(question: str, answer: Answer, status: str = "complete") -> Rows:
    return [("user", question, "complete"), ("assistant", answer.text, status)]


async def until_stored(db: Path, session: str, expected: Rows, seconds: float) -> float:
    began = time.monotonic()
    while (now := time.monotonic()) - began < seconds:
        if rows(db, session) == expected:
            return now - began
        await asyncio.sleep(0.05)
    raise AssertionError(f"not stored in {seconds} s: {rows(db, session)} != {expected}")


async def ask_and_lock_midway(ws: aiohttp.ClientWebSocketResponse, db: Path, session: str,
                              question: str) -> tuple[Answer, sqlite3.Connection]:
    """Ask; once the first token arrives (so the question is committed) lock the file until the caller commits."""
    answer = Answer()
    await ws.send_str(json.dumps({"type": "chat", "session": session, "text": question}))
    while not answer.tokens:
        frame = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
        assert frame["type"] not in ("done", "error"), frame
        if frame["type"] == "token":
            answer.tokens.append(frame["text"])
    locker = sqlite3.connect(db, isolation_level=None, timeout=10)
    locker.execute("BEGIN EXCLUSIVE")
    return await read_answer(ws, answer), locker


def error_lines(d: Daemon) -> list[str]:
    return [line for line in d.log().splitlines() if " ERROR " in line]


def test_a_locked_database_keeps_the_answers_in_order_and_saves_them_when_released(start: Factory) -> None:
    d = start()
    db = history_file(d)

    async def test() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            first = await ask(ws, "Hello!")
            assert first.done and first.done["stored"] is True, first
            session = first.session
            assert session
            second, locker = await ask_and_lock_midway(ws, db, session, STORY)
            try:
                assert second.done and second.done["stored"] is False, second
                async with http.get(f"{d.url}/api/sessions/{session}", headers=AUTH) as resp:  # reads go on meanwhile
                    assert [t["role"] for t in (await resp.json())["turns"]] == ["user", "assistant", "user"]
                # A follow-up while the answer waits: the model sees it, and it is saved after it.
                third = await ask(ws, "Thanks.", session=session)
                assert third.done and third.done["stored"] is False, third
                u2, u3 = second.done["usage"], third.done["usage"]
                assert u3["prompt_tokens"] > u2["prompt_tokens"] + u2["completion_tokens"], (u2, u3)
                assert rows(db, session) == [*exchange("Hello!", first), ("user", STORY, "complete")]
            finally:
                locker.execute("COMMIT")
                locker.close()
            expected = [*exchange("Hello!", first), *exchange(STORY, second), *exchange("Thanks.", third)]
            took = await until_stored(db, session, expected, 10)
            after = await ask(ws, "Bye.", session=session)
            assert after.done and after.done["stored"] is True
            async with http.get(f"{d.url}/api/sessions/{session}", headers=AUTH) as resp:
                turns = (await resp.json())["turns"]
            assert [(t["role"], t["content"]) for t in turns][-2:] == [("user", "Bye."), ("assistant", after.text)]
        print(f"saved {took:.1f} s after the lock was released")

    run(test())
    log = d.log()
    assert log.count("the history database refused") == 1, log
    assert "database is locked" in log and log.count("accepts writes again") == 1, log
    assert error_lines(d) == []
    assert d.stop() == 0


def fill_up(db: Path) -> None:
    """Use every page the daemon may have, in a table of the test's own (the daemon's rows stay as they are)."""
    with closing(sqlite3.connect(db, isolation_level=None, timeout=10)) as filler:
        filler.execute(f"PRAGMA max_page_count={PAGES}")
        filler.execute("PRAGMA synchronous=OFF")  # the ballast need not survive a power cut
        filler.execute("CREATE TABLE ballast (data BLOB)")
        for size in (3000, 1000, 200, 20):
            with pytest.raises(sqlite3.OperationalError, match="full"):
                while True:
                    filler.execute("INSERT INTO ballast VALUES (?)", (b"x" * size,))


def free_up(db: Path) -> None:
    with closing(sqlite3.connect(db, isolation_level=None, timeout=10)) as filler:
        filler.execute("DROP TABLE ballast")


def test_a_full_disk_keeps_the_turn_and_saves_it_when_space_is_freed(start: Factory) -> None:
    d = start(f"--fault-history-max-pages={PAGES}", "--max-question-chars", "8000")
    db = history_file(d)
    # Longer than a page (4 KiB), so it needs new pages and there are none; few tokens, so the model is quick.
    long_question = "What is this line for? " + "-" * 4200

    async def test() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            first = await ask(ws, "Hello!")
            session = first.session
            assert session and first.done and first.done["stored"] is True
            fill_up(db)
            second = await ask(ws, long_question, session=session)
            assert second.done and second.done["stored"] is False, second
            assert second.text
            assert rows(db, session) == exchange("Hello!", first)
            free_up(db)
            await until_stored(db, session, [*exchange("Hello!", first), *exchange(long_question, second)], 10)
            third = await ask(ws, "Thanks.", session=session)
            assert third.done and third.done["stored"] is True
            u2, u3 = second.done["usage"], third.done["usage"]
            assert u3["prompt_tokens"] > u2["prompt_tokens"] + u2["completion_tokens"], "in the next one's context"

    run(test())
    log = d.log()
    assert log.count("the history database refused") == 1 and "database or disk is full" in log, log
    assert error_lines(d) == []
    assert d.stop() == 0


def test_sigterm_saves_a_waiting_turn_once_the_database_is_released(start: Factory) -> None:
    d = start()
    db = history_file(d)

    async def test() -> tuple[str, Rows]:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            first = await ask(ws, "Hello!")
            assert first.session
            second, locker = await ask_and_lock_midway(ws, db, first.session, STORY)
            assert second.done and second.done["stored"] is False, second
            # The retries back off (0.5, 1, 2, 4 s...): stop between two of them, just after the release.
            await asyncio.sleep(4.0)
            locker.execute("COMMIT")
            locker.close()
            d.proc.send_signal(signal.SIGTERM)
        return first.session, [*exchange("Hello!", first), *exchange(STORY, second)]

    session, expected = run(test())
    assert d.stop() == 0
    assert rows(db, session) == expected
    assert "saved 1 waiting turn(s) before stopping" in d.log(), d.log()


def test_sigterm_while_still_locked_says_what_was_not_saved(start: Factory) -> None:
    d = start()
    db = history_file(d)

    async def test() -> str:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            first = await ask(ws, "Hello!")
            assert first.session
            second, locker = await ask_and_lock_midway(ws, db, first.session, STORY)
            assert second.done and second.done["stored"] is False
            d.proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(d.proc.wait, 20)
            locker.execute("COMMIT")
            locker.close()
            return first.session

    session = run(test())
    assert d.stop() == 0
    lost = error_lines(d)
    assert len(lost) == 1 and session in lost[0] and "1 turn(s)" in lost[0] and "database is locked" in lost[0], lost
    assert [r[0] for r in rows(db, session)] == ["user", "assistant", "user"]


def system_prefix_tokens(d: Daemon) -> int:
    """Tokens of the system prompt's stored prefix state (the only one without a knowledge folder)."""
    (state,) = (Path(d.args[d.args.index("--state-dir") + 1]) / "prefixes").glob("*.kvstate")
    with state.open("rb") as fh:
        fh.readline()
        return int(json.loads(fh.readline())["tokens"])


def test_the_model_failing_mid_answer_is_reported_stored_and_the_next_answer_works(start: Factory) -> None:
    d = start("--fault-engine-raise", "5")

    async def test() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            broken = await ask(ws, STORY)
            assert broken.error and broken.error["code"] == "engine_error", broken
            assert broken.tokens and not broken.done
            assert broken.session
            assert rows(history_file(d), broken.session) == exchange(STORY, broken, "interrupted")
            again = await ask(ws, "Go on.", session=broken.session)
            assert again.done and again.done["reason"] in ("stop", "length") and again.text, again
            # The failed context was reset: everything after the system prompt (whose state is restored from its
            # file on disk) is read again, the broken exchange included.
            assert again.done["timings"]["prompt_eval_tokens"] == \
                again.done["usage"]["prompt_tokens"] - system_prefix_tokens(d), again.done
            errors = error_lines(d)
            assert len(errors) == 1 and broken.session in errors[0], errors
            assert "Traceback" in d.log() and "llama_decode returned -1" in d.log()

    run(test())
    assert d.stop() == 0


def test_the_model_failing_mid_stream_is_an_error_event_for_openai_clients(start: Factory) -> None:
    d = start("--fault-engine-raise", "5")

    async def test() -> None:
        body = {"model": "any", "stream": True, "messages": [{"role": "user", "content": STORY}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(d.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                events = [json.loads(line[6:]) for line in (await resp.text()).splitlines()
                          if line.startswith("data: {")]
            assert events[-1]["error"]["code"] == "engine_error", events[-1]
            assert any(e.get("choices") and e["choices"][0]["delta"].get("content") for e in events[:-1])
            async with http.post(d.url + "/v1/chat/completions", json={**body, "stream": False}) as resp:
                assert resp.status == 200, await resp.text()
                assert (await resp.json())["choices"][0]["message"]["content"]

    run(test())
    assert len(error_lines(d)) == 1
    assert d.stop() == 0


def reset_mid_answer(port: int, question: str, tokens: int) -> Answer:
    """Ask over a plain socket, and after `tokens` tokens close it with RST (SO_LINGER 0, no close handshake), as
    a client that crashed or lost its network would."""
    answer = Answer()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        reader = sock.makefile("rb")
        while reader.readline() not in (b"\r\n", b""):
            pass
        payload, mask = json.dumps({"type": "chat", "session": None, "text": question}).encode(), os.urandom(4)
        sock.sendall(bytes([0x81, 0xFE]) + struct.pack("!H", len(payload)) + mask
                     + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while len(answer.tokens) < tokens:
            frame = json.loads(_read_frame(reader))
            answer.session = frame.get("session", answer.session)
            if frame["type"] == "token":
                answer.tokens.append(frame["text"])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        reader.close()
    return answer


def _read_frame(reader: Any) -> bytes:
    """One unmasked server frame's payload (the server sends text frames, never fragmented here)."""
    head = reader.read(2)
    size = head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", reader.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", reader.read(8))[0]
    return bytes(reader.read(size))


def test_a_client_reset_mid_answer_frees_the_model_and_keeps_the_partial_answer(start: Factory) -> None:
    d = start("--max-tokens", "400")

    async def test() -> None:
        gone = await asyncio.to_thread(reset_mid_answer, d.port, STORY, 3)
        began = time.monotonic()
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            nxt = await ask(ws, "Say hi.")
        assert nxt.done and nxt.done["timings"]["queue_ms"] < 1000, nxt.done
        assert time.monotonic() - began < 10
        assert gone.session
        stored = await until_stored_prefix(history_file(d), gone.session, gone.text)
        assert stored[0] == ("user", STORY, "complete")
        assert stored[1][2] == "interrupted" and len(stored[1][1]) < 1200, stored

    run(test())
    assert error_lines(d) == []
    assert d.stop() == 0


async def until_stored_prefix(db: Path, session: str, streamed: str) -> Rows:
    for _ in range(200):
        got = rows(db, session)
        if len(got) == 2 and got[1][1].startswith(streamed):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(rows(db, session))
