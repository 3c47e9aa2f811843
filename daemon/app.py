"""The aiohttp application factory: routes, middlewares and typed state."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import WSCloseCode, web

from daemon import chat_ws, health, kiosk_page, security, sessions_api
from daemon.appkeys import (
    CONVERSATIONS,
    ENGINE,
    HISTORY,
    KNOWLEDGE,
    LISTENING,
    METRICS,
    OPERATOR,
    SETTINGS,
    SOCKETS,
    VISITS,
    VOICE,
    OpenSockets,
)
from daemon.conversation import Conversations
from daemon.generation import ChatEngine
from daemon.history import IN_MEMORY, History
from daemon.knowledge.library import VenueKnowledge
from daemon.metrics import routes as metrics_routes
from daemon.middlewares import json_errors
from daemon.openai_compat import routes as openai_api
from daemon.retention import purge_periodically
from daemon.settings import LiveSettings, Settings, describe
from daemon.visits import OperatorAccess, VisitKeeper, operator_api
from daemon.voice_link import VoiceLink

_LOGGER = logging.getLogger(__name__)


def create_app(settings: Settings, engine: ChatEngine) -> web.Application:
    _LOGGER.debug("settings: %s", describe(settings))  # secrets masked
    # The security guard first: a refused caller learns nothing else, not even which paths exist.
    app = web.Application(middlewares=[security.guard(settings), json_errors],
                          client_max_size=settings.max_message_bytes)
    app[SETTINGS] = LiveSettings(settings)
    app[ENGINE] = engine
    app[LISTENING] = asyncio.Event()
    app[SOCKETS] = OpenSockets()
    app[KNOWLEDGE] = VenueKnowledge()
    app[OPERATOR] = OperatorAccess(settings.operator_pin, settings.operator_lockout_attempts,
                                   settings.operator_lockout_seconds, settings.operator_unlock_seconds)
    app.router.add_get("/healthz", health.healthz)
    app.router.add_get("/readyz", health.readyz)
    app.router.add_get("/ws", chat_ws.websocket_chat)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    sessions_api.add_routes(app.router)
    operator_api.add_routes(app.router)
    metrics_routes.install(app, settings, engine)  # before the others' contexts: it counts what they do
    kiosk_page.add_routes(app, settings)
    app.on_response_prepare.append(kiosk_page.add_security_headers)
    app.cleanup_ctx.append(_knowledge)
    app.cleanup_ctx.append(_history)
    app.cleanup_ctx.append(_voice)
    app.on_shutdown.append(_stop_generations)
    app.on_shutdown.append(_close_sockets)
    return app


async def _knowledge(app: web.Application) -> AsyncIterator[None]:
    """Open the venue's knowledge first: a broken folder stops start-up (KnowledgeError) before anything else."""
    knowledge = app[KNOWLEDGE]
    knowledge.use(await knowledge.open(app[SETTINGS].current))
    try:
        yield
    finally:
        knowledge.close()


async def _history(app: web.Application) -> AsyncIterator[None]:
    """Open the history before the socket listens (a broken database stops start-up), purge old sessions
    while serving, and close the store last."""
    settings = app[SETTINGS].current
    # history_mode off: an in-memory database, so nothing of a conversation is ever written to disk.
    history = await History.open(IN_MEMORY if settings.history_mode == "off" else settings.history_file)
    if pages := settings.fault_history_max_pages:
        await history.run(lambda store: store.limit_pages(pages))
    history.on_write_deferred, history.on_write_failed = app[METRICS].history_deferred, app[METRICS].history_failed
    app[HISTORY] = history
    app[CONVERSATIONS] = Conversations(app[SETTINGS], app[ENGINE], history, app[KNOWLEDGE])
    app[VISITS] = VisitKeeper(settings.history_mode, history)
    await app[VISITS].start()
    purger = asyncio.create_task(purge_periodically(history, settings.retention_days), name="history-purge")
    try:
        yield
    finally:
        purger.cancel()
        await asyncio.gather(purger, return_exceptions=True)
        await history.close()


async def _voice(app: web.Application) -> AsyncIterator[None]:
    """The voice path starts in the background (models load in threads) and never delays text chat."""
    link = VoiceLink(app[SETTINGS].current, app[METRICS])
    app[VOICE] = link
    await link.start()
    try:
        yield
    finally:
        await link.close()


async def _stop_generations(app: web.Application) -> None:
    app[ENGINE].shutdown()


async def _close_sockets(app: web.Application) -> None:
    open_sockets: OpenSockets = app[SOCKETS]
    for ws in list(open_sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")
