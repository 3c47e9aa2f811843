"""Kiosk privacy over days: conversations unused for longer than the retention period are deleted."""

from __future__ import annotations

import asyncio
import logging
import time

from daemon.history import History

_LOGGER = logging.getLogger(__name__)

DAY = 86400.0


async def purge_once(history: History, retention_days: float) -> int:
    cutoff = time.time() - retention_days * DAY
    removed = await history.run(lambda store: store.purge_before(cutoff))
    if removed:
        _LOGGER.info("deleted %d conversation(s) unused for %.3g days", removed, retention_days)
    return removed


async def purge_periodically(history: History, retention_days: float) -> None:
    """Purge at start-up and then regularly; a failed purge is logged and tried again next time."""
    if retention_days <= 0:
        return
    # Check often enough that nothing outlives its limit by more than a tenth of it (and at most an hour).
    interval = min(3600.0, retention_days * DAY / 10)
    while True:
        try:
            await purge_once(history, retention_days)
        except Exception:
            _LOGGER.exception("purging old conversations failed")
        await asyncio.sleep(interval)
