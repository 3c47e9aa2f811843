"""Typed application state (aiohttp AppKeys): everything handlers share, and nothing global."""

from __future__ import annotations

import asyncio

from aiohttp import web

from daemon.conversation import Conversations
from daemon.generation import ChatEngine
from daemon.history import History
from daemon.knowledge.library import VenueKnowledge
from daemon.metrics.instruments import Metrics
from daemon.settings import LiveSettings
from daemon.visits import OperatorAccess, VisitKeeper
from daemon.voice_link import VoiceLink

SETTINGS = web.AppKey("settings", LiveSettings)
ENGINE = web.AppKey("engine", ChatEngine)
CONVERSATIONS = web.AppKey("conversations", Conversations)
HISTORY = web.AppKey("history", History)
LISTENING = web.AppKey("listening", asyncio.Event)
VOICE = web.AppKey("voice", VoiceLink)
KNOWLEDGE = web.AppKey("knowledge", VenueKnowledge)
VISITS = web.AppKey("visits", VisitKeeper)
OPERATOR = web.AppKey("operator", OperatorAccess)
METRICS = web.AppKey("metrics", Metrics)


class OpenSockets(set[web.WebSocketResponse]):
    """The kiosk WebSockets that are open, so shutdown can close them politely."""


SOCKETS = web.AppKey("sockets", OpenSockets)
