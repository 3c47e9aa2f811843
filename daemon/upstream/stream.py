"""One answer streamed from the upstream, with the interface of daemon.generation.Generation.

A pump task reads the upstream's event stream and hands each piece of text to the iterator at once (no
re-chunking). Cancelling (client gone, barge-in, time limit, kiosk cancel) closes the upstream response there
and then, so the upstream stops generating instead of writing an answer nobody reads.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import aiohttp

from daemon.gate import ModelGate
from daemon.generation import Generation, position_listener
from daemon.messages import Finished, FinishReason, GenerationRequest, Timings, Usage
from daemon.upstream.client import UpstreamClient
from daemon.upstream.errors import FirstTokenTimeout, UpstreamFailure, UpstreamLost, refusal
from daemon.upstream.wire import ToolCallText, request_body, sse_data

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StreamLimits:
    first_token: float
    read: float
    time_limit: float
    """max_generation_seconds (0: none)."""


@dataclasses.dataclass
class _Progress:
    """What the pump has seen so far of one answer."""

    started: float = dataclasses.field(default_factory=time.perf_counter)
    first_at: float = 0.0
    pieces: list[str] = dataclasses.field(default_factory=list)
    usage: Usage | None = None
    finish: str = ""
    done: bool = False


_FINISH: dict[str, FinishReason] = {"length": "length"}


class UpstreamGeneration(Generation):
    """Shares Generation's interface (what the conversation and API layers use), not its model thread: the
    base class's constructor is deliberately not called."""

    def __init__(self, client: UpstreamClient, gate: ModelGate, request: GenerationRequest, model: str,
                 limits: StreamLimits) -> None:
        self._client, self._gate, self._request, self._model, self._limits = client, gate, request, model, limits
        self._items: asyncio.Queue[str | BaseException | None] = asyncio.Queue()
        self._pump_task: asyncio.Task[None] | None = None
        self._response: aiohttp.ClientResponse | None = None
        self._cancelled = self._timed_out = False
        self._timer: asyncio.TimerHandle | None = None
        self._progress = _Progress()
        self._queue_ms = 0.0
        self.result: Finished | None = None

    @property
    def started(self) -> bool:
        return self._pump_task is not None

    @property
    def wrote_text(self) -> bool:
        return bool(self._progress.pieces)

    def cancel(self) -> None:
        """Stop now: the upstream response is closed at once, which tells the upstream to stop generating."""
        if self._cancelled:
            return
        self._cancelled = True
        if self._response is not None:
            self._response.close()
        if self._pump_task is not None:
            self._pump_task.cancel()

    async def __aenter__(self) -> UpstreamGeneration:
        queued_at = time.perf_counter()
        await self._gate.acquire(position_listener())
        self._queue_ms = (time.perf_counter() - queued_at) * 1000
        self._progress = _Progress()
        self._pump_task = asyncio.create_task(self._pump(), name=f"upstream-{self._request.request_id or 'answer'}")
        if self._limits.time_limit > 0:
            self._timer = asyncio.get_running_loop().call_later(self._limits.time_limit, self._time_up)
        return self

    def _time_up(self) -> None:
        if not self._cancelled:
            _LOGGER.info("an upstream answer ran past max_generation_seconds (%g s) and is being stopped",
                         self._limits.time_limit)
            self._timed_out = True
            self.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.cancel()
        if self._timer is not None:
            self._timer.cancel()
        if self._pump_task is None:
            return
        try:
            await asyncio.gather(self._pump_task, return_exceptions=True)
        finally:
            self._gate.release()
        if self.result is None:
            self.result = self._report()

    async def __aiter__(self) -> AsyncIterator[str]:
        while (item := await self._items.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
        self.result = self._report()

    async def _pump(self) -> None:
        try:
            if not self._cancelled:  # cancelled while it waited in line: the upstream never hears of it
                await self._stream()
        except asyncio.CancelledError:
            pass  # cancel(): the iterator ends with reason "cancelled"
        except Exception as exc:  # handed to the iterator, which raises it in the caller's task
            if not self._cancelled:  # closing the response on cancel may surface as a connection error
                self._items.put_nowait(self._failure(exc))
        finally:
            if self._response is not None:
                self._response.close()
            self._items.put_nowait(None)

    def _failure(self, exc: Exception) -> BaseException:
        """Before any text a failure may go to the local model; after some it loses the answer."""
        if isinstance(exc, TimeoutError):
            if not self.wrote_text:
                return FirstTokenTimeout(f"the upstream wrote no token within {self._limits.first_token:g} s")
            return UpstreamLost(f"the upstream stalled for {self._limits.read:g} s in the middle of the answer")
        if isinstance(exc, aiohttp.ClientError | json.JSONDecodeError | UnicodeDecodeError):
            if not self.wrote_text:
                return UpstreamFailure(f"the upstream failed before answering: {exc or type(exc).__name__}")
            return UpstreamLost(f"the upstream connection was lost in the middle of the answer: "
                                f"{exc or type(exc).__name__}")
        return exc

    async def _stream(self) -> None:
        loop = asyncio.get_running_loop()
        body = request_body(self._request, self._model)
        tools = ToolCallText()
        async with asyncio.timeout(self._limits.first_token) as deadline:
            self._response = response = await self._client.post_chat(body)
            if self._cancelled:
                return
            while line := await response.content.readline():
                if (data := sse_data(line)) is None:
                    continue
                if data == "[DONE]":
                    self._progress.done = True
                    break
                self._take(json.loads(data), tools)
                if self._progress.first_at:
                    deadline.reschedule(loop.time() + self._limits.read)
        self._emit_all(tools.flush())
        if not (self._progress.done or self._progress.finish):
            raise aiohttp.ClientPayloadError("the stream ended before the answer did")

    def _take(self, chunk: Any, tools: ToolCallText) -> None:
        if not isinstance(chunk, dict):
            return
        if isinstance(error := chunk.get("error"), dict):
            message = str(error.get("message", error))
            if self.wrote_text:
                raise UpstreamLost(f"the upstream failed in the middle of the answer: {message}")
            raise refusal(int(error.get("code", 500)) if str(error.get("code", "")).isdigit() else 500, message)
        if isinstance(usage := chunk.get("usage"), dict):
            self._progress.usage = Usage(int(usage.get("prompt_tokens") or 0),
                                         int(usage.get("completion_tokens") or 0))
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if content := delta.get("content"):
                self._emit(content)
            if calls := delta.get("tool_calls"):
                self._emit_all(tools.feed(calls))
            if finish := choice.get("finish_reason"):
                self._progress.finish = str(finish)

    def _emit_all(self, blocks: list[str]) -> None:
        for block in blocks:
            self._emit(("\n" if self._progress.pieces else "") + block)

    def _emit(self, text: str) -> None:
        if not self._progress.first_at:
            self._progress.first_at = time.perf_counter()
        self._progress.pieces.append(text)
        self._items.put_nowait(text)

    def _report(self) -> Finished:
        p, now = self._progress, time.perf_counter()
        reason: FinishReason = ("time_limit" if self._timed_out else "cancelled" if self._cancelled
                                else _FINISH.get(p.finish, "stop"))
        usage = p.usage or Usage(0, len(p.pieces))
        ttft = (p.first_at - p.started) * 1000 if p.first_at else 0.0
        decode_s = now - p.first_at if p.first_at else 0.0
        rate = (usage.completion_tokens - 1) / decode_s if decode_s > 0 and usage.completion_tokens > 1 else 0.0
        timings = Timings(queue_ms=self._queue_ms, ttft_ms=ttft, prompt_eval_tokens=usage.prompt_tokens,
                          prompt_ms=ttft, tokens_per_s=rate, total_ms=(now - p.started) * 1000)
        return Finished(reason, "".join(p.pieces), usage, timings)
