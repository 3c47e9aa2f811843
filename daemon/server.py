"""Running the daemon: listen first, then load the model, serve until SIGTERM/SIGINT, then shut down.

systemd hears about every step (daemon/notify.py): STATUS lines while loading, READY=1 only once the model is
loaded and the socket listens, WATCHDOG=1 while the engine makes progress, RELOADING=1 on SIGHUP and
STOPPING=1 when the drain starts. SIGHUP reloads the settings (see `Reloader`) without closing the socket.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable

from aiohttp import web

from daemon.app import create_app
from daemon.appkeys import KNOWLEDGE, LISTENING, SETTINGS
from daemon.engine import MODEL_SETTINGS, LlamaEngine, ModelLoadError
from daemon.history import HistoryError
from daemon.knowledge.folder import KnowledgeError
from daemon.knowledge.library import VenueKnowledge, system_prompts
from daemon.models.catalogue import ProvisionError
from daemon.models.pull import resolve_model_path
from daemon.notify import Notifier
from daemon.settings import LiveSettings, Settings, SettingsError, describe
from daemon.upstream import FailoverEngine
from daemon.upstream.engine import UpstreamEngine

_LOGGER = logging.getLogger(__name__)

EXIT_OK, EXIT_MODEL, EXIT_LISTEN, EXIT_HISTORY, EXIT_KNOWLEDGE = 0, 1, 2, 3, 4
SettingsLoader = Callable[[], Settings]
ServedEngine = LlamaEngine | FailoverEngine


def build_engine(settings: Settings) -> ServedEngine:
    """The engine the settings ask for: the local model, or the upstream with the local model as its fallback
    (none with upstream_fallback off: a board too small for one)."""
    if settings.engine == "local":
        return LlamaEngine(settings, resolve_model_path(settings))
    local = LlamaEngine(settings, resolve_model_path(settings)) if settings.upstream_fallback else None
    return FailoverEngine(settings, UpstreamEngine(settings), local)


async def serve(settings: Settings, reload_settings: SettingsLoader | None = None) -> int:
    notifier = Notifier()
    engine = build_engine(settings)
    app = create_app(settings, engine)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    try:
        await runner.setup()
    except HistoryError as exc:
        _LOGGER.error("%s", exc)
        notifier.status(f"failed: {exc}")
        return EXIT_HISTORY
    except KnowledgeError as exc:
        _LOGGER.error("%s", exc)
        notifier.status(f"failed: {exc.problems[0]}")
        await runner.cleanup()
        return EXIT_KNOWLEDGE
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
        return await _run_until_stopped(app[SETTINGS], engine, app[KNOWLEDGE], notifier, reload_settings)
    finally:
        await runner.cleanup()
        await engine.close()
        _LOGGER.info("stopped")


async def _run_until_stopped(live: LiveSettings, engine: ServedEngine, knowledge: VenueKnowledge,
                             notifier: Notifier, reload_settings: SettingsLoader | None) -> int:
    settings = live.current
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloader = Reloader(live, engine, knowledge, notifier, reload_settings)
    loop.add_signal_handler(signal.SIGHUP, reloader.signal)
    try:
        if settings.fault_load_delay:
            await asyncio.sleep(settings.fault_load_delay)
        what = f"model {engine.model_path.name}" if engine.model_path else f"upstream {settings.upstream_url}"
        _LOGGER.info("loading %s", what)
        notifier.status(f"loading {what}")
        # With the model, the system prompt with each venue section is read once and kept on disk: before
        # READY, so the first question pays only for its own tokens.
        await engine.load(system_prompts(settings, knowledge.index))
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
        await reloader.close()
    _LOGGER.info("shutting down")
    notifier.stopping("stopping: the answer being written is stored as interrupted")
    return EXIT_OK


async def _watchdog(engine: ServedEngine, notifier: Notifier, stall_limit: float) -> None:
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


# Settings a running daemon takes over on SIGHUP: read per question or per connection, or (the model ones) by
# loading the model again between answers. The rest (address, storage, voice devices, queue size, ...) is
# reported and waits for a restart.
LIVE_SETTINGS = frozenset({
    "system_prompt", "max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "idle_reset",
    "max_question_chars", "suggestions", "retry_after", "log_level", "model_alias", "context_cache",
    "knowledge", "knowledge_fallback", "knowledge_fallback_zh", "knowledge_only",
    # Read per request or per new connection:
    "max_connections", "max_generations_per_client", "max_generation_seconds", "ws_frames_per_second",
    "ws_flood_seconds", "venue_name", "welcome_en", "welcome_zh", "onscreen_keyboard",
    # The upstream reads these per question; its token file is read again on every SIGHUP even when unchanged.
    "upstream_token_file", "upstream_first_token_timeout", "upstream_read_timeout",
    *MODEL_SETTINGS,
})


class Reloader:
    """SIGHUP: read the settings again, apply what can be applied while serving, report the rest."""

    def __init__(self, live: LiveSettings, engine: ServedEngine, knowledge: VenueKnowledge, notifier: Notifier,
                 load: SettingsLoader | None) -> None:
        self._live, self._engine, self._notifier, self._load = live, engine, notifier, load
        self._knowledge = knowledge
        self._task: asyncio.Task[None] | None = None

    def signal(self) -> None:
        if self._task is None or self._task.done():  # a reload already running will read the newest file
            self._task = asyncio.create_task(self._reload(), name="reload")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _reload(self) -> None:
        self._notifier.reloading()
        try:
            fresh = self._load() if self._load is not None else self._live.current
        except SettingsError as exc:
            _LOGGER.error("reload: the new settings are invalid, keeping the running ones: %s", exc)
            self._notifier.ready(f"running; reload failed: {exc}")
            return
        old, new = describe(self._live.current), describe(fresh)
        changed = sorted(name for name in new if new[name] != old[name])
        live = [name for name in changed if name in LIVE_SETTINGS]
        later = [name for name in changed if name not in LIVE_SETTINGS]
        applied = dataclasses.replace(self._live.current, **{name: getattr(fresh, name) for name in live})
        try:
            if await self._engine.reload(applied, resolve_model_path(applied)):
                _LOGGER.info("reload: now serving model %s", self._engine.model_path)
        except (ModelLoadError, ProvisionError) as exc:
            _LOGGER.error("reload: the new model cannot be loaded, keeping the running one: %s", exc)
            self._notifier.ready(f"running the previous model; reload failed: {exc}")
            return
        self._live.current = applied
        logging.getLogger().setLevel(applied.log_level.upper())
        problem = await self._reload_knowledge(applied)
        self._notifier.ready(_reload_status(live, later) + (f"; {problem}" if problem else ""))

    async def _reload_knowledge(self, settings: Settings) -> str:
        """Open the (possibly changed) knowledge folder and store its prefixes; the old index answers until
        the new one is ready. A broken folder keeps the old one; what is wrong is returned for the status."""
        try:
            index = await self._knowledge.open(settings)
        except KnowledgeError as exc:
            _LOGGER.error("reload: keeping the previous venue knowledge: %s", exc)
            return f"knowledge folder refused: {exc.problems[0]}"
        await self._engine.warm_prefixes(system_prompts(settings, index))
        if index is not None and index.rebuilt:
            _LOGGER.info("reload: now answering from %d venue sections", len(index.sections))
        self._knowledge.use(index)
        return ""


def _reload_status(applied: list[str], later: list[str]) -> str:
    if applied:
        _LOGGER.info("reload: applied %s", ", ".join(applied))
    if later:
        _LOGGER.warning("reload: these settings take effect at the next restart: %s", ", ".join(later))
    parts = [f"applied {', '.join(applied)}" if applied else "",
             f"restart to apply {', '.join(later)}" if later else ""]
    return "reloaded: " + ("; ".join(p for p in parts if p) or "settings unchanged")
