"""The model states of recent conversations, so switching back to one reads only its new tokens."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any


class ContextCache:
    """The model states of the most recently used conversations, least recently used dropped first.

    Only the engine thread touches it. The live context always belongs to `active`; switching to another
    conversation saves the live one and restores the other's, so its next turn reads only the new tokens.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._saved: OrderedDict[str, Any] = OrderedDict()
        self.active = ""

    def switch(self, llm: Any, conversation: str) -> None:
        if conversation == self.active or self._capacity == 0:
            self.active = conversation
            return
        from daemon.llama_adapter import SavedContext

        saved = self._saved.pop(conversation, None)
        if llm.n_tokens > 0:
            # Make room first, so no more than `capacity` states (tens of MB each) ever exist at once.
            while len(self._saved) >= self._capacity:
                self._saved.popitem(last=False)
            self._saved[self.active] = SavedContext(llm)
        if saved is not None:
            saved.restore(llm)
        # Without a saved state the live context stays: it still shares the system prompt's tokens.
        self.active = conversation
