"""GET /healthz (the event loop answers) and GET /readyz (the model is loaded and the socket listens)."""

from __future__ import annotations

from aiohttp import web

from daemon import __version__
from daemon.appkeys import ENGINE, LISTENING, SETTINGS, VOICE
from daemon.board.report import board_report
from daemon.upstream import engine_state


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    state = engine_state(engine)
    if engine.ready and request.app[LISTENING].is_set():
        gate = engine.gate
        voice = request.app[VOICE].status
        return web.json_response({"status": "ready", "version": __version__, "model": engine.model_id,
                                  "busy": gate.busy, "waiting": gate.waiting, "engine": state.as_dict(),
                                  "voice": {"available": voice.available, "detail": voice.detail},
                                  "board": board_report(request.app[SETTINGS].current)})
    if state.kind == "upstream" and state.serving == "upstream" and request.app[LISTENING].is_set():
        # No local model and the upstream down: the page is served, but no question can be answered.
        return web.json_response({"status": "upstream_unavailable", "version": __version__,
                                  "engine": state.as_dict()}, status=503)
    return web.json_response({"status": "loading", "version": __version__, "engine": state.as_dict()},
                             status=503)
