"""history_mode over real sockets and a real SQLite file: `visit` leaves no byte of a visit's text in the
database files once the visit ends, `off` writes nothing, `keep` keeps."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import Daemon
from tests.fakes import ScriptedEngine, request_json, serve
from tests.test_ws_protocol import Client, connect, run
from tests.wsclient import ask

QUESTION = "My prescription number is QX-7731-ZEBRA, where is the pharmacy?"
ANSWER = ["The pharmacy ", "for QX-7731-ZEBRA ", "is on floor 2, 处方药柜台。"]
MARKERS = (b"QX-7731-ZEBRA", "处方药柜台".encode(), b"prescription number")


def files_of(db: Path) -> Iterator[Path]:
    """The database and its write-ahead log and index, whichever exist."""
    yield from (p for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm")) if p.exists())


def traces(db: Path) -> list[str]:
    """Where the visit's text can be found in the bytes of the database files."""
    return [f"{path.name}: {marker.decode()}" for path in files_of(db) for marker in MARKERS
            if marker in path.read_bytes()]


def written(folder: Path) -> list[Path]:
    return list(folder.iterdir())


async def converse(client: Client) -> str:
    frames = await client.chat(QUESTION)
    assert frames[-1]["type"] == "done", frames
    session: str = frames[0]["session"]
    return session


def test_visit_mode_erases_a_visit_from_the_file_at_new_visit(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        async with serve(ScriptedEngine(ANSWER), history_mode="visit", history_path=str(db)) as served, \
                connect(served) as client:
            session = await converse(client)
            assert traces(db), "the visit's text is stored while the visit goes on (else this test proves nothing)"
            assert (await request_json(served, "GET", f"/api/sessions/{session}"))[0] == 200
            await client.send(type="new_visit")
            assert (await client.recv())["type"] == "visit"
            assert traces(db) == []
            assert (await request_json(served, "GET", f"/api/sessions/{session}"))[0] == 404
            assert (await client.chat("Next visitor"))[-1]["type"] == "done"  # the kiosk goes on
    run(test)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone() == (0,)  # the screen closing ended it


def test_visit_mode_erases_a_visit_from_the_file_at_the_idle_reset(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        engine = ScriptedEngine(ANSWER)
        async with serve(engine, history_mode="visit", history_path=str(db),
                         idle_reset=1.0) as served, connect(served) as client, connect(served) as other:
            await converse(client)
            await asyncio.sleep(0.5)
            engine.pieces = ["Something else."]
            kept = (await other.chat("Another screen's visit"))[0]["session"]  # idle for less time
            assert traces(db)
            reset = await client.recv()
            assert reset["type"] == "reset" and reset["visit"] != client.hello["visit"]
            assert traces(db) == []
            # Only the visit that ended is gone.
            _, body = await request_json(served, "GET", "/api/sessions")
            assert [s["id"] for s in body["sessions"]] == [kept]

    run(test)


def test_visit_mode_deletes_what_a_stopped_daemon_left_at_start(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        async with serve(ScriptedEngine(ANSWER), history_mode="keep", history_path=str(db)) as served, \
                connect(served) as client:
            await converse(client)
        assert traces(db)
        async with serve(ScriptedEngine(ANSWER), history_mode="visit", history_path=str(db)) as served:
            assert (await request_json(served, "GET", "/api/sessions"))[1] == {"sessions": []}
            assert traces(db) == []

    run(test)


def test_off_mode_writes_nothing_and_keeps_the_visit_in_memory(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        async with serve(ScriptedEngine(ANSWER), history_mode="off", history_path=str(db)) as served, \
                connect(served) as client:
            assert client.hello["history_mode"] == "off"
            session = await converse(client)
            follow = await client.chat("And its opening hours?", session)  # the conversation goes on
            assert follow[0] == {"type": "session", "session": session} and follow[-1]["type"] == "done"
            headers = {"X-Kioskd-Visit": client.hello["visit"]}
            status, body = await request_json(served, "GET", f"/api/sessions/{session}", auth=False,
                                              headers=headers)
            assert status == 200 and [t["content"] for t in body["turns"]][::2] == [QUESTION,
                                                                                   "And its opening hours?"]
            assert written(tmp_path) == [], "nothing is written to disk"
            await client.send(type="new_visit")
            assert (await client.recv())["type"] == "visit"
            assert (await request_json(served, "GET", f"/api/sessions/{session}"))[0] == 404
        assert written(tmp_path) == []

    run(test)


def test_keep_mode_keeps_an_ended_visit_for_the_operator(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        async with serve(ScriptedEngine(ANSWER), history_mode="keep", history_path=str(db)) as served:
            async with connect(served) as client:
                session = await converse(client)
                await client.send(type="new_visit")
                assert (await client.recv())["type"] == "visit"
            status, body = await request_json(served, "GET", f"/api/sessions/{session}")
            assert status == 200 and body["turns"][0]["content"] == QUESTION
        assert traces(db)

    run(test)


def test_an_api_delete_erases_the_text_from_the_file_too(tmp_path: Path) -> None:
    db = tmp_path / "history.db"

    async def test() -> None:
        engine = ScriptedEngine(["Something else."])
        async with serve(engine, history_mode="keep", history_path=str(db)) as served, connect(served) as client:
            kept = (await client.chat("Unrelated question"))[0]["session"]
            engine.pieces = ANSWER
            session = await converse(client)
            assert traces(db)
            assert (await request_json(served, "DELETE", f"/api/sessions/{session}"))[0] == 204
            assert traces(db) == []
            assert (await request_json(served, "GET", f"/api/sessions/{kept}"))[0] == 200

    run(test)


def test_the_real_daemon_in_visit_mode_leaves_no_trace_after_the_idle_reset(
        test_model: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--max-tokens", "24", "--temperature", "0",
                       "--history-mode", "visit", "--idle-reset", "1")
    db = Path(d.args[d.args.index("--state-dir") + 1]) / "history.db"

    async def visit() -> tuple[str, list[str], dict[str, Any]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            hello = json.loads((await ws.receive()).data)
            assert hello["history_mode"] == "visit"
            answer = await ask(ws, QUESTION)
            assert answer.done and len(answer.text) >= 8, answer
            during = traces(db)
            reset = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
            assert reset["type"] == "reset" and reset["visit"] != hello["visit"]
            return answer.text, during, reset

    text, during, _ = asyncio.run(asyncio.wait_for(visit(), 60))
    assert during, "the question is in the file while the visit goes on"
    assert traces(db) == []
    assert all(text.encode() not in path.read_bytes() for path in files_of(db))
    assert d.stop() == 0, d.log()
