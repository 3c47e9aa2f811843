"""A small OpenAI-compatible stand-in upstream on 127.0.0.1, for tests at the upstream engine's seam.

Each POST /v1/chat/completions takes the next scripted `Reply` (or the default one): it streams SSE chunks with
a delay between them, or refuses with a status, or stalls, or drops the connection in the middle. It records
every request (body and headers) and the moment the client closed a stream it was still writing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL = "standin-model"


@dataclass
class Reply:
    pieces: tuple[str, ...] = ("Hello", " from", " upstream", ".")
    delay: float = 0.0
    """Seconds before each chunk (the first included)."""
    refuse: int = 0
    """An HTTP status to refuse with (0: answer)."""
    message: str = "scripted refusal"
    first_delay: float = 0.0
    """Seconds of silence before the first chunk (a slow first token)."""
    drop_after: int = -1
    """Close the connection after this many content pieces, without finishing (-1: never)."""
    stall_after: int = -1
    """Stop writing (the connection stays open) after this many pieces (-1: never)."""
    tool_calls: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """Calls streamed after the content: the function's name and its arguments' text in fragments."""


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    closed_by_client_at: float = 0.0
    """perf_counter time the client went away while this stream was still being written (0: it did not)."""
    finished: bool = False
    dropped: bool = False
    """The stand-in dropped this connection itself (Reply.drop_after)."""


@dataclass
class StandIn:
    replies: list[Reply] = field(default_factory=list)
    default: Reply = field(default_factory=Reply)
    seen: list[Seen] = field(default_factory=list)
    health_status: int = 200
    health_checks: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Gone from the network: connections are refused until `start()` again (same port)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _models(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        if self.health_status != 200:
            return web.json_response({"error": {"message": "down"}}, status=self.health_status)
        return web.json_response({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(await request.json(), dict(request.headers))
        self.seen.append(seen)
        reply = self.replies.pop(0) if self.replies else self.default
        if reply.refuse:
            return web.json_response({"error": {"message": reply.message, "type": "server_error"}},
                                     status=reply.refuse)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        try:
            await self._stream(request, response, reply, seen)
            seen.finished = True
        except (asyncio.CancelledError, ConnectionResetError):
            if not seen.dropped:
                seen.closed_by_client_at = time.perf_counter()
            raise
        return response

    async def _stream(self, request: web.Request, response: web.StreamResponse, reply: Reply, seen: Seen) -> None:
        await asyncio.sleep(reply.first_delay)
        for index, piece in enumerate(reply.pieces):
            if index == reply.drop_after:
                seen.dropped = True
                assert request.transport is not None
                request.transport.abort()  # a crash: no end of the chunked body, no [DONE]
                await asyncio.sleep(3600)
            if index == reply.stall_after:
                await asyncio.sleep(3600)
            await asyncio.sleep(reply.delay)
            await _send(response, {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        for call_index, (name, fragments) in enumerate(reply.tool_calls):
            await _send(response, _call_delta(call_index, {"name": name, "arguments": ""}, f"call_{call_index}"))
            for fragment in fragments:
                await _send(response, _call_delta(call_index, {"arguments": fragment}))
        finish = "tool_calls" if reply.tool_calls else "stop"
        await _send(response, {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        await _send(response, {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": len(reply.pieces),
                                                        "total_tokens": 11 + len(reply.pieces)}})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()


def _call_delta(index: int, function: dict[str, str], call_id: str = "") -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": function}
    if call_id:
        call |= {"id": call_id, "type": "function"}
    return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]}


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    chunk = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "model": MODEL, **chunk}
    await response.write(f"data: {json.dumps(chunk)}\n\n".encode())


@asynccontextmanager
async def stand_in(**kwargs: Any) -> AsyncIterator[StandIn]:
    upstream = StandIn(**kwargs)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()
