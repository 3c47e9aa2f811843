"""GET /ws: the kiosk's chat over a WebSocket, one generation at a time per connection."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Collection
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from daemon.appkeys import CONVERSATIONS, ENGINE, METRICS, OPERATOR, SETTINGS, SOCKETS, VISITS, VOICE
from daemon.frames import (
    CancelFrame,
    ChatFrame,
    DoneFrame,
    ErrorFrame,
    FrameError,
    HelloFrame,
    LanguageFrame,
    ListenFrame,
    NewVisitFrame,
    ResetFrame,
    RetractFrame,
    ServerFrame,
    SessionFrame,
    TokenFrame,
    VisitFrame,
    parse_client_frame,
)
from daemon.generation import Generation, reporting_queue_position
from daemon.history import HistoryError, NoSuchSession, Turn
from daemon.messages import Busy, EngineError, Finished, PrefillReport, Timings, Usage
from daemon.openai_compat.schema import ApiError
from daemon.prefill import STABLE_S, SpeechPrefill
from daemon.screen_voice import ScreenVoice
from daemon.security import is_loopback
from daemon.upstream import engine_state
from daemon.ws_flow import FrameRate, QueueReporter, Verdict

_LOGGER = logging.getLogger(__name__)


HARD_CAP = 4
"""Frames up to `max_message_bytes` are read; larger ones, up to this many times that, are refused with an error
frame and the connection stays; beyond that aiohttp closes it (1009)."""


async def websocket_chat(request: web.Request) -> web.StreamResponse:
    app, settings = request.app, request.app[SETTINGS].current
    sockets = app[SOCKETS]
    if len(sockets) >= settings.max_connections:
        _LOGGER.warning("refused a WebSocket from %s: %d connections are open (max_connections)",
                        request.remote, len(sockets))
        error = ApiError(503, f"the kiosk already has {len(sockets)} connections open; try again shortly",
                         code="too_many_connections", kind="server_busy")
        app[METRICS].error(error.code, str(error), callers_fault=False)
        return web.json_response(error.body(), status=503, headers={"Retry-After": str(settings.retry_after)})
    ws = _Socket(heartbeat=30.0, max_msg_size=HARD_CAP * settings.max_message_bytes)
    sockets.add(ws)  # Counted from before the upgrade, so handshakes at the same moment cannot pass the bound.
    try:
        await ws.prepare(request)
        await _converse(ws, app, is_loopback(request.remote))
    finally:
        sockets.discard(ws)
    return ws


class _Socket(web.WebSocketResponse):
    """A kiosk WebSocket; closing one that is still upgrading (shutdown at that moment) does nothing."""

    async def close(self, *, code: int = WSCloseCode.OK, message: bytes = b"", drain: bool = True) -> bool:
        if not self.prepared:
            return False
        return await super().close(code=code, message=message, drain=drain)


async def _converse(ws: web.WebSocketResponse, app: web.Application, local: bool) -> None:
    settings = app[SETTINGS].current
    chat = ChatConnection(ws, app, local=local)
    rate = FrameRate(settings.ws_frames_per_second, settings.ws_flood_seconds)
    await chat.send(chat.hello())
    chat.start_idle_watch()
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            verdict = rate.admit()
            if verdict is Verdict.CLOSE:
                _LOGGER.warning("closed a WebSocket that kept sending more than %g frames/s for %g s",
                                settings.ws_frames_per_second, settings.ws_flood_seconds)
                await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many frames")
            elif verdict is not Verdict.ACCEPT:
                await chat.over_rate(msg.data if msg.type == WSMsgType.TEXT else None, verdict is Verdict.WARN)
            elif msg.type == WSMsgType.TEXT:
                await chat.on_text(msg.data)
            else:
                await chat.send(ErrorFrame("bad_frame", "binary frames are not accepted; send JSON text"))
    finally:
        await chat.close()


class ChatConnection:
    """The state of one WebSocket client: its visit (see daemon.visits) and its running answer, if any."""

    def __init__(self, ws: web.WebSocketResponse, app: web.Application, local: bool = False) -> None:
        self._ws = ws
        self._app = app
        self._task: asyncio.Task[None] | None = None
        self._generation: Generation | None = None
        self._cancel_while_queued = False
        self._session: str | None = None
        self._last_activity = asyncio.get_running_loop().time()
        self._idle_watch: asyncio.Task[None] | None = None
        self._visits = app[VISITS]
        self.visit = self._visits.begin()
        settings = app[SETTINGS].current
        # Silero's pauses settle the words (audio.recognizer): only those are drafted, not merely stable partials.
        prefill = SpeechPrefill(self._prefill_partial, stable_s=None if settings.vad == "silero" else STABLE_S) \
            if settings.prefill_speech else None
        self.voice = ScreenVoice(app.get(VOICE), local, self.send, self._wake,
                                 getattr(app[ENGINE], "yield_cpu", None), prefill)

    def hello(self) -> HelloFrame:
        settings, engine = self._app[SETTINGS].current, self._app[ENGINE]
        return HelloFrame(model=engine.model_id, ready=engine.ready, idle_reset=settings.idle_reset,
                          max_question_chars=settings.max_question_chars, suggestions=list(settings.suggestions),
                          voice=self.voice.state(), visit=self.visit, history_mode=self._visits.mode,
                          operator_unlock=self._app[OPERATOR].enabled, onscreen_keyboard=settings.onscreen_keyboard,
                          venue_name=settings.venue_name, welcome_en=settings.welcome_en,
                          welcome_zh=settings.welcome_zh, wake_phrase=settings.wake_phrase,
                          wake_phrase_zh=settings.wake_phrase_zh, engine=engine_state(engine).as_dict())

    async def _wake(self) -> None:
        """The wake phrase: whatever the kiosk was saying or writing stops, and it listens."""
        self.cancel()
        if reason := await self.voice.on_listen(True):
            await self.send(ErrorFrame("voice_unavailable", reason))

    def start_idle_watch(self) -> None:
        if self._app[SETTINGS].current.idle_reset > 0:
            self._idle_watch = asyncio.create_task(self._watch_idle(), name="ws-idle-watch")

    async def _watch_idle(self) -> None:
        """End the screen's conversation after `idle_reset` seconds with no frames and no answer running."""
        idle = self._app[SETTINGS].current.idle_reset
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self._last_activity + idle - loop.time()))
            if self._task is not None and not self._task.done():
                self._last_activity = loop.time()  # Writing an answer is activity too.
            elif loop.time() - self._last_activity >= idle:
                if self._session is not None:
                    session = self._session
                    _LOGGER.info("session %s ended after %.0f s idle", session, idle)
                    await self.new_visit()
                    await self.send(ResetFrame(session, visit=self.visit))
                self._last_activity = loop.time()

    async def send(self, frame: ServerFrame) -> None:
        if isinstance(frame, ErrorFrame):
            self._app[METRICS].error(frame.code, frame.message)
        if not self._ws.closed:
            await self._ws.send_str(frame.to_json())

    async def over_rate(self, raw: str | None, first: bool) -> None:
        """A frame past the client's rate is dropped, except a cancel: stopping must work even then."""
        if first:
            await self.send(ErrorFrame("rate_limited", "too many frames; they are being dropped, slow down",
                                       retry_after=1))
        if raw is not None and len(raw) <= 64 and _is_cancel(raw):
            await self.on_text(raw)

    async def on_text(self, raw: str) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        settings = self._app[SETTINGS].current
        if _too_large(raw, settings.max_message_bytes):
            await self.send(ErrorFrame("frame_too_large",
                                       f"the frame is larger than {settings.max_message_bytes} bytes"))
            return
        try:
            frame = parse_client_frame(raw, settings.max_question_chars)
        except FrameError as exc:
            await self.send(ErrorFrame(exc.code, str(exc)))
            return
        if isinstance(frame, CancelFrame):
            self.cancel()
            await self.voice.barge_in()
        elif isinstance(frame, NewVisitFrame):
            await self.new_visit()
            await self.send(VisitFrame(self.visit))
        elif isinstance(frame, ChatFrame):
            await self._start(frame)
        elif isinstance(frame, LanguageFrame):
            await self.voice.on_language(frame.lang)
        elif isinstance(frame, ListenFrame):
            if reason := await self.voice.on_listen(frame.on, frame.lang):
                await self.send(ErrorFrame("voice_unavailable", reason))
            else:
                await self.send(self.voice.state())
        else:
            await self.voice.on_speech(frame.on)

    async def _prefill_partial(self, text: str, draft: bool) -> PrefillReport | None:
        """The spoken question so far, read into this screen's conversation (or its next one) ahead of time;
        `draft`: it seems complete, the answer's first clause is written ahead too."""
        if self._task is not None and not self._task.done():
            return None  # an answer is running or queued
        session = self._session
        if session is not None and not self._visits.owns(self.visit, session):
            return None
        return await self._app[CONVERSATIONS].prefill(session, None, text, draft)

    async def new_visit(self) -> None:
        """End this screen's visit (its answer stops first) and start the next one."""
        self.cancel()
        await self.voice.barge_in()
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task})
        ended, self.visit, self._session = self.visit, self._visits.begin(), None
        await self._visits.end(ended)

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
        if frame.session is not None and not self._visits.owns(self.visit, frame.session):
            # Another visit's conversation, or none: the same answer, so that an id reveals nothing.
            await self.send(ErrorFrame("unknown_session", f"no session {frame.session!r}; send null to start"))
            return
        try:
            session, turns = await self._app[CONVERSATIONS].open(frame.session)
        except NoSuchSession:
            await self.send(ErrorFrame("unknown_session", f"no session {frame.session!r}; send null to start"))
            return
        except HistoryError as exc:
            await self.send(ErrorFrame("history_unavailable", str(exc)))
            return
        self._visits.joined(self.visit, session)
        self.voice.on_question(frame.text)
        await self.send(SessionFrame(session))
        self._session = session
        self._cancel_while_queued = False
        self._task = asyncio.create_task(self._answer(session, turns, frame.text), name=f"ws-chat-{session}")

    async def _answer(self, session: str, turns: list[Turn], text: str) -> None:
        positions = QueueReporter(self.send)
        try:
            with reporting_queue_position(positions.update):
                await self._answer_reporting(session, turns, text, positions)
        finally:
            await positions.aclose()

    async def _answer_reporting(self, session: str, turns: list[Turn], text: str,
                                positions: QueueReporter) -> None:
        settings = self._app[SETTINGS].current
        try:
            finished = await self._generate(session, turns, text, positions)
        except Busy as exc:
            await self.send(ErrorFrame(exc.code, str(exc), retry_after=settings.retry_after))
            return
        except EngineError as exc:
            await self.send(ErrorFrame(exc.code, str(exc)))
            return
        except NoSuchSession:
            await self.send(ErrorFrame("unknown_session", f"session {session!r} was deleted"))
            return
        except (HistoryError, sqlite3.Error) as exc:
            _LOGGER.error("history store failed in session %s: %s", session, exc)
            await self.send(ErrorFrame("history_unavailable", f"the conversation could not be stored: {exc}"))
            return
        except asyncio.CancelledError:
            if not self._cancel_while_queued:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            finished = _cancelled_before_start()
        self._last_activity = asyncio.get_running_loop().time()
        self._app[METRICS].answered(finished)
        await self.send(DoneFrame.from_finished(finished))

    async def _generate(self, session: str, turns: list[Turn], text: str, positions: QueueReporter) -> Finished:
        """The answer, streamed to the page and, when this screen has speech on, read aloud as it is written."""

        async def on_piece(piece: str) -> None:
            self.voice.piece(piece)
            await self.send(TokenFrame(piece))

        def on_start(generation: Generation | None) -> None:
            positions.stop()  # The model has it: no `queued` frame after this (the tokens follow).
            self._generation = generation

        async def on_retract() -> None:
            await self.send(RetractFrame())
            await self.voice.start_answer()  # what was said of it stops; the replacement is spoken instead

        await self.voice.start_answer()
        complete = False
        try:
            finished = await self._app[CONVERSATIONS].answer(session, turns, text, on_piece, on_start, on_retract)
            complete = finished.reason != "cancelled"
            return finished
        finally:
            await self.voice.end_answer(complete)

    async def close(self) -> None:
        """The client is gone: stop its answer and wait until the model is free.

        Everything is cancelled before the first await, and the wait survives this handler being cancelled
        too (aiohttp does so when the client disconnects and at shutdown): giving up early would leave the
        answer running, or stop waiting for the worker thread.
        """
        tasks = {t for t in (self._idle_watch, self._task) if t is not None and not t.done()}
        for task in tasks:
            task.cancel()
        cancelled = await _wait_through_cancellation(tasks)
        cancelled |= await _wait_through_cancellation({asyncio.ensure_future(self.voice.close())})
        # The screen is gone, and its visit with it (history_mode visit and off: its conversations too).
        cancelled |= await _wait_through_cancellation({asyncio.ensure_future(self._visits.end(self.visit))})
        if cancelled:
            raise asyncio.CancelledError


async def _wait_through_cancellation(tasks: Collection[asyncio.Future[Any]]) -> bool:
    """Wait until all `tasks` are done even if we are cancelled meanwhile; whether we were."""
    cancelled = False
    while not all(task.done() for task in tasks):
        try:
            await asyncio.wait(tasks)
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _too_large(raw: str, limit: int) -> bool:
    return len(raw) > limit or (len(raw) * 4 > limit and len(raw.encode()) > limit)


def _is_cancel(raw: str) -> bool:
    try:
        return isinstance(parse_client_frame(raw), CancelFrame)
    except FrameError:
        return False


def _cancelled_before_start() -> Finished:
    timings = Timings(queue_ms=0.0, ttft_ms=0.0, prompt_eval_tokens=0, prompt_ms=0.0, tokens_per_s=0.0,
                      total_ms=0.0)
    return Finished(reason="cancelled", text="", usage=Usage(0, 0), timings=timings)
