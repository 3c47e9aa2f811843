"""One model, many callers: a first-come-first-served gate with a bounded waiting line."""

from __future__ import annotations

import asyncio
from collections import deque

from daemon.messages import Busy, ShuttingDown


class ModelGate:
    """Admits one holder at a time; at most `max_waiting` callers wait, later ones get `Busy` at once."""

    def __init__(self, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._held = False
        self._closed = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def busy(self) -> bool:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    async def acquire(self) -> None:
        if self._closed:
            raise ShuttingDown("the daemon is shutting down")
        if not self._held and not self._waiters:
            self._held = True
            return
        if self.waiting >= self._max_waiting:
            raise Busy(f"the model is busy and {self.waiting} request(s) are already waiting")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # The slot was handed over just as the caller gave up: pass it on.
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # Ownership moves to the waiter; _held stays True.
                return
        self._held = False

    def close(self) -> None:
        """Refuse new callers and send every waiter away; the current holder keeps its slot."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ShuttingDown("the daemon is shutting down"))
