"""Visits over real sockets: a kiosk screen sees only its own visit's conversations; the API token and an
operator unlock see the whole archive (history_mode keep here, so that what is refused is still there)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.fakes import API_TOKEN, ScriptedEngine, Served, request_json, serve
from tests.test_ws_protocol import Client, connect, run

VISIT = "X-Kioskd-Visit"


async def as_visit(served: Served, method: str, path: str, visit: str | None, **kwargs: Any) -> tuple[int, Any]:
    headers = {} if visit is None else {VISIT: visit}
    return await request_json(served, method, path, auth=False, headers=headers, **kwargs)


async def ask(client: Client, text: str) -> str:
    frames = await client.chat(text)
    assert frames[-1]["type"] == "done", frames
    session: str = frames[0]["session"]
    return session


def ids(body: Any) -> list[str]:
    return [s["id"] for s in body["sessions"]]


def refused(status: int, body: Any, expected: int, code: str) -> bool:
    return status == expected and body["error"]["code"] == code and set(body["error"]) == {
        "message", "type", "param", "code"}


async def reaches(served: Served, session: str, visit: str | None) -> list[tuple[int, str | None]]:
    """(status, error code) of GET, PATCH and DELETE of `session` with this visit token."""
    path = f"/api/sessions/{session}"
    out = []
    for method, kwargs in (("GET", {}), ("PATCH", {"json": {"title": "Mine now"}}), ("DELETE", {})):
        status, body = await as_visit(served, method, path, visit, **kwargs)
        out.append((status, body["error"]["code"] if body and "error" in body else None))
    return out


def test_hello_hands_out_a_visit_token_and_the_public_terminal_settings() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(), venue_name="City Library", welcome_en="Hello!", welcome_zh="您好！",
                         onscreen_keyboard="always", history_mode="visit", wake_phrase="hello kiosk") as served, \
                connect(served) as a, connect(served) as b:
            assert a.hello["visit"] != b.hello["visit"] and len(a.hello["visit"]) >= 24
            assert {k: a.hello[k] for k in ("history_mode", "operator_unlock", "onscreen_keyboard",
                                             "venue_name", "welcome_en", "welcome_zh", "wake_phrase")} == {
                "history_mode": "visit", "operator_unlock": False, "onscreen_keyboard": "always",
                "venue_name": "City Library", "welcome_en": "Hello!", "welcome_zh": "您好！",
                "wake_phrase": "hello kiosk"}
        async with serve(ScriptedEngine()) as served, connect(served) as c:
            assert (c.hello["onscreen_keyboard"], c.hello["venue_name"]) == ("auto", "")
            assert c.hello["welcome_en"] == "Ask me anything about this place."

    run(test)


def test_a_visit_sees_only_its_own_sessions_and_another_visit_nothing_of_them() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as a, connect(served) as b:
            mine = [await ask(a, "Where is the pharmacy?"), await ask(a, "And the exit?")]
            theirs = await ask(b, "Opening hours?")
            status, body = await as_visit(served, "GET", "/api/sessions", a.hello["visit"])
            assert status == 200 and ids(body) == mine[::-1]
            status, body = await as_visit(served, "GET", f"/api/sessions/{mine[0]}", a.hello["visit"])
            assert status == 200 and body["turns"][0]["content"] == "Where is the pharmacy?"
            assert ids((await as_visit(served, "GET", "/api/sessions", b.hello["visit"]))[1]) == [theirs]
            # B's token, no token, a made-up token: A's session is unknown, or the caller is refused.
            assert await reaches(served, mine[0], b.hello["visit"]) == [(404, "unknown_session")] * 3
            for visit in (None, "", "not-a-visit", a.hello["visit"][:-1]):
                assert all(r == (403, "visit_required") for r in await reaches(served, mine[0], visit)), visit
                assert refused(*await as_visit(served, "GET", "/api/sessions", visit), 403, "visit_required")
            # The API token sees the whole archive, untouched by all of the above.
            status, body = await request_json(served, "GET", "/api/sessions")
            assert status == 200 and set(ids(body)) == {*mine, theirs}
            assert [s["title"] for s in body["sessions"]] == ["Opening hours?", "And the exit?",
                                                               "Where is the pharmacy?"]
            # The visit may rename and delete its own.
            assert (await as_visit(served, "DELETE", f"/api/sessions/{mine[1]}", a.hello["visit"]))[0] == 204
            assert ids((await request_json(served, "GET", "/api/sessions"))[1]) == [theirs, mine[0]]

    run(test)


def test_a_wrong_api_token_from_the_device_is_no_way_around_the_visit() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as a:
            await ask(a, "Private question")
            status, body = await request_json(served, "GET", "/api/sessions",
                                              headers={"Authorization": f"Bearer {API_TOKEN}x"})
            assert refused(status, body, 403, "visit_required")

    run(test)


def test_new_visit_ends_the_old_token_and_its_sessions_cannot_be_continued() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served, connect(served) as client:
            old = client.hello["visit"]
            session = await ask(client, "Visitor A's question")
            await client.send(type="new_visit")
            frame = await client.recv()
            assert frame["type"] == "visit" and set(frame) == {"type", "visit"} and frame["visit"] != old
            assert refused(*await as_visit(served, "GET", "/api/sessions", old), 403, "visit_required")
            assert await reaches(served, session, old) == [(403, "visit_required")] * 3
            status, body = await as_visit(served, "GET", "/api/sessions", frame["visit"])
            assert status == 200 and body == {"sessions": []}
            assert await reaches(served, session, frame["visit"]) == [(404, "unknown_session")] * 3
            frames = await client.chat("What did A ask?", session)
            assert [(f["type"], f.get("code")) for f in frames] == [("error", "unknown_session")]
            assert (await request_json(served, "GET", f"/api/sessions/{session}"))[0] == 200  # kept (keep)

    run(test)


def test_the_idle_reset_starts_a_new_visit() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"]), idle_reset=0.3) as served, connect(served) as client:
            session = await ask(client, "Hi")
            reset = await client.recv()
            assert reset["type"] == "reset" and reset["session"] == session
            assert reset["visit"] != client.hello["visit"]
            assert refused(*await as_visit(served, "GET", "/api/sessions", client.hello["visit"]), 403,
                           "visit_required")
            assert (await as_visit(served, "GET", "/api/sessions", reset["visit"]))[1] == {"sessions": []}
            fresh = await ask(client, "Next visitor")
            assert ids((await as_visit(served, "GET", "/api/sessions", reset["visit"]))[1]) == [fresh]

    run(test)


def test_a_closed_screen_ends_its_visit() -> None:
    async def test() -> None:
        async with serve(ScriptedEngine(["ok"])) as served:
            async with connect(served) as client:
                visit = client.hello["visit"]
                await ask(client, "Hi")
                assert (await as_visit(served, "GET", "/api/sessions", visit))[0] == 200
            for _ in range(50):  # the visit ends as the server sees the connection close
                if (await as_visit(served, "GET", "/api/sessions", visit))[0] == 403:
                    break
                await asyncio.sleep(0.02)
            assert refused(*await as_visit(served, "GET", "/api/sessions", visit), 403, "visit_required")

    run(test)


def test_new_visit_while_answering_stops_the_answer_first() -> None:
    async def test() -> None:
        engine = ScriptedEngine([f"w{i} " for i in range(200)], delay=0.01)
        async with serve(engine, history_mode="visit") as served, connect(served) as client:
            await client.send(type="chat", text="A long answer")
            assert (await client.recv())["type"] == "session"
            assert (await client.recv())["type"] == "token"
            await client.send(type="new_visit")
            frames = [await client.recv()]
            while frames[-1]["type"] != "visit":
                frames.append(await client.recv())
            assert [f["type"] for f in frames if f["type"] != "token"] == ["done", "visit"]
            assert frames[-2]["reason"] == "cancelled"
            assert (await request_json(served, "GET", "/api/sessions"))[1] == {"sessions": []}

    run(test)
