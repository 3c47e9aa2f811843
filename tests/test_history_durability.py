"""Conversation history on the real daemon process, the real SmolLM2 model and a real SQLite file.

kill -9 at several points of an answer, a normal restart, a question too long for the window, trimming with the
real tokenizer, and the per-session KV cache when two conversations take turns.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from daemon.history import HistoryStore, Turn
from tests.conftest import Daemon, start_daemon
from tests.wsclient import Answer, ask

T = TypeVar("T")
Expected = list[tuple[str, str, str]]  # (role, content, status) of every stored turn, in order

SYSTEM_PROMPT = "You are the helpful assistant of a museum kiosk. Answer clearly."
STORY = "Write a long story about a lighthouse keeper, the sea and the storms of the winter."
FILLER = ("The old harbour town has a museum of ships, a market with fresh fish every morning, a tall stone "
          "lighthouse, narrow streets that climb the hill and a small library next to the town hall. ")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 120))


def history_file(d: Daemon) -> Path:
    return Path(d.args[d.args.index("--state-dir") + 1]) / "history.db"


def stored(db: Path, session: str) -> tuple[str, list[Turn]]:
    """Open the file as the next daemon would (WAL recovery included): integrity check and the session's turns."""
    store = HistoryStore(db)
    try:
        return store.integrity_check(), store.turns(session)
    finally:
        store.close()


def rows(turns: Sequence[Turn]) -> Expected:
    return [(t.role, t.content, t.status) for t in turns]


def exchange(answer: Answer, question: str) -> Expected:
    return [("user", question, "complete"), ("assistant", answer.text, "complete")]


async def question_committed(db: Path, session: str, question: str) -> None:
    """Poll the file (a second reader, as WAL allows) until the daemon has committed the question."""
    with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as reader:
        for _ in range(6000):
            if reader.execute("SELECT 1 FROM turns WHERE session_id = ? AND role = 'user' AND content = ?",
                              (session, question)).fetchone():
                return
            await asyncio.sleep(0.005)
    raise AssertionError("the question was never committed")


async def ask_and_kill(d: Daemon, question: str, *, after_tokens: int) -> Answer:
    """Ask in a new session, then kill -9 the daemon once `after_tokens` tokens arrived (0: once the question is
    committed). (A session cannot be continued from another connection, i.e. another visit.)"""
    answer = Answer()
    async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
        assert json.loads((await ws.receive()).data)["type"] == "hello"
        await ws.send_str(json.dumps({"type": "chat", "session": None, "text": question}))
        while True:
            frame = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
            assert frame["type"] in ("session", "token"), f"the answer ended before the kill point: {frame}"
            if frame["type"] == "session":
                session = answer.session = frame["session"]
            if frame["type"] == "token":
                answer.tokens.append(frame["text"])
            if len(answer.tokens) == after_tokens:
                if after_tokens == 0:
                    await question_committed(history_file(d), session, question)
                break
        d.stop(signal.SIGKILL)
        # Frames already in the socket were sent before the kill: count them too.
        while (msg := await asyncio.wait_for(ws.receive(), 10)).type == aiohttp.WSMsgType.TEXT:
            if (frame := json.loads(msg.data))["type"] == "token":
                answer.tokens.append(frame["text"])
            assert frame["type"] == "token", f"the answer ended before the kill point: {frame}"
    assert d.proc.returncode == -signal.SIGKILL
    return answer


async def converse(url: str, questions: Sequence[tuple[str | None, str]]) -> list[Answer]:
    """Ask (session, question) pairs one after another on one connection; every answer must complete."""
    answers = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        for session, question in questions:
            answer = await ask(ws, question, session=session)
            assert answer.done and not answer.error, answer
            answers.append(answer)
    return answers


def assert_killed_answer_left_only_its_question(db: Path, session: str, expected: Expected, question: str,
                                                streamed: str) -> None:
    integrity, turns = stored(db, session)
    assert integrity == "ok"
    assert rows(turns[: len(expected)]) == expected, "every turn whose 'done' arrived is stored in full"
    expected.append(("user", question, "complete"))
    assert rows(turns[len(expected) - 1: len(expected)]) == expected[-1:], "the question was committed first"
    rest = turns[len(expected):]
    # kill -9 leaves no answer at all; a daemon that saved answers as they grow may leave a partial one.
    assert rest == [] or (len(rest) == 1 and rest[0].role == "assistant" and rest[0].status == "interrupted"
                          and (rest[0].content.startswith(streamed) or streamed.startswith(rest[0].content))), rest
    expected.extend(rows(rest))


