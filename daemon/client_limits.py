"""The HTTP API's per-client bound: one client may not have more than `max_generations_per_client` answers
running or waiting at once.

A client is a peer address (the daemon trusts no proxy headers). Loopback is exempt: it is the device itself
(its page chats over the WebSocket, which has its own one-answer-per-connection rule; local tools are trusted),
and a kiosk listens on 127.0.0.1 by default, where every caller shares one address. The bearer token (`api_token`,
required from other machines) does not name a client: all of a deployment's callers share the one token.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from aiohttp import web

from daemon.appkeys import ENGINE, SETTINGS
from daemon.gate import TooManyGenerations
from daemon.openai_compat.schema import ApiError
from daemon.security import is_loopback


@contextmanager
def client_generation(request: web.Request) -> Iterator[None]:
    """Holds one of the client's generations for the block; 429 `generation_in_progress` when it has its
    allowance already."""
    limit = request.app[SETTINGS].current.max_generations_per_client
    if is_loopback(request.remote) or not limit:
        yield
        return
    client, slots = request.remote or "unknown", request.app[ENGINE].gate.clients
    with ExitStack() as held:
        try:
            held.enter_context(slots.hold(client, limit))
        except TooManyGenerations:
            message = (f"this client already has {slots.active(client)} answer(s) running or waiting; "
                       "wait for it to finish")
            raise ApiError(429, message, code="generation_in_progress", kind="rate_limit_error") from None
        yield
