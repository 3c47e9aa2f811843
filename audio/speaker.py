"""Speaks one answer while the model is still writing it.

Pieces of the answer go in as they arrive; the chunker cuts sentences (or an early clause); each sentence is
synthesized in the synthesizer's worker thread as soon as it is complete, while the previous one plays. Two
tasks, one owner: `AnswerSpeech` creates them and `stop()`/`wait()` cancel or await them.

Events per sentence: `queued` (the text is complete and waits for its voice), `started` (its first sample went
to the speaker), `finished` (it was played out), `stopped` (barge-in dropped it, or the voice failed on it and
it was skipped); then `done` (with no text) once the whole answer has been spoken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from audio.chunker import ChunkerConfig, SentenceChunker
from audio.pcm import AudioChunk

_LOGGER = logging.getLogger(__name__)

SentenceState = Literal["queued", "started", "finished", "stopped", "done"]


@dataclass(frozen=True)
class Sentence:
    """One sentence's progress; `started` carries how long its synthesis took and how long it sounds."""

    state: SentenceState
    text: str
    synth_ms: float | None = None
    audio_ms: float | None = None


SentenceEvent = Callable[[Sentence], None]
_AHEAD = 2  # sentences synthesized ahead of the one playing: enough to hide synthesis, little to drop on barge-in


class SpeechSynthesizer(Protocol):
    sample_rate: int

    async def synthesize(self, text: str) -> AudioChunk: ...


class SpeechSink(Protocol):
    async def play(self, chunk: AudioChunk) -> None: ...

    async def drain(self) -> None: ...

    def stop_now(self) -> float: ...


@dataclass(frozen=True)
class Voices:
    """The voice for each language; Chinese sentences use `zh` when there is one, everything else `default`."""

    default: SpeechSynthesizer
    zh: SpeechSynthesizer | None = None

    def for_text(self, text: str) -> SpeechSynthesizer:
        if self.zh is not None and _mostly_cjk(text):
            return self.zh
        return self.default


def _mostly_cjk(text: str) -> bool:
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk * 2 >= len(text.strip() or " ")


@dataclass(frozen=True)
class SpeechTimes:
    """Monotonic times of the first sentence (None until it happens), for the voice benchmark and the logs."""

    first_queued: float | None = None
    first_started: float | None = None


class AnswerSpeech:
    """One answer being spoken. `feed()` and `finish()` are cheap and never wait; `stop()` is barge-in."""

    def __init__(self, voices: Voices, sink: SpeechSink, chunker: ChunkerConfig, on_event: SentenceEvent,
                 on_failure: Callable[[Exception], None] | None = None,
                 on_first_synthesis: Callable[[bool], None] | None = None,
                 on_sentence_failed: Callable[[Exception], None] | None = None) -> None:
        self._voices = voices
        self._sink = sink
        self._chunker = SentenceChunker(chunker)
        self._on_event = on_event
        self._on_failure = on_failure
        self._on_sentence_failed = on_sentence_failed
        self._on_first_synthesis = on_first_synthesis
        self._texts: asyncio.Queue[str | None] = asyncio.Queue()
        self._audio: asyncio.Queue[tuple[str, AudioChunk, float] | None] = asyncio.Queue(maxsize=_AHEAD)
        self._playing: str | None = None
        self._stopped = False
        self.times = SpeechTimes()
        self.error: str | None = None
        self._done = False
        self._tasks = (asyncio.create_task(self._synthesize_all(), name="speech-synthesis"),
                       asyncio.create_task(self._play_all(), name="speech-playback"))

    @property
    def speaking(self) -> bool:
        """Audio of this answer has started and the answer is not over: the kiosk is talking."""
        return self.times.first_started is not None and not self._done and not self._stopped

    def feed(self, piece: str) -> None:
        if not self._stopped:
            for chunk in self._chunker.feed(piece):
                self._queue(chunk.text)

    def finish(self) -> None:
        """The answer is complete: speak what is left, then end."""
        if not self._stopped:
            for chunk in self._chunker.flush():
                self._queue(chunk.text)
            self._texts.put_nowait(None)

    async def wait(self) -> None:
        """Until everything queued has been spoken (or the speech was stopped)."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> float:
        """Barge-in: drop the sentences not yet spoken and silence the speaker now; returns seconds dropped."""
        if self._stopped:
            return 0.0
        self._stopped = True
        dropped = self._sink.stop_now()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._playing is not None:
            self._emit("stopped", self._playing)
        return dropped

    def _queue(self, text: str) -> None:
        if self.times.first_queued is None:
            self.times = SpeechTimes(first_queued=time.monotonic())
        self._emit("queued", text)
        self._texts.put_nowait(text)

    async def _synthesize_all(self) -> None:
        first = True
        while (text := await self._texts.get()) is not None:
            began = time.perf_counter()
            try:
                audio = await self._synthesize(text, first)
            except Exception as exc:  # One sentence the voice cannot say (odd text, a Piper fault): the next may work.
                self._sentence_failed(text, exc)
                continue
            first = False
            if audio.frames:
                await self._audio.put((text, audio, (time.perf_counter() - began) * 1000))
        await self._audio.put(None)

    def _sentence_failed(self, text: str, exc: Exception) -> None:
        if self.error is None:  # Once per answer: a voice that fails on every sentence would flood the log.
            _LOGGER.error("speech synthesis failed on %r; that sentence is skipped: %s", text[:60], exc, exc_info=exc)
        self.error = str(exc)
        self._emit("stopped", text)
        if self._on_sentence_failed is not None:
            self._on_sentence_failed(exc)

    async def _synthesize(self, text: str, first: bool) -> AudioChunk:
        """The first sentence is the one the visitor waits for: the owner may give it the CPU meanwhile."""
        hook = self._on_first_synthesis if first else None
        if hook is not None:
            hook(True)
        try:
            return await self._voices.for_text(text).synthesize(text)
        finally:
            if hook is not None:
                hook(False)

    async def _play_all(self) -> None:
        try:
            while (item := await self._audio.get()) is not None:
                await self._play(*item)
            self._done = True
            self._emit("done", "")
        except Exception as exc:  # The speaker failed (unplugged?): the owner reopens it.
            self._done = True
            _LOGGER.error("playback failed: %s", exc)
            self.error = str(exc)
            if self._playing is not None:
                self._emit("stopped", self._playing)
                self._playing = None
            if self._on_failure is not None:
                self._on_failure(exc)

    async def _play(self, text: str, audio: AudioChunk, synth_ms: float) -> None:
        self._playing = text
        if self.times.first_started is None:
            self.times = SpeechTimes(self.times.first_queued, time.monotonic())
        self._emit("started", text, synth_ms, audio.seconds * 1000)
        await self._sink.play(audio)
        await self._sink.drain()
        self._playing = None
        self._emit("finished", text)

    def _emit(self, state: SentenceState, text: str, synth_ms: float | None = None,
              audio_ms: float | None = None) -> None:
        try:
            self._on_event(Sentence(state, text, synth_ms, audio_ms))
        except Exception:  # A listener's bug must not stop the voice.
            _LOGGER.exception("sentence event handler failed")