def test_kill_9_mid_answer_loses_no_committed_turn(test_model: Path, tmp_path: Path) -> None:
    args = ("--model", str(test_model), "--max-tokens", "80", "--temperature", "0",
            "--system-prompt", SYSTEM_PROMPT, "--max-question-chars", "100000")
    d = start_daemon(tmp_path, *args)
    db = history_file(d)
    try:
        # Kill point 1: right after the 'done' of an answer, before the client even closes its socket.
        async def answer_then_kill() -> Answer:
            async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
                answer = await ask(ws, STORY)
                d.stop(signal.SIGKILL)
                return answer

        first = run(answer_then_kill())
        assert first.done and first.done["reason"] in ("stop", "length"), first
        assert first.session is not None and len(first.tokens) >= 20
        session = first.session
        expected = exchange(first, STORY)
        integrity, turns = stored(db, session)
        assert integrity == "ok" and rows(turns) == expected

        # Kill points 2-4: the question is committed but no token was sent yet; after 1 token; after 20 tokens.
        for n, after_tokens in enumerate((0, 1, 20), start=2):
            d = start_daemon(tmp_path, *args)
            question = f"Question {n}: {STORY} {FILLER * 3}"  # A long prompt: reading it takes a while.
            killed = run(ask_and_kill(d, question, after_tokens=after_tokens))
            # The kill came at the intended point (a few more tokens may have been on their way).
            assert len(killed.tokens) == 0 if after_tokens == 0 else after_tokens <= len(killed.tokens) < 60
            assert killed.session is not None
            assert_killed_answer_left_only_its_question(db, killed.session, [], question, killed.text)

        # After the crashes the daemon starts on the same file and answers; the first session is whole.
        d = start_daemon(tmp_path, *args)
        [follow] = run(converse(d.url, [(None, "Give the lighthouse keeper a name.")]))
        assert d.stop() == 0, d.log()
    finally:
        d.stop(signal.SIGKILL)
    assert follow.done is not None and follow.text and follow.session is not None
    integrity, turns = stored(db, session)
    assert integrity == "ok" and rows(turns) == expected
    assert rows(stored(db, follow.session)[1]) == exchange(follow, "Give the lighthouse keeper a name.")


def test_history_survives_a_normal_restart(test_model: Path, tmp_path: Path) -> None:
    args = ("--model", str(test_model), "--max-tokens", "300", "--temperature", "0")
    d = start_daemon(tmp_path, *args)
    try:
        [first] = run(converse(d.url, [(None, "What is a lighthouse?")]))
        assert d.stop() == 0, d.log()
        session = first.session
        assert session is not None

        d = start_daemon(tmp_path, *args)
        listed = json.loads(d.get("/api/sessions")[1])["sessions"]
        assert [(s["id"], s["turn_count"], s["title"]) for s in listed] == [(session, 2, "What is a lighthouse?")]
        turns = json.loads(d.get(f"/api/sessions/{session}")[1])["turns"]
        assert [(t["role"], t["content"], t["status"]) for t in turns] == exchange(first, "What is a lighthouse?")

        [second] = run(converse(d.url, [(None, "Who works there?")]))
        assert second.done and second.session != session

        async def sigterm_mid_answer() -> str:
            nonlocal session
            pieces: list[str] = []
            async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
                await ws.send_str(json.dumps({"type": "chat", "session": None, "text": STORY}))
                while (msg := await asyncio.wait_for(ws.receive(), 30)).type == aiohttp.WSMsgType.TEXT:
                    frame = json.loads(msg.data)
                    assert frame["type"] != "error", frame
                    if frame["type"] == "session":
                        session = frame["session"]
                    if frame["type"] == "token":
                        pieces.append(frame["text"])
                        if len(pieces) == 5:
                            d.proc.send_signal(signal.SIGTERM)
                    elif frame["type"] == "done":
                        assert frame["reason"] == "cancelled", frame
            return "".join(pieces)

        streamed = run(sigterm_mid_answer())
        assert d.stop() == 0, d.log()

        d = start_daemon(tmp_path, *args)
        turns = json.loads(d.get(f"/api/sessions/{session}")[1])["turns"]
        assert d.stop() == 0, d.log()
    finally:
        d.stop(signal.SIGKILL)
    *before, question, cut = [(t["role"], t["content"], t["status"]) for t in turns]
    assert before == []
    assert question == ("user", STORY, "complete")
    assert cut[0] == "assistant" and cut[2] == "interrupted"
    assert cut[1].startswith(streamed) and len(streamed) > 0, (cut, streamed)


