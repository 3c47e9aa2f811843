"""The session history API (/api/sessions) over real sockets, with conversations made through /ws."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import ScriptedEngine, Served, request_json, serve
from tests.test_ws_protocol import LONG, Client, connect, run, text_of

SUMMARY_KEYS = {"id", "title", "created_at", "updated_at", "turn_count"}


async def ask(client: Client, text: str, session: str | None = None) -> str:
    frames = await client.chat(text, session)
    assert frames[-1]["type"] == "done", frames
    session_id: str = frames[0]["session"]
    return session_id


async def sessions(served: Served, **params: str) -> list[dict[str, Any]]:
    status, body = await request_json(served, "GET", "/api/sessions", params=params)
    assert status == 200, body
    assert all(set(s) == SUMMARY_KEYS for s in body["sessions"]), body
    listing: list[dict[str, Any]] = body["sessions"]
    return listing


def utc(stamp: str) -> float:
    """An API timestamp: ISO 8601 in UTC, written with a Z."""
    assert isinstance(stamp, str) and stamp.endswith("Z"), stamp
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() is not None and parsed.utcoffset() == UTC.utcoffset(None), stamp
    return parsed.timestamp()


def assert_error(status: int, body: Any, expected_status: int, code: str | None = None) -> None:
    assert status == expected_status, (status, body)
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, body
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and isinstance(error["code"], str)
    if code is not None:
        assert error["code"] == code, body


# ---- listing ----

def test_list_is_most_recently_used_first_with_titles_times_and_counts() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            started = time.time()
            a = await ask(client, "First question")
            b = await ask(client, "Second question")
            c = await ask(client, "Third question")
            await ask(client, "A follow-up", a)
            listing = await sessions(served)
        assert [s["id"] for s in listing] == [a, c, b]
        assert [s["title"] for s in listing] == ["First question", "Third question", "Second question"]
        assert [s["turn_count"] for s in listing] == [4, 2, 2]
        for s in listing:
            created, updated = utc(s["created_at"]), utc(s["updated_at"])
            assert started - 1 <= created <= updated <= time.time() + 1, s
        assert utc(listing[0]["updated_at"]) > utc(listing[0]["created_at"])
        assert utc(listing[0]["updated_at"]) >= utc(listing[1]["updated_at"]) >= utc(listing[2]["updated_at"])

    run(test)


def test_limit_and_offset_page_through_the_list() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            made = [await ask(client, f"Question {i}") for i in range(5)]
            everything = [s["id"] for s in await sessions(served)]
            assert everything == made[::-1]
            pages = [[s["id"] for s in await sessions(served, limit="2", offset=str(o))] for o in (0, 2, 4, 6)]
            assert pages == [everything[0:2], everything[2:4], everything[4:], []]
            assert [s["id"] for s in await sessions(served, offset="3")] == everything[3:]
            assert await sessions(served, limit="0") == []

    run(test)


BAD_PAGING = [("limit", "-1"), ("limit", "abc"), ("limit", "100000"), ("limit", ""), ("limit", "1.5"),
              ("limit", "²"), ("limit", "9" * 5000), ("offset", "-3"), ("offset", "x")]


def test_bad_paging_parameters_are_400_with_an_openai_style_error() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine()) as served:
            for name, value in BAD_PAGING:
                status, body = await request_json(served, "GET", "/api/sessions", params={name: value})
                assert_error(status, body, 400)
                assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == name

    run(test)


# ---- one session ----

def test_get_returns_every_turn_in_order() -> None:
    async def test() -> None:
        engine = ScriptedEngine(LONG, delay=0.01)
        async with serve(engine) as served, connect(served) as client:
            await client.send(type="chat", text="Tell me everything")
            session = (await client.recv())["session"]
            first = await client.recv()
            await client.send(type="cancel")
            partial = text_of([first, *await client.until_end()])
            engine.pieces, engine.delay = ["Fine."], 0.0
            await ask(client, "Briefly, then", session)
            status, body = await request_json(served, "GET", f"/api/sessions/{session}")
        assert status == 200, body
        assert set(body) == SUMMARY_KEYS | {"turns"}
        assert body["id"] == session and body["title"] == "Tell me everything" and body["turn_count"] == 4
        assert [set(t) for t in body["turns"]] == [{"seq", "role", "content", "status", "created_at"}] * 4
        assert [(t["seq"], t["role"], t["content"], t["status"]) for t in body["turns"]] == [
            (1, "user", "Tell me everything", "complete"), (2, "assistant", partial, "interrupted"),
            (3, "user", "Briefly, then", "complete"), (4, "assistant", "Fine.", "complete")]
        times = [utc(t["created_at"]) for t in body["turns"]]
        assert times == sorted(times) and utc(body["created_at"]) <= times[0] <= times[-1] <= utc(body["updated_at"])

    run(test)


# ---- renaming ----

def test_patch_renames_with_whitespace_folded_and_the_title_sticks() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            session = await ask(client, "Where is the exit?")
            path = f"/api/sessions/{session}"
            status, body = await request_json(served, "PATCH", path, json={"title": "  Lost\n and \t found  "})
            assert status == 200 and body["title"] == "Lost and found" and body["id"] == session
            assert set(body) == SUMMARY_KEYS and body["turn_count"] == 2
            await ask(client, "Another question", session)
            assert (await sessions(served))[0]["title"] == "Lost and found"
            assert (await request_json(served, "GET", path))[1]["title"] == "Lost and found"
            status, body = await request_json(served, "PATCH", path, json={"title": "x" * 200})
            assert status == 200 and body["title"] == "x" * 200

    run(test)


JSON = {"Content-Type": "application/json"}
# (what is wrong, raw body, headers, expected error code, expected param): every one is a 400.
BAD_PATCHES: list[tuple[str, bytes, dict[str, str], str, str | None]] = [
    *((f"title {v!r}"[:40], json.dumps({"title": v}).encode(), JSON, "invalid_request", "title")
      for v in ("", " \n\t ", "x" * 201, 5, None, ["a"], {"text": "a"}, True)),
    ("no title", b"{}", JSON, "invalid_request", "title"),
    ("an unknown field", b'{"title": "New", "pinned": true}', JSON, "invalid_request", "pinned"),
    ("a misspelt title", b'{"titel": "New"}', JSON, "invalid_request", "titel"),
    *((f"a JSON {kind}", raw, JSON, "invalid_request", None)
      for kind, raw in (("array", b'["title"]'), ("string", b'"title"'), ("null", b"null"), ("number", b"1"))),
    *((f"not JSON {raw!r}", raw, JSON, "bad_json", None)
      for raw in (b"{not json", b"", b"\xff", b"[" * 3000, b'{"title": "\\ud800"}', b'{"title": NaN}')),
    ("text/plain", b'{"title": "New"}', {"Content-Type": "text/plain"}, "unsupported_content_type", None),
]


@pytest.mark.parametrize(("body", "headers", "code", "param"), [row[1:] for row in BAD_PATCHES],
                         ids=[row[0] for row in BAD_PATCHES])
def test_patch_refuses_a_bad_body_and_keeps_the_old_title(body: bytes, headers: dict[str, str], code: str,
                                                          param: str | None) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            session = await ask(client, "Original")
            status, error = await request_json(served, "PATCH", f"/api/sessions/{session}", data=body,
                                               headers=headers)
            assert_error(status, error, 400, code)
            assert (error["error"]["type"], error["error"]["param"]) == ("invalid_request_error", param)
            assert (await sessions(served))[0]["title"] == "Original"

    run(test)


def test_chinese_titles_round_trip() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["好的"])) as served, connect(served) as client:
            session = await ask(client, "洗手间在哪里？")
            assert (await sessions(served))[0]["title"] == "洗手间在哪里？"
            status, body = await request_json(served, "PATCH", f"/api/sessions/{session}",
                                              json={"title": "失物招领 🧳"})
            assert status == 200 and body["title"] == "失物招领 🧳"
            status, body = await request_json(served, "GET", f"/api/sessions/{session}")
            assert body["title"] == "失物招领 🧳" and body["turns"][0]["content"] == "洗手间在哪里？"
            assert body["turns"][1]["content"] == "好的"
            assert (await sessions(served))[0]["title"] == "失物招领 🧳"

    run(test)


# ---- deleting ----

def test_delete_removes_the_session_and_its_turns(tmp_path: Path) -> None:
    async def test() -> None:
        db = tmp_path / "history.db"
        async with serve(ScriptedEngine(["ok"]), history_path=str(db)) as served, connect(served) as client:
            keep = await ask(client, "Keep me")
            gone = await ask(client, "Delete me")
            path = f"/api/sessions/{gone}"
            status, body = await request_json(served, "DELETE", path)
            assert status == 204 and body is None
            assert_error(*await request_json(served, "DELETE", path), 404, "unknown_session")
            assert_error(*await request_json(served, "GET", path), 404, "unknown_session")
            assert [s["id"] for s in await sessions(served)] == [keep]
            frames = await client.chat("Are you there?", gone)
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "unknown_session"
        with sqlite3.connect(db) as conn:
            counts = dict(conn.execute("SELECT session_id, COUNT(*) FROM turns GROUP BY session_id").fetchall())
        assert counts == {keep: 2}

    run(test)


def test_deleting_a_session_while_it_is_answering() -> None:
    async def test() -> None:
        engine = ScriptedEngine([f"w{i} " for i in range(30)], delay=0.01)
        async with serve(engine) as served, connect(served) as client:
            await client.send(type="chat", text="A long answer")
            session = (await client.recv())["session"]
            assert (await client.recv())["type"] == "token"
            status, _ = await request_json(served, "DELETE", f"/api/sessions/{session}")
            assert status == 204
            end = (await client.until_end())[-1]
            assert end["type"] == "done" and end["reason"] == "stop", "the visitor still gets the answer"
            assert await sessions(served) == []
            assert (await request_json(served, "GET", f"/api/sessions/{session}"))[0] == 404
            engine.pieces, engine.delay = ["still here"], 0.0
            assert text_of(await client.chat("Next visitor")) == "still here"

    run(test)


def test_unknown_session_is_404_for_get_patch_and_delete() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine()) as served:
            for method, kwargs in (("GET", {}), ("PATCH", {"json": {"title": "New"}}), ("DELETE", {})):
                status, body = await request_json(served, method, "/api/sessions/no-such-session", **kwargs)
                assert_error(status, body, 404, "unknown_session")
                assert body["error"]["type"] == "not_found_error"
            assert await sessions(served) == []

    run(test)


ODD_IDS = ["x" * 4000, "洗手间", "..%2F..%2Fetc%2Fpasswd", "a%00b", "%ED%A0%80", "%FF", "' OR 1=1 --",
           "%F0%9F%A7%B3"]


@pytest.mark.parametrize("session", ODD_IDS, ids=[i[:20] for i in ODD_IDS])
def test_odd_session_ids_are_404_for_every_method(session: str) -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            kept = await ask(client, "Keep me")
            path = "/api/sessions/" + session
            for method, kwargs in (("GET", {}), ("PATCH", {"json": {"title": "New"}}), ("DELETE", {})):
                status, body = await request_json(served, method, path, **kwargs)
                assert_error(status, body, 404, "unknown_session")
                assert len(body["error"]["message"]) < 200, "the error echoes an absurd id in full"
            assert [(s["id"], s["title"]) for s in await sessions(served)] == [(kept, "Keep me")]

    run(test)


def test_an_empty_history_lists_nothing() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine()) as served:
            assert await asyncio.wait_for(sessions(served), 5) == []

    run(test)
