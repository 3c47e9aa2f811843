"""Running the daemon: listen first, then load the model, serve until SIGTERM/SIGINT, then shut down."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from daemon.app import create_app
from daemon.appkeys import LISTENING
from daemon.engine import LlamaEngine, ModelLoadError
from daemon.history import HistoryError
from daemon.models.pull import resolve_model_path
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_MODEL, EXIT_LISTEN, EXIT_HISTORY = 0, 1, 2, 3


async def serve(settings: Settings) -> int:
    engine = LlamaEngine(settings, resolve_model_path(settings))
    app = create_app(settings, engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    try:
        await runner.setup()
    except HistoryError as exc:
        _LOGGER.error("%s", exc)
        return EXIT_HISTORY
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    except OSError as exc:
        _LOGGER.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await runner.cleanup()
        return EXIT_LISTEN
    app[LISTENING].set()
    _LOGGER.info("listening on http://%s:%s", settings.host, settings.port)
    try:
        return await _run_until_stopped(settings, engine)
    finally:
        await runner.cleanup()
        await engine.close()
        _LOGGER.info("stopped")


async def _run_until_stopped(settings: Settings, engine: LlamaEngine) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if settings.fault_load_delay:
            await asyncio.sleep(settings.fault_load_delay)
        _LOGGER.info("loading model %s", engine.model_path)
        await engine.load()
    except ModelLoadError as exc:
        _LOGGER.error("%s", exc)
        return EXIT_MODEL
    _LOGGER.info("ready: model %s", engine.model_id)
    await stop.wait()
    _LOGGER.info("shutting down")
    return EXIT_OK
