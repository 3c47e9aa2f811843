"""GET /metrics (Prometheus text) and GET /status (one JSON line of fleet health), and what keeps them current.

Both are guarded like /api (daemon.security): callers on the device, or the API token from other machines.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from daemon import __version__
from daemon.appkeys import ENGINE, LISTENING, METRICS, SETTINGS, SOCKETS, VOICE
from daemon.board.report import board_report
from daemon.generation import ChatEngine
from daemon.metrics.instruments import Metrics, Watched
from daemon.metrics.tally import Day, DayTally, local_today
from daemon.prefix_states import model_sha256
from daemon.settings import Settings
from daemon.upstream import FailoverEngine, engine_state

_LOGGER = logging.getLogger(__name__)

TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
"""The classic text format, which every Prometheus reads (prometheus-client 0.22+ names 1.0.0 by default; our
metric names need none of its UTF-8 escaping, so the text is the same)."""
MODEL_POLL_S = 1.0
"""How often the model is looked at for a change of file (start-up, a reload): its sha256 follows."""


def tally_path(settings: Settings) -> Path:
    return settings.state_dir / "status" / "today.json"


def install(app: web.Application, settings: Settings, engine: ChatEngine) -> None:
    """The metrics object, its routes, and the task that loads the day's tally and follows the model."""
    metrics = Metrics(DayTally(tally_path(settings)))
    metrics.watch(Watched(
        waiting=lambda: engine.gate.waiting, running=lambda: engine.gate.holding,
        websockets=lambda: len(app[SOCKETS]),
        voice_available=lambda: VOICE in app and app[VOICE].status.available,
        model_loaded=lambda: engine.ready))
    if isinstance(engine, FailoverEngine):
        metrics.follow_upstream(lambda: engine.upstream.up)
        engine.on_failover, engine.on_answer = metrics.engine_failover, metrics.engine_answered
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/status", status)
    app.cleanup_ctx.append(_keep_current)


async def metrics_page(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].exposition(), headers={"Content-Type": TEXT_FORMAT})


async def status(request: web.Request) -> web.Response:
    """200 also while loading (ready false): a fleet must see a kiosk that is starting, not a failure."""
    app = request.app
    engine, metrics = app[ENGINE], app[METRICS]
    day = metrics.today.current if metrics.today is not None else Day(local_today().isoformat())
    body: dict[str, Any] = {
        "version": __version__,
        "ready": engine.ready and app[LISTENING].is_set(),
        "model": metrics.model_name or engine.model_id or None,
        "model_sha256": metrics.model_sha256 or None,
        **_voice(app),
        "day": day.day,
        "answers_today": day.answers,
        "ttft_median_s_today": day.median_ttft_s(),
        "last_error": vars(day.last_error) if day.last_error else None,
        "uptime_s": round(metrics.uptime_s, 1),
        "board": board_report(app[SETTINGS].current),
    }
    if (state := engine_state(engine)).kind == "upstream":  # a local kiosk's line stays as the fleet knows it
        body["engine"] = state.as_dict()
    return web.json_response(body)


def _voice(app: web.Application) -> dict[str, str]:
    link = app.get(VOICE)
    if not app[SETTINGS].current.voice:
        return {"voice": "off", "voice_detail": "voice is switched off (setting voice)"}
    if link is None:
        return {"voice": "unavailable", "voice_detail": "starting"}
    state = link.status
    return {"voice": "on" if state.available else "unavailable", "voice_detail": state.detail or ""}


async def _keep_current(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    if metrics.today is not None:
        await metrics.today.load()
    follower = asyncio.create_task(_follow_model(metrics, app[ENGINE], app[SETTINGS].current.state_dir),
                                   name="metrics-model")
    try:
        yield
    finally:
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
        if metrics.today is not None:
            await metrics.today.close()


async def _follow_model(metrics: Metrics, engine: ChatEngine, state_dir: Path) -> None:
    """Fill the model info once the model is loaded, and again when a reload swaps it. Its sha256 comes from the
    pull record or the prefix states' memo (the engine computed it while loading), else it is computed here in a
    thread: never before READY, which a 500 MB file would delay by seconds."""
    known: tuple[str, Path | None] | None = None
    metrics.model_known(engine.model_id, "")
    while True:
        path = getattr(engine, "model_path", None)  # a scripted engine in tests has no file
        current = (engine.model_id, path if isinstance(path, Path) else None)
        if engine.ready and current != known:
            known = current
            name, sha = current[0], ""
            if current[1] is not None:
                try:
                    name = await asyncio.to_thread(_model_file_name, current[1], current[0])
                    sha = await asyncio.to_thread(model_sha256, current[1], state_dir / "prefixes")
                except OSError as exc:
                    _LOGGER.warning("cannot read the model %s for its sha256: %s", current[1], exc)
            metrics.model_known(name, sha)
        await asyncio.sleep(MODEL_POLL_S)


def _model_file_name(path: Path, model_id: str) -> str:
    """The model's own file name where the setting is a link (a fleet's `current.gguf` points into
    releases/<sha256>/<file>): "current" would tell an operator nothing. Else the model id (an alias stays)."""
    if not path.is_symlink():
        return model_id
    return path.resolve().stem
