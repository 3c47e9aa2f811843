"""Conversations kept in memory for the life of the daemon, so a follow-up question sees earlier turns.

Durable history in SQLite replaces this store in a later step; the interface stays the same.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict

from daemon.messages import ChatMessage


class UnknownSession(KeyError):
    pass


class ConversationStore:
    """The newest `capacity` conversations; the least recently used one is forgotten first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._turns: OrderedDict[str, list[ChatMessage]] = OrderedDict()

    def create(self) -> str:
        session = uuid.uuid4().hex
        self._turns[session] = []
        self._evict()
        return session

    def history(self, session: str) -> tuple[ChatMessage, ...]:
        if session not in self._turns:
            raise UnknownSession(session)
        self._turns.move_to_end(session)
        return tuple(self._turns[session])

    def append(self, session: str, *turns: ChatMessage) -> None:
        if session not in self._turns:
            raise UnknownSession(session)
        self._turns[session].extend(turns)
        self._turns.move_to_end(session)

    def _evict(self) -> None:
        while len(self._turns) > self._capacity:
            self._turns.popitem(last=False)
