"""GET /ws: the kiosk's chat over a WebSocket, one generation at a time per connection."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from daemon.appkeys import CONVERSATIONS, ENGINE, SETTINGS, SOCKETS
from daemon.conversations import UnknownSession
from daemon.engine import Generation
from daemon.frames import (
    CancelFrame,
    ChatFrame,
    DoneFrame,
    ErrorFrame,
    FrameError,
    ServerFrame,
    SessionFrame,
    TokenFrame,
    parse_client_frame,
)
from daemon.messages import Busy, ChatMessage, EngineError, Finished, GenerationRequest, Timings, Usage

_LOGGER = logging.getLogger(__name__)


async def websocket_chat(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=app[SETTINGS].max_message_bytes)
    await ws.prepare(request)
    app[SOCKETS].add(ws)
    chat = ChatConnection(ws, app)
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await chat.on_text(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await chat.send(ErrorFrame("bad_frame", "binary frames are not accepted; send JSON text"))
    finally:
        await chat.close()
        app[SOCKETS].discard(ws)
    return ws


class ChatConnection:
    """The state of one WebSocket client: its running answer, if any."""

    def __init__(self, ws: web.WebSocketResponse, app: web.Application) -> None:
        self._ws = ws
        self._app = app
        self._task: asyncio.Task[None] | None = None
        self._generation: Generation | None = None
        self._cancel_while_queued = False

    async def send(self, frame: ServerFrame) -> None:
        if not self._ws.closed:
            await self._ws.send_str(frame.to_json())

    async def on_text(self, raw: str) -> None:
        try:
            frame = parse_client_frame(raw)
        except FrameError as exc:
            await self.send(ErrorFrame(exc.code, str(exc)))
            return
        if isinstance(frame, CancelFrame):
            self.cancel()
        else:
            await self._start(frame)

    def cancel(self) -> None:
        if self._task is None or self._task.done():
            return
        if self._generation is not None:
            self._generation.cancel()  # Running: stops after the current token, reports "cancelled".
        else:
            self._cancel_while_queued = True
            self._task.cancel()

    async def _start(self, frame: ChatFrame) -> None:
        if self._task is not None and not self._task.done():
            await self.send(ErrorFrame("generation_in_progress",
                                       "an answer is still being written; cancel it or wait for 'done'"))
            return
        store = self._app[CONVERSATIONS]
        try:
            session = frame.session or store.create()
            history = store.history(session)
        except UnknownSession:
            await self.send(ErrorFrame("unknown_session", f"no session {frame.session!r}; send null to start"))
            return
        await self.send(SessionFrame(session))
        self._cancel_while_queued = False
        self._task = asyncio.create_task(self._answer(session, history, frame.text), name=f"ws-chat-{session}")

    async def _answer(self, session: str, history: tuple[ChatMessage, ...], text: str) -> None:
        settings = self._app[SETTINGS]
        question = ChatMessage("user", text)
        system = ChatMessage("system", settings.system_prompt)
        request = GenerationRequest((system, *history, question), settings.sampling(), request_id=session)
        try:
            finished = await self._generate(request)
        except Busy as exc:
            await self.send(ErrorFrame(exc.code, str(exc), retry_after=settings.retry_after))
            return
        except EngineError as exc:
            await self.send(ErrorFrame(exc.code, str(exc)))
            return
        except asyncio.CancelledError:
            if not self._cancel_while_queued:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            finished = _cancelled_before_start()
        if finished.text:
            self._app[CONVERSATIONS].append(session, question, ChatMessage("assistant", finished.text))
        await self.send(DoneFrame.from_finished(finished))

    async def _generate(self, request: GenerationRequest) -> Finished:
        generation = self._app[ENGINE].generate(request)
        async with generation:
            self._generation = generation
            try:
                async for piece in generation:
                    await self.send(TokenFrame(piece))
            finally:
                self._generation = None
        assert generation.result is not None
        return generation.result

    async def close(self) -> None:
        """The client is gone: stop its answer and wait until the model is free.

        The wait survives this handler being cancelled too (aiohttp does so at shutdown): cancelling the
        answer a second time would make it stop waiting for the worker thread.
        """
        task = self._task
        if task is None or task.done():
            return
        task.cancel()
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError


def _cancelled_before_start() -> Finished:
    timings = Timings(queue_ms=0.0, ttft_ms=0.0, prompt_eval_tokens=0, prompt_ms=0.0, tokens_per_s=0.0,
                      total_ms=0.0)
    return Finished(reason="cancelled", text="", usage=Usage(0, 0), timings=timings)
