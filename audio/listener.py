"""The microphone side of the voice path: decides what each block of audio is for.

The microphone is read all the time. While nobody asked to be heard, blocks go to the wake-phrase spotter (when
a wake phrase is set) and nowhere else. After the microphone button or the wake phrase, blocks go to a fresh
utterance recognizer until its endpointer ends the question. While the kiosk itself is speaking, the
microphone is half-duplex by default: without echo cancellation it would hear the answer's own words, so only
the wake phrase is listened for (a visitor can still interrupt), never a question.

Bilingual kiosks: one setup per language (its speech model and its wake-phrase spotter), all loaded up front.
The screen's language picks the setup: a switch applies to the next utterance (one being heard keeps its model)
and to the wake phrase at once, and never loads anything. Only the current language's wake phrase is listened
for: a second spotter would double the Vosk work on a microphone that runs all the time, on cores the chat model
needs, and the welcome screen shows the phrase of the page's language, which is the one heard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from audio.io import AudioDeviceError, AudioSource
from audio.pcm import AudioChunk
from audio.recognizer import RecognizerConfig, SpeechModel, Transcript, UtteranceRecognizer, WakeWordSpotter

_LOGGER = logging.getLogger(__name__)
LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"


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
    wake_phrase_zh: str = ""  # empty: the (English) wake_phrase, heard with the English model, in Chinese too


class Listener:
    """Owns nothing long-lived but its state: `run()` is driven (and cancelled) by the voice service.

    `models` maps a language to its speech model; a language without one uses the English (default) model."""

    def __init__(self, models: Mapping[str, SpeechModel], config: ListenerConfig, events: ListenerEvents,
                 is_speaking: Callable[[], bool], language: str = DEFAULT_LANGUAGE) -> None:
        default = models[DEFAULT_LANGUAGE]
        self._models = {lang: models.get(lang, default) for lang in LANGUAGES}
        self._config = config
        self._events = events
        self._is_speaking = is_speaking
        self._utterance: UtteranceRecognizer | None = None
        # One thread runs every Vosk call of this microphone, in order: the spotters and each utterance.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vosk")
        self._spotters = self._make_spotters(config)
        self._language = language if language in LANGUAGES else DEFAULT_LANGUAGE

    def _spotter(self, model: SpeechModel, phrase: str) -> WakeWordSpotter:
        """A spotter that follows the same voice-activity detector as the questions."""
        rec = self._config.recognizer
        return WakeWordSpotter(model, phrase, speech_threshold_dbfs=rec.speech_threshold_dbfs, vad=rec.vad,
                               vad_threshold=rec.vad_threshold, vad_margin_db=rec.vad_margin_db,
                               executor=self._executor)

    def _make_spotters(self, config: ListenerConfig) -> dict[str, WakeWordSpotter | None]:
        english = self._spotter(self._models["en"], config.wake_phrase) if config.wake_phrase else None
        # Without a Chinese phrase the English one stays the phrase, with the model whose vocabulary it is in.
        chinese = self._spotter(self._models["zh"], config.wake_phrase_zh) if config.wake_phrase_zh else english
        return {"en": english, "zh": chinese}

    @property
    def language(self) -> str:
        return self._language

    def model(self, language: str | None = None) -> SpeechModel:
        """The speech model that questions in `language` (default: the current one) are recognized with."""
        return self._models[language if language in LANGUAGES else self._language]

    def set_language(self, language: str) -> None:
        """The wake phrase and the next utterance follow `language`; an utterance being heard keeps its model."""
        if language not in LANGUAGES or language == self._language:
            return
        old = self._spotters[self._language]
        self._language = language
        if old is not None and old is not self._spotters[language]:
            old.reset()  # What it heard of a phrase in the old language must not count later.
        _LOGGER.info("speech recognition language: %s", language)

    @property
    def listening(self) -> bool:
        return self._utterance is not None

    def listen(self, language: str | None = None) -> None:
        """Start capturing one spoken question (the microphone button, or after the wake phrase), in `language`
        (default: the current one; the wake phrase stays the current language's)."""
        if self._utterance is None:
            model = self.model(language)
            _LOGGER.info("listening for a question in %s (speech model %s)",
                         language if language in LANGUAGES else self._language, model.model_dir)
            self._utterance = UtteranceRecognizer(model, self._config.recognizer, executor=self._executor)
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
        spotter = self._spotters[self._language]
        if self._utterance is not None and not (speaking and self._config.half_duplex):
            await self._feed_utterance(self._utterance, chunk)
        elif spotter is not None and (self._utterance is None or speaking) and await spotter.feed(chunk):
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


__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "AudioDeviceError", "Listener", "ListenerConfig", "ListenerEvents"]