@pytest.fixture(scope="module")
def small_window(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = start_daemon(tmp_path_factory.mktemp("small"), "--model", str(test_model), "--n-ctx", "512",
                     "--max-tokens", "64", "--temperature", "0", "--system-prompt", SYSTEM_PROMPT,
                     "--max-question-chars", "100000")  # Past the window, not past the page's limit.
    yield d
    assert d.stop() == 0, d.log()


def test_question_too_long_for_the_window_is_not_stored(small_window: Daemon) -> None:
    d = small_window
    too_long = " ".join(["lighthouse"] * 2000)

    async def scenario() -> tuple[Answer, Answer, Answer, Answer]:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            alone = await ask(ws, too_long)
            first = await ask(ws, "What is a lighthouse?")
            follow_up = await ask(ws, too_long, session=first.session)
            after = await ask(ws, "Who works there?", session=first.session)
            return alone, first, follow_up, after

    alone, first, follow_up, after = run(scenario())
    for answer in (alone, follow_up):
        assert answer.error and answer.error["code"] == "prompt_too_long", answer
        assert answer.tokens == [] and answer.done is None
    listed = {s["id"]: s["turn_count"] for s in json.loads(d.get("/api/sessions")[1])["sessions"]}
    assert alone.session not in listed
    status, body = d.get(f"/api/sessions/{alone.session}")
    assert status == 404 or json.loads(body)["turns"] == []
    # In a going conversation the refused question is taken back and the conversation goes on.
    assert first.done and after.done and after.session == first.session
    assert listed[first.session] == 4
    turns = json.loads(d.get(f"/api/sessions/{first.session}")[1])["turns"]
    assert [(t["role"], t["content"]) for t in turns] == [
        ("user", "What is a lighthouse?"), ("assistant", first.text),
        ("user", "Who works there?"), ("assistant", after.text)]


def test_trimming_keeps_the_system_prompt_and_the_newest_turns(small_window: Daemon, test_model: Path) -> None:
    from daemon.engine import CHATML_TEMPLATE
    from daemon.llama_adapter import CountingLlama, make_renderer
    from daemon.messages import ChatMessage

    vocab = CountingLlama(str(test_model), vocab_only=True, verbose=False)  # The same tokenizer, no weights.
    render = make_renderer(vocab, CHATML_TEMPLATE)
    limit = 512 - 64

    def prompt_tokens(kept: Sequence[tuple[str, str]], question: str) -> int:
        messages = [ChatMessage("system", SYSTEM_PROMPT)]
        for asked, answered in kept:
            messages += [ChatMessage("user", asked), ChatMessage("assistant", answered)]
        text = render([*messages, ChatMessage("user", question)])
        return len(vocab.tokenize_prompt(text))

    def expected(history: Sequence[tuple[str, str]], question: str) -> tuple[int, int]:
        """Prompt size and dropped exchanges when the newest exchanges that fit are kept, with the system prompt."""
        for keep in range(len(history), -1, -1):
            if (n := prompt_tokens(history[len(history) - keep:], question)) <= limit:
                return n, len(history) - keep
        raise AssertionError("even the question alone does not fit")

    questions = [f"Tell me about the town, part {i}. {FILLER}" for i in range(1, 7)]
    history: list[tuple[str, str]] = []
    session: str | None = None
    dropped = []

    async def scenario() -> None:
        nonlocal session
        async with aiohttp.ClientSession() as http, http.ws_connect(small_window.url + "/ws") as ws:
            for question in questions:
                answer = await ask(ws, question, session=session)
                assert answer.done and not answer.error, answer
                session = answer.session
                n, cut = expected(history, question)
                assert answer.done["usage"]["prompt_tokens"] == n, (len(history), answer.done)
                assert n <= limit
                dropped.append(cut)
                history.append((question, answer.text))

    run(scenario())
    assert dropped[0] == 0 and dropped[-1] >= 3, f"the window filled and old turns were dropped: {dropped}"


def test_switching_sessions_reuses_their_saved_state(test_model: Path,
                                                     daemon_factory: Callable[..., Daemon]) -> None:
    opening_a = f"Tell me about the harbour. {FILLER * 4}"
    opening_b = f"Tell me about the library. {FILLER * 4}"
    follow_ups = ["Tell me more.", "Why is that?", "What else?"]

    def alternate(cache: int) -> list[dict[str, Any]]:
        d = daemon_factory("--model", str(test_model), "--max-tokens", "32", "--temperature", "0",
                           "--context-cache", str(cache))

        async def both() -> list[dict[str, Any]]:
            # One connection (one visit): a visit's screen may switch between its own conversations.
            async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
                a, b = await ask(ws, opening_a), await ask(ws, opening_b)
                plan = [(s, q) for q in follow_ups for s in (a.session, b.session)][:3]  # A, B, A
                answers = [await ask(ws, q, session=s) for s, q in plan]
            assert all(x.done and not x.error for x in answers), answers
            return [x.done for x in answers if x.done]

        done = run(both())
        assert d.stop() == 0, d.log()
        return done

    cached, uncached = alternate(4), alternate(0)
    for frame in cached:
        # Only the new question and the template around it are read; the history comes from the saved state.
        assert frame["usage"]["prompt_tokens"] > 200
        assert frame["timings"]["prompt_eval_tokens"] < 40, frame
    for frame in uncached:
        # Without the cache the whole conversation after the shared system prompt is read again.
        assert frame["usage"]["prompt_tokens"] > 200
        assert frame["timings"]["prompt_eval_tokens"] > frame["usage"]["prompt_tokens"] - 60, frame
