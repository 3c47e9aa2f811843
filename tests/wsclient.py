"""A small WebSocket chat client for the end-to-end tests."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Answer:
    session: str | None = None
    tokens: list[str] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    sent_at: float = 0.0
    cancelled_after: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.tokens)


async def read_answer(ws: aiohttp.ClientWebSocketResponse, answer: Answer, cancel_after: int | None = None,
                      disconnect_after: int | None = None, limit_s: float = 60.0) -> Answer:
    while True:
        msg = await asyncio.wait_for(ws.receive(), limit_s)
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise AssertionError(f"unexpected message {msg!r}")
        frame = json.loads(msg.data)
        kind = frame["type"]
        if kind == "session":
            answer.session = frame["session"]
        elif kind == "token":
            answer.tokens.append(frame["text"])
            answer.token_times.append(time.perf_counter())
            if cancel_after is not None and len(answer.tokens) == cancel_after:
                answer.cancelled_after = len(answer.tokens)
                await ws.send_str(json.dumps({"type": "cancel"}))
            if disconnect_after is not None and len(answer.tokens) == disconnect_after:
                await ws.close()
                return answer
        elif kind == "done":
            answer.done = frame
            return answer
        elif kind == "error":
            answer.error = frame
            return answer


async def ask(ws: aiohttp.ClientWebSocketResponse, text: str, session: str | None = None,
              **kwargs: Any) -> Answer:
    answer = Answer(sent_at=time.perf_counter())
    await ws.send_str(json.dumps({"type": "chat", "session": session, "text": text}))
    return await read_answer(ws, answer, **kwargs)


async def ask_once(url: str, text: str, **kwargs: Any) -> Answer:
    async with aiohttp.ClientSession() as http, http.ws_connect(url + "/ws") as ws:
        return await ask(ws, text, **kwargs)
