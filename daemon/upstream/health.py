"""The health follower: while the upstream is marked down, ask it every `interval` seconds whether it is back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

_LOGGER = logging.getLogger(__name__)


class HealthFollower:
    """An owned task: `start()` it, and `await stop()` it (cancelled and awaited) before the client closes."""

    def __init__(self, is_down: Callable[[], bool], check: Callable[[], Awaitable[bool]], interval: float) -> None:
        self._is_down, self._check, self._interval = is_down, check, interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._follow(), name="upstream-health")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _follow(self) -> None:
        while True:
            if self._is_down():
                try:
                    await self._check()
                except Exception:  # a bug here must not end the checks: the kiosk would never go back upstream
                    _LOGGER.exception("upstream health check failed unexpectedly")
            await asyncio.sleep(self._interval)
