"""Turning a token's bytes into text that is safe to send: whole UTF-8 characters, stop strings withheld."""

from __future__ import annotations

import codecs
from collections.abc import Iterable


class Utf8Assembler:
    """Buffers the bytes of a multi-byte character split across tokens until it is complete.

    Bytes that can never become a character are replaced (U+FFFD) as they come; the start of a character that
    the answer ends before completing (cut by max_tokens, a stop, a cancel) is dropped at `flush`, so that no
    answer, streamed or stored, ends in U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.dropped = b""
        """The incomplete character's bytes that the last `flush` dropped."""

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data)

    def flush(self) -> str:
        self.dropped = self._decoder.getstate()[0]
        self._decoder.reset()
        return ""


class StopMatcher:
    """Holds back text that might be the start of a stop string; reports when one is complete."""

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Return the text that is safe to emit now."""
        if self.stopped:
            return ""
        self._pending += text
        if not self._stops:
            out, self._pending = self._pending, ""
            return out
        cut = min((i for i in (self._pending.find(s) for s in self._stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        keep = self._longest_partial_stop()
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(out):]
        return out

    def flush(self) -> str:
        out, self._pending = ("" if self.stopped else self._pending), ""
        return out

    def _longest_partial_stop(self) -> int:
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
