"""Running the daemon: listen first, then load the model, serve until SIGTERM/SIGINT, then shut down.

systemd hears about every step (daemon/notify.py): STATUS lines while loading, READY=1 only once the model is
loaded and the socket listens, WATCHDOG=1 while the engine makes progress, RELOADING=1 on SIGHUP and
STOPPING=1 when the drain starts.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from daemon.app import create_app
from daemon.appkeys import LISTENING
from daemon.engine import LlamaEngine, ModelLoadError
from daemon.history import HistoryError
from daemon.models.pull import resolve_model_path
from daemon.notify import Notifier
from daemon.settings import Settings, SettingsError, describe

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_MODEL, EXIT_LISTEN, EXIT_HISTORY = 0, 1, 2, 3
SettingsLoader = Callable[[], Settings]


async def serve(settings: Settings, reload_settings: SettingsLoader | None = None) -> int:
    notifier = Notifier()
    engine = LlamaEngine(settings, resolve_model_path(settings))
    app = create_app(settings, engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    try:
        await runner.setup()
    except HistoryError as exc:
        _LOGGER.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return EXIT_HISTORY
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
    except OSError as exc:
        _LOGGER.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        notifier.status(f"failed: cannot listen on {settings.host}:{settings.port}: {exc}")
        await runner.cleanup()
        return EXIT_LISTEN
    app[LISTENING].set()
    _LOGGER.info("listening on http://%s:%s", settings.host, settings.port)
    try:
        return await _run_until_stopped(settings, engine, notifier, reload_settings)
    finally:
        await runner.cleanup()
        await engine.close()
        _LOGGER.info("stopped")


async def _run_until_stopped(settings: Settings, engine: LlamaEngine, notifier: Notifier,
                             reload_settings: SettingsLoader | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, settings, notifier, reload_settings)
    try:
        if settings.fault_load_delay:
            await asyncio.sleep(settings.fault_load_delay)
        _LOGGER.info("loading model %s", engine.model_path)
        notifier.status(f"loading model {engine.model_path.name}")
        await engine.load()
    except ModelLoadError as exc:
        _LOGGER.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return EXIT_MODEL
    _LOGGER.info("ready: model %s", engine.model_id)
    notifier.ready(f"ready: model {engine.model_id} on http://{settings.host}:{settings.port}")
    watchdog = asyncio.create_task(_watchdog(engine, notifier, settings.watchdog_stall), name="watchdog")
    try:
        await stop.wait()
    finally:
        watchdog.cancel()
        await asyncio.gather(watchdog, return_exceptions=True)
    _LOGGER.info("shutting down")
    notifier.stopping("stopping: the answer being written is stored as interrupted")
    return EXIT_OK


async def _watchdog(engine: LlamaEngine, notifier: Notifier, stall_limit: float) -> None:
    """Ping at half the watchdog interval from the event loop (so a blocked loop stops the pings too), but only
    while the engine makes progress: a model thread stuck past `stall_limit` lets systemd restart us."""
    interval = notifier.watchdog_interval
    if interval is None or not notifier.enabled:
        return
    stuck = False
    while True:
        stalled = engine.stalled_for()
        if stalled <= stall_limit:
            notifier.watchdog()
            stuck = False
        elif not stuck:
            stuck = True
            _LOGGER.error("the answer being written made no progress for %.0f s; stopping the watchdog pings so "
                          "systemd restarts the daemon", stalled)
            notifier.status(f"stuck: no progress for {stalled:.0f} s")
        await asyncio.sleep(interval / 2)


def _reload(settings: Settings, notifier: Notifier, reload_settings: SettingsLoader | None) -> None:
    """SIGHUP: read the settings again and say what changed. Settings are applied at start-up, so changes are
    reported (and take effect at the next restart) rather than applied to a running model."""
    notifier.reloading()
    if reload_settings is None:
        notifier.ready("reloaded: nothing to reload")
        return
    try:
        fresh = reload_settings()
    except SettingsError as exc:
        _LOGGER.error("reload: the new settings are invalid, keeping the running ones: %s", exc)
        notifier.ready(f"running; reload failed: {exc}")
        return
    old, new = describe(settings), describe(fresh)
    changed = sorted(name for name in new if new[name] != old[name])
    if changed:
        _LOGGER.warning("reload: changed settings take effect at the next restart: %s", ", ".join(changed))
        notifier.ready(f"running; restart to apply: {', '.join(changed)}")
    else:
        _LOGGER.info("reload: settings unchanged")
        notifier.ready("running; settings unchanged")
