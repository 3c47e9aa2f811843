"""Logging set-up: the journal (with structured fields) under systemd, human-readable lines on stderr otherwise.

Log calls may pass journal fields in `extra` with upper-case names (SESSION_ID, REQUEST_ID, TTFT_MS, ...): the
journal stores them as fields (`journalctl -u kioskd -o verbose`), stderr shows only the message.
"""

from __future__ import annotations

import logging
import os
import sys


def configure(level: str) -> None:
    handler = _journal_handler() or logging.StreamHandler(sys.stderr)
    if isinstance(handler, logging.StreamHandler):
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _journal_handler() -> logging.Handler | None:
    """The journal's own handler when systemd started us with stderr connected to the journal."""
    if not os.environ.get("JOURNAL_STREAM"):
        return None
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None  # stderr still reaches the journal, as plain lines.
    handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER="kioskd")
    return handler
