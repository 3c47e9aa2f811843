"""The microphone side of the voice path: decides what each block of audio is for.

The microphone is read all the time. While nobody asked to be heard, blocks go to the wake-phrase spotter (when
a wake phrase is set) and nowhere else. After the microphone button or the wake phrase, blocks go to a fresh
utterance recognizer until its endpointer ends the question. While the kiosk itself is speaking, the
microphone is half-duplex by default: without echo cancellation it would hear the answer's own words, so only
the wake phrase is listened for (a visitor can still interrupt), never a question.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from audio.io import AudioDeviceError, AudioSource
from audio.pcm import AudioChunk
from audio.recognizer import RecognizerConfig, SpeechModel, Transcript, UtteranceRecognizer, WakeWordSpotter

_LOGGER = logging.getLogger(__name__)


class ListenerEvents(Protocol):
    def listening_changed(self, listening: bool) -> None: ...

    def transcript(self, transcript: Transcript) -> None: ...

    def wake(self) -> None: ...

    def recognition_failed(self, reason: str) -> None: ...


@dataclass(frozen=True)
class ListenerConfig:
    recognizer: RecognizerConfig
    wake_phrase: str = ""
    half_duplex: bool = True


class Listener:
    """Owns nothing long-lived but its state: `run()` is driven (and cancelled) by the voice service."""

    def __init__(self, model: SpeechModel, config: ListenerConfig, events: ListenerEvents,
                 is_speaking: Callable[[], bool]) -> None:
        self._model = model
        self._config = config
        self._events = events
        self._is_speaking = is_speaking
        self._utterance: UtteranceRecognizer | None = None
        # One thread runs every Vosk call of this microphone, in order: the spotter and each utterance.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vosk")
        self._spotter = (WakeWordSpotter(model, config.wake_phrase, executor=self._executor)
                         if config.wake_phrase else None)

    @property
    def listening(self) -> bool:
        return self._utterance is not None

    def listen(self) -> None:
        """Start capturing one spoken question (the microphone button, or after the wake phrase)."""
        if self._utterance is None:
            self._utterance = UtteranceRecognizer(self._model, self._config.recognizer, executor=self._executor)
            self._events.listening_changed(True)

    async def stop_listening(self) -> None:
        """The visitor released the button: what was said so far is the question."""
        if self._utterance is not None:
            utterance, self._utterance = self._utterance, None
            self._events.listening_changed(False)
            self._events.transcript(await utterance.finish("stopped"))

    def cancel_listening(self) -> None:
        """Drop the utterance without a transcript (barge-in by a typed question, device loss)."""
        if self._utterance is not None:
            self._utterance = None
            self._events.listening_changed(False)

    def close(self) -> None:
        self.cancel_listening()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def run(self, source: AudioSource) -> None:
        """Read `source` until it fails (AudioDeviceError propagates) or this task is cancelled."""
        while True:
            try:
                chunk = await source.read()
            except EOFError:
                _LOGGER.info("audio input ended; the voice path hears nothing more from it")
                self.cancel_listening()
                await asyncio.Event().wait()  # A file source is done; wait to be cancelled.
            await self._dispatch(chunk)

    async def _dispatch(self, chunk: AudioChunk) -> None:
        speaking = self._is_speaking()
        if self._utterance is not None and not (speaking and self._config.half_duplex):
            await self._feed_utterance(self._utterance, chunk)
        elif self._spotter is not None and (self._utterance is None or speaking) and await self._spotter.feed(chunk):
            _LOGGER.info("wake phrase heard%s", " while speaking" if speaking else "")
            self._events.wake()

    async def _feed_utterance(self, utterance: UtteranceRecognizer, chunk: AudioChunk) -> None:
        try:
            transcripts = await utterance.feed(chunk)
        except Exception as exc:  # Vosk failed on this question: drop it, but the microphone and model go on.
            self._recognition_failed(utterance, exc)
            return
        for transcript in transcripts:
            if utterance is not self._utterance:
                return  # Cancelled while the recognizer thread worked on this block.
            if transcript.final:
                self._utterance = None
                self._events.listening_changed(False)
            self._events.transcript(transcript)

    def _recognition_failed(self, utterance: UtteranceRecognizer, exc: Exception) -> None:
        _LOGGER.error("speech recognition failed mid-question; the question is dropped: %s", exc, exc_info=exc)
        utterance.discard()
        if utterance is self._utterance:
            self._utterance = None
            self._events.listening_changed(False)
            # A final (empty) transcript, so the screen that asked stops waiting for one.
            self._events.transcript(Transcript("", final=True, reason="failed"))
        self._events.recognition_failed(str(exc))


__all__ = ["AudioDeviceError", "Listener", "ListenerConfig", "ListenerEvents"]
