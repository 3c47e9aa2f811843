"""One model, many callers: a first-come-first-served gate with a bounded waiting line."""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from daemon.messages import Busy, ShuttingDown

OnPosition = Callable[[int], None]
"""Told a waiter's place in line (1 = next to get the model) when it starts waiting and whenever it moves."""


class TooManyGenerations(Exception):
    """A client asked for another generation while it already has its allowance running or waiting."""


@dataclass(eq=False)
class _Waiter:
    future: asyncio.Future[None]
    on_position: OnPosition | None = None
    position: int = 0


@dataclass
class ClientSlots:
    """How many generations each client has running or waiting, so one client cannot fill the line."""

    _active: Counter[str] = field(default_factory=Counter)

    def active(self, client: str) -> int:
        return self._active[client]

    @contextmanager
    def hold(self, client: str, limit: int) -> Iterator[None]:
        """One generation of `client` for the duration of the block; raises TooManyGenerations when it
        already holds `limit` (0: no limit)."""
        if limit and self._active[client] >= limit:
            raise TooManyGenerations(f"{client} already has {self._active[client]} answer(s) running or waiting")
        self._active[client] += 1
        try:
            yield
        finally:
            self._active[client] -= 1
            if not self._active[client]:
                del self._active[client]


class ModelGate:
    """Admits `holders` callers at a time (one for a local model; an upstream server batches several); at most
    `max_waiting` callers wait, later ones get `Busy` at once."""

    def __init__(self, max_waiting: int, holders: int = 1) -> None:
        self._max_waiting = max_waiting
        self._capacity = max(1, holders)
        self._held = 0
        self._closed = False
        self._waiters: deque[_Waiter] = deque()
        self.clients = ClientSlots()

    @property
    def busy(self) -> bool:
        """Every holder's place is taken: the next caller waits."""
        return self._held >= self._capacity

    @property
    def holding(self) -> int:
        return self._held

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.future.done())

    async def acquire(self, on_position: OnPosition | None = None) -> None:
        """Wait for the model. A caller that has to wait is told its place through `on_position` at once and
        again each time it moves up; it is not called once the model is handed over."""
        if self._closed:
            raise ShuttingDown("the daemon is shutting down")
        if self._held < self._capacity and not self._waiters:
            self._held += 1
            return
        if self.waiting >= self._max_waiting:
            raise Busy(f"the model is busy and {self.waiting} request(s) are already waiting")
        waiter = _Waiter(asyncio.get_running_loop().create_future(), on_position)
        self._waiters.append(waiter)
        self._tell_positions()
        try:
            await waiter.future
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled():
                self.release()  # The slot was handed over just as the caller gave up: pass it on.
            else:
                self._waiters.remove(waiter)
                self._tell_positions()
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)  # Ownership moves to the waiter; _held stays the same.
                self._tell_positions()
                return
        self._held = max(0, self._held - 1)

    def _tell_positions(self) -> None:
        position = 0
        for waiter in self._waiters:
            if waiter.future.done():
                continue
            position += 1
            if waiter.position != position:
                waiter.position = position
                if waiter.on_position is not None:
                    waiter.on_position(position)

    def close(self) -> None:
        """Refuse new callers and send every waiter away; the current holder keeps its slot."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_exception(ShuttingDown("the daemon is shutting down"))
