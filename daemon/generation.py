"""A generation as its callers see it: the ChatEngine seam, the Generation a model thread feeds, and the
queue-position listener a caller hands down through the layers in between.

A generation runs on an engine's worker thread (or, upstream, as a task) and hands each piece of text to the
loop as soon as it is written; cancelling sets a flag checked after every token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import Protocol

from daemon.gate import ModelGate, OnPosition
from daemon.messages import Finished, GenerationRequest, PrefillReport

_LOGGER = logging.getLogger(__name__)

_ON_POSITION: ContextVar[OnPosition | None] = ContextVar("kioskd_on_position", default=None)


@contextmanager
def reporting_queue_position(on_position: OnPosition) -> Iterator[None]:
    """Generations entered inside this block (in this task) tell `on_position` their place in the waiting line,
    so the layers in between (the conversation store) need not carry the callback."""
    token = _ON_POSITION.set(on_position)
    try:
        yield
    finally:
        _ON_POSITION.reset(token)


def position_listener() -> OnPosition | None:
    """The listener reporting_queue_position() set for this task, if any."""
    return _ON_POSITION.get()


class Emit(Protocol):
    def __call__(self, text: str | None) -> None: ...


class ChatEngine(Protocol):
    """The seam between the HTTP layer and a model; tests may substitute a scripted engine."""

    @property
    def ready(self) -> bool: ...

    @property
    def model_id(self) -> str: ...

    @property
    def gate(self) -> ModelGate: ...

    def generate(self, request: GenerationRequest) -> Generation: ...

    async def warm_prefixes(self, system_prompts: Sequence[str]) -> PrefixReport: ...

    async def prefill(self, request: GenerationRequest, text_end: str | None = None,
                      draft: bool = False) -> PrefillReport: ...

    def shutdown(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class PrefixReport:
    """What warming prompt prefixes did: states found valid on disk, states computed now, and how long it took."""

    loaded: int = 0
    built: int = 0
    seconds: float = 0.0
    failed: int = 0
    """Prefixes that could not be stored (e.g. a full disk): their questions read them each time."""


class Generation:
    """One running generation. Use as `async with engine.generate(req) as gen: async for text in gen`.

    Entering waits for the model (or raises Busy); leaving stops the worker thread and waits for it, so
    the model is free again before the next generation starts. `result` holds the Finished report.
    With a `time_limit` (seconds from when the model takes it up), an answer still being written then stops
    as if cancelled and reports the reason "time_limit".
    """

    def __init__(self, gate: ModelGate, run: Callable[[threading.Event, Emit, float], Finished],
                 executor: Executor | None = None, time_limit: float = 0.0) -> None:
        self._gate = gate
        self._run = run
        self._executor = executor
        self._time_limit = time_limit
        self._timed_out = False
        self._cancel = threading.Event()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._future: asyncio.Future[Finished] | None = None
        self.result: Finished | None = None

    @property
    def started(self) -> bool:
        """The model was handed this generation (it is no longer waiting in line)."""
        return self._future is not None

    def cancel(self) -> None:
        """Stop after the current token; the iteration then ends with reason "cancelled"."""
        self._cancel.set()

    async def __aenter__(self) -> Generation:
        loop = asyncio.get_running_loop()
        queued_at = time.perf_counter()
        await self._gate.acquire(position_listener())
        queue_ms = (time.perf_counter() - queued_at) * 1000

        def emit(text: str | None) -> None:
            loop.call_soon_threadsafe(self._queue.put_nowait, text)

        try:
            self._future = loop.run_in_executor(self._executor, self._guarded, emit, queue_ms)
        except BaseException:
            self._gate.release()
            raise
        # The gate opens only when the worker thread has really finished.
        self._future.add_done_callback(lambda _: self._gate.release())
        if self._time_limit > 0:
            timer = loop.call_later(self._time_limit, self._time_up)
            self._future.add_done_callback(lambda _: timer.cancel())
        return self

    def _time_up(self) -> None:
        if not self._cancel.is_set():
            _LOGGER.info("an answer ran past max_generation_seconds (%g s) and is being stopped", self._time_limit)
            self._timed_out = True
            self._cancel.set()

    def _finished(self, finished: Finished) -> Finished:
        if self._timed_out and finished.reason == "cancelled":
            return dataclasses.replace(finished, reason="time_limit")
        return finished

    def _guarded(self, emit: Emit, queue_ms: float) -> Finished:
        try:
            return self._run(self._cancel, emit, queue_ms)
        finally:
            emit(None)

    async def __aiter__(self) -> AsyncIterator[str]:
        while (text := await self._queue.get()) is not None:
            yield text
        assert self._future is not None
        self.result = self._finished(await self._future)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._cancel.set()
        if self._future is None:
            return
        try:
            self.result = self._finished(await asyncio.shield(self._future))
        except asyncio.CancelledError:
            raise
        except Exception:
            if exc is None:
                raise
