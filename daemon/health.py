"""GET /healthz (the event loop answers) and GET /readyz (the model is loaded and the socket listens)."""

from __future__ import annotations

from aiohttp import web

from daemon import __version__
from daemon.appkeys import ENGINE, LISTENING, VOICE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    if engine.ready and request.app[LISTENING].is_set():
        gate = engine.gate
        voice = request.app[VOICE].status
        return web.json_response({"status": "ready", "version": __version__, "model": engine.model_id,
                                  "busy": gate.busy, "waiting": gate.waiting,
                                  "voice": {"available": voice.available, "detail": voice.detail}})
    return web.json_response({"status": "loading", "version": __version__}, status=503)
