"""Telling systemd how the daemon is doing (sd_notify): status lines, ready, reloading, stopping, watchdog.

`systemd-python` does the talking when it is installed (the `systemd` extra); without it, or outside systemd
(no `NOTIFY_SOCKET`), every call is a no-op, so the daemon runs the same by hand.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable

_LOGGER = logging.getLogger(__name__)


def _load_notify() -> Callable[[str], bool] | None:
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify: Callable[[str], bool] = daemon.notify
    return notify


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._socket = env.get("NOTIFY_SOCKET")
        self._notify = _load_notify() if self._socket else None
        if self._socket and self._notify is None:
            _LOGGER.warning("NOTIFY_SOCKET is set but systemd-python is not installed: systemd will not hear "
                            "that the daemon is ready (pip install 'kioskd[systemd]')")
        self.watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return self._notify is not None

    def send(self, *lines: str) -> None:
        if self._notify is not None and not self._notify("\n".join(lines)):
            _LOGGER.debug("sd_notify %r was not delivered", lines)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd >= 253 wants MONOTONIC_USEC with RELOADING=1 to match the reload to the signal.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}", "STATUS=reloading settings")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def _watchdog_interval(env: dict[str, str] | os._Environ[str]) -> float | None:
    """Seconds between watchdog deadlines (WatchdogSec=), if systemd asked for pings from this process."""
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        seconds = int(usec) / 1_000_000
    except ValueError:
        _LOGGER.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
        return None
    return seconds if seconds > 0 else None
