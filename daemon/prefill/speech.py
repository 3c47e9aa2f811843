"""One screen's policy for reading a spoken question ahead: which partial transcripts to prefill, and when.

The recognizer sends partial transcripts while the visitor speaks. Reading each into the model as it comes would
keep the model busy with words about to be revised, so while a partial grows, all of it but its last word (the
one still being spoken) is prefilled once that part has gained `min_new_words` words over what was prefilled
last; a partial that is stable (unchanged for `stable_s`: the visitor has probably finished), or that the
recognizer marks settled (all the words so far, at a pause: audio.recognizer), is drafted, its answer's first
clause written ahead (daemon.prefill.draft). One prefill runs at a time, on the owner task; a
newer text waits for it and replaces any older text still waiting, and a newer partial stops a draft of an older
one. A final transcript or a question ends it all, so the answer gets the model without waiting, except a draft
of that very text, which goes on: the answer starts with what it wrote.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

_LOGGER = logging.getLogger(__name__)

Prefill = Callable[[str, bool], Awaitable[object]]
"""Reads a question (a partial transcript) into the model ahead of time, drafting its answer's first clause when
the flag is set; its result is only logged."""

# A word: a run of non-space, non-CJK characters, or one CJK character (Chinese has no spaces between words).
_CJK = "\u3400-\u9fff\uf900-\ufaff"
_WORDS = re.compile(rf"[{_CJK}]|[^\s{_CJK}]+")

STABLE_S = 0.15
MIN_NEW_WORDS = 2


def words(text: str) -> int:
    return len(_WORDS.findall(text))


def head(text: str) -> str:
    """All of `text` but its last word, without the space before it."""
    found = list(_WORDS.finditer(text))
    return text[: found[-1].start()].rstrip() if found else ""


class SpeechPrefill:
    """Fed a screen's transcripts (`partial`, `final`), calls `prefill(text)` for the partials worth reading
    ahead. Use on the event loop only; `close` when the screen goes."""

    def __init__(self, prefill: Prefill, *, stable_s: float | None = STABLE_S,
                 min_new_words: int = MIN_NEW_WORDS) -> None:
        """`stable_s` None: only settled partials are drafted (a recognizer that settles its words at pauses:
        a partial merely unchanged for a while still lags the speech, and drafting it takes the cores the
        recognizer needs)."""
        self._prefill = prefill
        self._stable_s = stable_s
        self._min_new_words = min_new_words
        self._heard = ""  # the latest partial
        self._done = ""  # the last text handed to `prefill` in this utterance
        self._done_draft = False  # and whether it was handed to be drafted
        self._want: tuple[str, bool] | None = None  # the text to prefill next, and whether to draft it
        self._drafting: str | None = None  # the text of the draft running now
        self._wake = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._owner: asyncio.Task[None] | None = None
        self._running: asyncio.Future[object] | None = None
        self._closed = False
        self.last: object = None
        """What the last prefill that completed returned (for logs and tests)."""

    @property
    def in_flight(self) -> bool:
        return self._running is not None and not self._running.done()

    def partial(self, text: str, settled: bool = False) -> None:
        """`settled`: the recognizer says these are all the words so far, at a pause (audio.recognizer): the
        answer is drafted at once instead of after `stable_s`."""
        text = text.strip()
        if self._closed or not text or (text == self._heard and not settled):
            return
        _LOGGER.debug("%s %r", "settled" if settled else "partial", text)
        changed, self._heard = text != self._heard, text
        self._stop_timer()
        if changed and self._drafting is not None and self._running is not None:
            self._running.cancel()  # still speaking: the draft answers words about to change
        if settled:
            if not self._handed(text, draft=True):
                self._request(text, draft=True)
            return
        if self._stable_s is not None:
            self._timer = asyncio.get_running_loop().call_later(self._stable_s, self._stable, text)
        growing = head(text)
        if growing.startswith(self._done) and words(growing) - words(self._done) >= self._min_new_words:
            self._request(growing, draft=False)

    def final(self, text: str = "") -> None:
        """The utterance is over (a final transcript, or the question asked): drop what waits and stop what
        runs, unless it drafts the answer to `text` itself; that draft goes on, out of reach of `cancel`."""
        _LOGGER.debug("final %r (drafting %r, in flight %s)", text, self._drafting, self.in_flight)
        if self._drafting is not None and self._drafting == text.strip():
            self._running = self._drafting = None  # the owner still awaits it; only close() stops it now
        self.cancel()

    def cancel(self) -> None:
        self._stop_timer()
        self._want = None
        self._heard = self._done = ""
        self._done_draft = False
        if self._running is not None:
            self._running.cancel()

    async def close(self) -> None:
        self._closed = True
        self.cancel()
        tasks = [t for t in (self._owner, self._running) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _stable(self, text: str) -> None:
        self._timer = None
        if text == self._heard and not self._handed(text, draft=True):
            self._request(text, draft=True)

    def _handed(self, text: str, draft: bool) -> bool:
        """Whether `text` was handed to `prefill` last already, as a draft or (`draft` False) at all."""
        return text == self._done and (self._done_draft or not draft)

    def _request(self, text: str, *, draft: bool) -> None:
        self._want = (text, draft)
        self._wake.set()
        if self._owner is None or self._owner.done():
            self._owner = asyncio.create_task(self._own(), name="speech-prefill")

    async def _own(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            want, self._want = self._want, None
            if want is None or self._handed(*want):
                continue
            text, draft = want
            self._done, self._done_draft = text, draft
            _LOGGER.debug("%s %r", "drafting" if draft else "prefilling", text)
            running = self._running = asyncio.ensure_future(self._prefill(text, draft))
            self._drafting = text if draft else None
            try:
                await asyncio.wait({running})  # a cancelled prefill ends the wait, not the owner
            finally:
                running.cancel()  # only does anything when the owner itself is cancelled (close)
                if self._running is running:
                    self._running = self._drafting = None
            self._settled(text, running)

    def _settled(self, text: str, running: asyncio.Future[object]) -> None:
        if running.cancelled():
            _LOGGER.debug("prefill of %d words cancelled", words(text))
        elif (exc := running.exception()) is not None:
            _LOGGER.warning("prefill failed (the answer reads the whole question): %s", exc, exc_info=exc)
        else:
            self.last = running.result()
            _LOGGER.debug("prefilled %d words: %s", words(text), self.last)
