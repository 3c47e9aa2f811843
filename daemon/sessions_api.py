"""The session history API: list, read, rename and delete stored conversations.

Who sees what: a caller with the API token or an operator token sees the whole archive; a kiosk screen (a
loopback caller without either) sends its visit's token and sees only the sessions created in that visit, any
other id being unknown to it (so a guessed or old id tells nothing).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from daemon.appkeys import HISTORY, OPERATOR, VISITS
from daemon.history import HistoryStore, NoSuchSession, SessionSummary, Turn
from daemon.openai_compat.routes import read_json
from daemon.openai_compat.schema import ApiError
from daemon.security import has_api_token
from daemon.visits.operator_api import OPERATOR_HEADER

VISIT_HEADER = "X-Kioskd-Visit"

MAX_TITLE = 200
MAX_PAGE = 500


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/api/sessions", list_sessions)
    router.add_get("/api/sessions/{id}", get_session)
    router.add_patch("/api/sessions/{id}", rename_session)
    router.add_delete("/api/sessions/{id}", delete_session)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _summary(summary: SessionSummary) -> dict[str, Any]:
    data = asdict(summary)
    data["created_at"], data["updated_at"] = _time(summary.created_at), _time(summary.updated_at)
    return data


def _turn(turn: Turn) -> dict[str, Any]:
    return {**asdict(turn), "created_at": _time(turn.created_at)}


def _int_query(request: web.Request, name: str, default: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # isdigit() alone lets through "²" and digit strings too long for int(), which then fail with a 500.
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else -1
    if not 0 <= value <= hi:
        raise ApiError(400, f"'{name}' must be a whole number from 0 to {hi}", param=name)
    return value


def _unknown(session: str) -> ApiError:
    # Ids are short; an absurd one is cut so the error body stays small.
    shown = session if len(session) <= 80 else session[:80] + "…"
    return ApiError(404, f"no session {shown!r}", code="unknown_session", kind="not_found_error")


def _scope(request: web.Request) -> frozenset[str] | None:
    """None: the whole archive; else the sessions of the caller's visit. ApiError 403 without a valid visit."""
    if has_api_token(request) or request.app[OPERATOR].valid(request.headers.get(OPERATOR_HEADER)):
        return None
    sessions = request.app[VISITS].sessions(request.headers.get(VISIT_HEADER))
    if sessions is None:
        raise ApiError(403, f"send this screen's visit token ({VISIT_HEADER}, from the hello frame): the history "
                       "of other visits is for the operator only", code="visit_required", kind="permission_error")
    return sessions


def _reachable(request: web.Request) -> str:
    """The session id of the path, if this caller may reach it; ApiError 404 (as for no such session) if not."""
    session = request.match_info["id"]
    scope = _scope(request)
    if scope is not None and session not in scope:
        raise _unknown(session)
    return session


def _title(body: object) -> str:
    """The new title from a PATCH body, white space folded; the body may hold nothing else."""
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    # Refused rather than ignored: a misspelt "title" should not look like a rename that did nothing.
    for key in body:
        if key != "title":
            raise ApiError(400, f"unknown field {key!r:.40}; only 'title' can be changed", param=key)
    raw = body.get("title")
    # The limit applies to the title as sent, so docs/openapi.yaml can state it as a plain maxLength.
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_TITLE:
        raise ApiError(400, f"'title' must be a string of 1 to {MAX_TITLE} characters, not all white space",
                       param="title")
    return " ".join(raw.split())


async def list_sessions(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100, MAX_PAGE)
    offset = _int_query(request, "offset", 0, 10**9)
    scope = _scope(request)
    sessions = await request.app[HISTORY].run(lambda store: store.sessions(limit, offset, scope))
    return web.json_response({"sessions": [_summary(s) for s in sessions]})


async def get_session(request: web.Request) -> web.Response:
    session = _reachable(request)
    try:
        summary, turns = await request.app[HISTORY].run(
            lambda store: (store.summary(session), store.turns(session)))
    except NoSuchSession:
        raise _unknown(session) from None
    return web.json_response({**_summary(summary), "turns": [_turn(t) for t in turns]})


async def rename_session(request: web.Request) -> web.Response:
    session = _reachable(request)
    title = _title(await read_json(request))

    def rename(store: HistoryStore) -> SessionSummary:
        store.rename(session, title)
        return store.summary(session)

    try:
        summary = await request.app[HISTORY].run(rename)
    except NoSuchSession:
        raise _unknown(session) from None
    return web.json_response(_summary(summary))


async def delete_session(request: web.Request) -> web.Response:
    session = _reachable(request)
    try:
        await request.app[HISTORY].run(lambda store: store.delete(session))
    except NoSuchSession:
        raise _unknown(session) from None
    await request.app[VISITS].forget([session])
    return web.Response(status=204)
