"""The visits of the kiosk screens and what is kept of their conversations (setting `history_mode`):

- `keep`: conversations stay in the history (until `retention_days`); only the visit's own screen and the
  operator can reach them, and after the visit only the operator.
- `visit`: when a visit ends, its conversations are deleted from the history database (their text overwritten
  in the file, see HistoryStore.erase); at start-up every stored conversation is, since no visit survives a
  restart.
- `off`: the history is an in-memory database (nothing is written to disk) and a visit's conversations are
  dropped when it ends.

In every mode the model's saved state (KV cache) of an ended visit's conversations is forgotten.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from daemon.context_cache import ContextCache
from daemon.history import History
from daemon.visits.tokens import new_token, token_key

_LOGGER = logging.getLogger(__name__)

MODES = ("keep", "visit", "off")
Forget = Callable[[Collection[str]], None]


class VisitKeeper:
    def __init__(self, mode: str, history: History, forget: Forget = ContextCache.forget_everywhere) -> None:
        if mode not in MODES:
            raise ValueError(f"history_mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode
        self._history = history
        self._forget = forget
        self._visits: dict[bytes, set[str]] = {}  # token key -> the sessions created in that visit

    def begin(self) -> str:
        """A new visit; its token."""
        token = new_token()
        self._visits[token_key(token)] = set()
        return token

    def sessions(self, token: str | None) -> frozenset[str] | None:
        """The sessions of a visit that is going on; None for no token, an ended one or one never given."""
        found = self._visits.get(token_key(token)) if token else None
        return None if found is None else frozenset(found)

    def owns(self, token: str, session: str) -> bool:
        return session in self._visits.get(token_key(token), ())

    def joined(self, token: str, session: str) -> None:
        """A session was created in this visit."""
        if (found := self._visits.get(token_key(token))) is not None:
            found.add(session)

    async def end(self, token: str) -> int:
        """End a visit: its token stops working, and (modes visit and off) its conversations are deleted.
        Returns how many were deleted."""
        sessions = self._visits.pop(token_key(token), set())
        if not sessions:
            return 0
        await self.forget(sessions)
        if self.mode == "keep":
            return 0
        try:
            removed = await self._history.run(lambda store: store.erase(sessions))
        except Exception:
            # They stay until the next start-up, which deletes every conversation in this mode.
            _LOGGER.exception("could not delete the %d conversation(s) of an ended visit", len(sessions))
            return 0
        _LOGGER.info("a visit ended: %d conversation(s) deleted (history_mode %s)", removed, self.mode)
        return removed

    async def forget(self, sessions: Collection[str]) -> None:
        """Drop the model's saved state of these conversations (off the loop: the engine may hold the cache)."""
        await asyncio.to_thread(self._forget, frozenset(sessions))

    async def start(self) -> None:
        """At start-up, mode visit: no visit survives a restart, so no stored conversation may either."""
        if self.mode == "visit":
            removed = await self._history.run(lambda store: store.erase(None))
            if removed:
                _LOGGER.info("deleted %d conversation(s) of visits that ended when kioskd stopped", removed)
