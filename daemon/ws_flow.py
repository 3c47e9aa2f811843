"""Flow control for one kiosk WebSocket: the frame rate a client may send, and `queued` reports while it waits."""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections.abc import Awaitable, Callable

from daemon.frames import QueuedFrame, ServerFrame

QUIET_SECONDS = 1.0
"""A flood ends once the client has gone this long without a dropped frame."""


class Verdict(enum.Enum):
    ACCEPT = "accept"
    WARN = "warn"
    """Dropped, and the first drop of a flood: tell the client once."""
    DROP = "drop"
    CLOSE = "close"
    """Still flooding after `flood_seconds`: close the connection (1008)."""


class FrameRate:
    """A token bucket per connection: `rate` frames per second, bursts of twice that."""

    def __init__(self, rate: float, flood_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._flood_seconds = rate, 2 * rate, flood_seconds
        self._clock = clock
        self._tokens = self._burst
        self._at = clock()
        self._flood_since: float | None = None
        self._last_drop = -math.inf

    def admit(self) -> Verdict:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._flood_since is not None and now - self._last_drop >= QUIET_SECONDS:
            self._flood_since = None
        if self._tokens >= 1:
            self._tokens -= 1
            return Verdict.ACCEPT
        self._last_drop = now
        if self._flood_since is None:
            self._flood_since = now
            return Verdict.WARN
        return Verdict.CLOSE if now - self._flood_since >= self._flood_seconds else Verdict.DROP


class QueueReporter:
    """Sends a client `queued` frames while its question waits for the model, only ever the latest place.

    `update` is the gate's synchronous callback; a task of its own (started on the first update) does the
    sending. `stop` (when the model takes the question up) guarantees no `queued` frame follows the answer's
    first token; `aclose` cancels and awaits the task.
    """

    def __init__(self, send: Callable[[ServerFrame], Awaitable[None]]) -> None:
        self._send = send
        self._position = 0
        self._changed = asyncio.Event()
        self._stopped = False
        self._task: asyncio.Task[None] | None = None

    def update(self, position: int) -> None:
        if self._stopped:
            return
        self._position = position
        self._changed.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ws-queue-position")

    def stop(self) -> None:
        self._stopped = True
        self._changed.set()

    async def aclose(self) -> None:
        self.stop()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._stopped:
                return
            await self._send(QueuedFrame(self._position))
