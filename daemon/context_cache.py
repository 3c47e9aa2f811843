"""The model states of recent conversations, so switching back to one reads only its new tokens."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Collection
from typing import Any, ClassVar

from daemon.speculative import RecentAnswers

DRAFT = "\0draft"
"""The key of a conversation that does not exist yet: a screen's first question read ahead while the visitor
speaks (daemon.prefill). Its live state is never saved; the next conversation without a saved state of its own
simply continues from it, so the question it becomes reads only what changed. (No session id holds a NUL.)"""


class ContextCache:
    """The model states of the most recently used conversations, least recently used dropped first.

    Only the engine thread switches. The live context always belongs to `active`; switching to another
    conversation saves the live one and restores the other's, so its next turn reads only the new tokens.
    A DRAFT live state is never saved (see DRAFT). `forget` (any thread) drops a deleted conversation's saved
    state at once, and keeps its live state from ever being saved; `forget_everywhere` does so in every cache of
    the process (the engine's own), so the conversation store needs no handle on the engine.
    """

    _caches: ClassVar[weakref.WeakSet[ContextCache]] = weakref.WeakSet()

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._saved: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._live_forgotten = False
        self.active = ""
        self.answers = RecentAnswers()
        """Recent answers' tokens, proposed from by speculative decoding: forgotten with their conversation."""
        ContextCache._caches.add(self)

    @classmethod
    def forget_everywhere(cls, conversations: Collection[str]) -> None:
        for cache in list(cls._caches):
            cache.forget(conversations)

    def forget(self, conversations: Collection[str]) -> None:
        self.answers.forget(conversations)
        with self._lock:
            for conversation in conversations:
                self._saved.pop(conversation, None)
            if self.active and self.active in conversations:
                self._live_forgotten = True

    def saved(self) -> list[str]:
        """The conversations whose state is kept, oldest first."""
        with self._lock:
            return list(self._saved)

    def switch(self, llm: Any, conversation: str) -> None:
        with self._lock:
            self._switch(llm, conversation)

    def _switch(self, llm: Any, conversation: str) -> None:
        if conversation == self.active or self._capacity == 0:
            self.active = conversation
            return
        from daemon.llama_adapter import SavedContext

        saved = self._saved.pop(conversation, None)
        if llm.n_tokens > 0 and not self._live_forgotten and self.active != DRAFT:
            # Make room first, so no more than `capacity` states (tens of MB each) ever exist at once.
            while len(self._saved) >= self._capacity:
                self._saved.popitem(last=False)
            self._saved[self.active] = SavedContext(llm)
        self._live_forgotten = False
        if saved is not None:
            saved.restore(llm)
        # Without a saved state the live context stays: it still shares the system prompt's tokens.
        self.active = conversation
