"""One kiosk screen's side of the voice path: its speech on/off switch, its language, the answer it is having read
aloud, and the voice frames it is sent. Kept apart from the chat protocol so `chat_ws` stays about chat.

The screen's language (which speech model hears its questions, which wake phrase is listened for) is the latest
of: the page's language switch (`language` frame), a `listen` frame's `lang`, and the language of the visitor's
last question, typed or spoken (Chinese when it has Han characters), since a visitor who asks in Chinese on an
English page will most likely speak Chinese next."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from daemon.frames import LANGUAGES, ServerFrame, SpeakingFrame, TranscriptFrame, VoiceFrame
from daemon.knowledge.terms import language as text_language
from daemon.prefill import SpeechPrefill
from daemon.voice_link import VoiceLink

if TYPE_CHECKING:
    from audio.speaker import AnswerSpeech, Sentence

_LOGGER = logging.getLogger(__name__)
_REMOTE = "the microphone and speaker serve only the kiosk's own screen"
_SENTENCE_STATES = ("queued", "started", "finished", "stopped")
_FIRST_VOICE_S = 1.0  # the longest the model pauses for the first sentence's voice


class ScreenVoice:
    def __init__(self, link: VoiceLink | None, local: bool, send: Callable[[ServerFrame], Awaitable[None]],
                 on_wake: Callable[[], Awaitable[None]], yield_model: Callable[[float], None] | None = None,
                 prefill: SpeechPrefill | None = None) -> None:
        self._link = link if local else None
        self._prefill = prefill if self._link is not None else None  # only the device's screen hears speech
        self._local = local
        self._send = send
        self._on_wake = on_wake
        self._yield_model = yield_model
        self.speech = True
        self.language = "en"
        self._answer: AnswerSpeech | None = None
        self._pending: set[asyncio.Task[None]] = set()
        if self._link is not None:
            self._link.attach(self)

    def state(self) -> VoiceFrame:
        if self._link is None:
            detail = _REMOTE if not self._local else "voice is switched off (setting voice)"
            return VoiceFrame(available=False, speech=self.speech, detail=detail, lang=self.language)
        status = self._link.status
        return VoiceFrame(available=status.available, listening=status.listening, speaking=status.speaking,
                          speech=self.speech, detail=status.detail, lang=self.language)

    # ---- frames from the page ----

    async def on_listen(self, on: bool, lang: str | None = None) -> str | None:
        """The microphone button (in `lang`, when the page says); the reason listening cannot start, or None."""
        if lang is not None:
            self._set_language(lang)
        if self._link is None:
            return self.state().detail
        if not on:
            await self._link.stop_listening()
            return None
        await self.barge_in()  # Pressing the microphone while the kiosk talks silences it.
        return self._link.listen(self)

    async def on_language(self, lang: str) -> None:
        """The page's language switch: answered with a voice frame carrying the screen's language."""
        self._set_language(lang)
        await self._send(self.state())

    def on_question(self, text: str) -> None:
        """A question was asked (typed, or a spoken one the page asks): the next one is likely in its language."""
        if self._prefill is not None:
            self._prefill.final(text)  # the answer gets the model now, or the draft of its first clause goes on
        if self._set_language(text_language(text)) and self._link is not None and self._link.status.available:
            self.voice_changed()  # the page learns the new `lang` without waiting for another voice frame

    def _set_language(self, lang: str) -> bool:
        """Whether the language changed; the voice link hears of every change."""
        if lang not in LANGUAGES or lang == self.language:
            return False
        self.language = lang
        if self._link is not None:
            self._link.language_changed(self)
        return True

    async def on_speech(self, on: bool) -> None:
        self.speech = on
        if not on:
            await self.barge_in()
        await self._send(self.state())

    # ---- the answer being written ----

    async def start_answer(self) -> None:
        await self.barge_in()
        if self._link is not None and self.speech:
            self._answer = await self._link.speak(self, self._sentence, self._first_synthesis)

    def piece(self, text: str) -> None:
        if self._answer is not None:
            self._answer.feed(text)

    async def end_answer(self, complete: bool) -> None:
        """The answer is over: speak the rest if it completed, otherwise stop speaking."""
        if self._answer is not None and complete:
            self._answer.finish()
        elif self._answer is not None:
            await self.barge_in()

    async def barge_in(self) -> None:
        """Stop, new question, microphone: the answer being read aloud stops now and its queue is dropped."""
        self._answer = None
        if self._prefill is not None:
            self._prefill.cancel()
        if self._link is not None:
            await self._link.stop_speaking(self)

    async def close(self) -> None:
        if self._link is not None:
            self._link.detach(self)
            await self.barge_in()
        for task in self._pending:
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)
        if self._prefill is not None:
            await self._prefill.close()

    # ---- VoiceScreen: events from the voice link (synchronous, on the loop) ----

    def voice_changed(self) -> None:
        self._post(self.state())

    def heard(self, text: str, final: bool, settled: bool = False) -> None:
        self._post(TranscriptFrame(text, final, settled))
        if self._prefill is not None:  # Reading the question ahead while it is still being said.
            if final:
                self._prefill.final(text)
            else:
                self._prefill.partial(text, settled)

    def wake(self) -> None:
        self._spawn(self._on_wake())

    def _first_synthesis(self, busy: bool) -> None:
        # Speech first: while the first sentence is being voiced the model waits (at most _FIRST_VOICE_S),
        # because on a small board the two share the cores and the visitor is waiting to hear something.
        if self._yield_model is not None:
            self._yield_model(_FIRST_VOICE_S if busy else 0.0)

    def _sentence(self, sentence: Sentence) -> None:
        if sentence.state in _SENTENCE_STATES:
            self._post(SpeakingFrame(sentence.state, sentence.text, _ms(sentence.synth_ms), _ms(sentence.audio_ms)))

    def _post(self, frame: ServerFrame) -> None:
        self._spawn(self._send(frame))

    def _spawn(self, job: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await job
            except (ConnectionError, RuntimeError) as exc:  # The page went away mid-send.
                _LOGGER.debug("voice frame not delivered: %s", exc)

        task = asyncio.create_task(run(), name="screen-voice")
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
