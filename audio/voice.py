"""The voice path as one service: microphone -> recognizer, and answers -> voice -> speaker.

Two supervised halves, each brought up (models loaded in threads, devices opened) and, when anything fails or
a device vanishes, torn down and retried with back-off, so a kiosk whose USB speaker was unplugged speaks again
when it is plugged back in. Text chat never waits for any of this. The service reports one `VoiceState` that
the daemon shows on the page and in `/readyz`.

Speech models: `speech_model` (English, and every language without its own) and `speech_model_zh`, each loaded
once on its own thread when the microphone first opens and kept across device losses; a language switch only
picks another of them (see `audio.listener`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from audio.chunker import ChunkerConfig
from audio.io import AudioDeviceError, AudioSink, AudioSource, open_sink, open_source
from audio.listener import DEFAULT_LANGUAGE, Listener, ListenerConfig
from audio.recognizer import RecognizerError, SpeechModel, Transcript
from audio.speaker import AnswerSpeech, Sentence, SentenceEvent, Voices
from audio.synthesizer import Synthesizer, SynthesizerError, VoiceConfig

_LOGGER = logging.getLogger(__name__)
_FAILURES = (AudioDeviceError, RecognizerError, SynthesizerError, OSError, ValueError)
_PART = {"input": "microphone", "output": "speaker"}  # how a problem is named to the page and the operator


@dataclass(frozen=True)
class VoicePathConfig:
    listener: ListenerConfig
    speech_model: Path | None
    voice: Path | None
    speech_model_zh: Path | None = None  # None: speech_model recognizes Chinese too
    voice_zh: Path | None = None
    input: str = "default"
    output: str = "default"
    output_rate: int = 0  # 0: the voice's own rate
    tts_threads: int = 2  # see daemon.settings
    chunker: ChunkerConfig = field(default_factory=ChunkerConfig)
    retry_initial: float = 1.0
    retry_max: float = 60.0


@dataclass(frozen=True)
class VoiceState:
    available: bool = False
    listening: bool = False
    speaking: bool = False
    detail: str | None = "starting"


class VoiceEvents(Protocol):
    def state_changed(self, state: VoiceState) -> None: ...

    def transcript(self, transcript: Transcript) -> None: ...

    def wake(self) -> None: ...


SourceOpener = Callable[[str, int], AudioSource]
SinkOpener = Callable[[str, int], AudioSink]
ModelLoader = Callable[[VoicePathConfig, Path], Awaitable[SpeechModel]]
VoicesLoader = Callable[[VoicePathConfig], Awaitable[Voices]]


async def load_speech_model(config: VoicePathConfig, model_dir: Path) -> SpeechModel:
    rc = config.listener.recognizer
    model = await SpeechModel.load(model_dir, max_active=rc.max_active, beam=rc.beam, lattice_beam=rc.lattice_beam)
    await asyncio.to_thread(model.warm_up, rc.sample_rate)
    return model


def model_dirs(config: VoicePathConfig) -> dict[str, Path]:
    """Each language's speech model directory."""
    assert config.speech_model is not None
    return {"en": config.speech_model, "zh": config.speech_model_zh or config.speech_model}


async def load_voices(config: VoicePathConfig) -> Voices:
    assert config.voice is not None
    default = await Synthesizer.load(VoiceConfig(config.voice, threads=config.tts_threads))
    zh = None
    if config.voice_zh is not None:
        zh = await Synthesizer.load(VoiceConfig(config.voice_zh, threads=config.tts_threads))
    return Voices(default, zh)


class VoiceService:
    def __init__(self, config: VoicePathConfig, events: VoiceEvents, *, source_opener: SourceOpener = open_source,
                 sink_opener: SinkOpener = open_sink, model_loader: ModelLoader = load_speech_model,
                 voices_loader: VoicesLoader = load_voices) -> None:
        self._config = config
        self._events = events
        self._open_source = source_opener
        self._open_sink = sink_opener
        self._load_model = model_loader
        self._load_voices = voices_loader
        self._state = VoiceState()
        self._input_problem: str | None = "starting"
        self._output_problem: str | None = "starting"
        # Failures of one question or one sentence: shown in `detail` until that half works again, while the
        # voice stays available (the device and the models are fine).
        self._passing: dict[str, str] = {}
        self._listener: Listener | None = None
        self._models: dict[Path, SpeechModel] = {}  # by directory: one model serving both languages loads once
        self._language = DEFAULT_LANGUAGE
        self._loaded_voices: Voices | None = None
        self._voices: Voices | None = None
        self._sink: AudioSink | None = None
        self._output_failed = asyncio.Event()
        self._speech: AnswerSpeech | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def state(self) -> VoiceState:
        return self._state

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._supervise("input", self._run_input), name="voice-input"),
                       asyncio.create_task(self._supervise("output", self._run_output), name="voice-output")]

    async def close(self) -> None:
        await self.stop_speaking()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- listening ----

    def listen(self, language: str | None = None) -> str | None:
        """Start capturing a question in `language` (default: the current one); the reason it cannot, or None."""
        if self._listener is None:
            return self._input_problem or "the microphone is not ready"
        self._listener.listen(language)
        self._passed("input")
        return None

    def set_language(self, language: str) -> None:
        """The language whose wake phrase is listened for and whose model hears the next question."""
        self._language = language
        if self._listener is not None:
            self._listener.set_language(language)

    async def stop_listening(self) -> None:
        if self._listener is not None:
            await self._listener.stop_listening()

    def cancel_listening(self) -> None:
        if self._listener is not None:
            self._listener.cancel_listening()

    # ---- speaking ----

    def speak(self, on_event: SentenceEvent,
              on_first_synthesis: Callable[[bool], None] | None = None) -> AnswerSpeech | None:
        """Start speaking a new answer (any previous one must have been stopped); None when the voice is down."""
        if self._voices is None or self._sink is None:
            return None
        speech = AnswerSpeech(self._voices, self._sink, self._config.chunker, self._sentence_events(on_event),
                              on_failure=self._playback_failed, on_first_synthesis=on_first_synthesis,
                              on_sentence_failed=self._sentence_failed)
        self._speech = speech
        return speech

    async def stop_speaking(self) -> None:
        """Barge-in: silence the current answer now and drop what it had queued."""
        speech, self._speech = self._speech, None
        if speech is not None:
            dropped = await speech.stop()
            _LOGGER.info("speech stopped, %.1f s of queued audio dropped", dropped)
        self._publish()

    def is_speaking(self) -> bool:
        return self._speech is not None and self._speech.speaking

    def _sentence_events(self, on_event: SentenceEvent) -> SentenceEvent:
        def relay(sentence: Sentence) -> None:
            on_event(sentence)
            if sentence.state == "started":
                self._passing.pop("output", None)
            self._publish()
        return relay

    def _playback_failed(self, exc: Exception) -> None:
        if isinstance(exc, AudioDeviceError):  # The speaker vanished: reopen it with back-off.
            self._output_failed.set()

    def _sentence_failed(self, exc: Exception) -> None:
        self._passing["output"] = f"speaker: a sentence could not be spoken ({exc})"
        self._publish()

    def _recognition_failed(self, reason: str) -> None:
        self._passing["input"] = f"microphone: the question could not be recognized ({reason})"
        self._publish()

    def _passed(self, half: str) -> None:
        if self._passing.pop(half, None) is not None:
            self._publish()

    # ---- supervision ----

    async def _supervise(self, half: str, run: Callable[[], Awaitable[None]]) -> None:
        delay = self._config.retry_initial
        last_problem = ""
        while True:
            try:
                await run()
                delay = self._config.retry_initial
            except Exception as exc:  # Whatever a device or a model raises, the half is retried, never lost.
                problem = f"{half}: {exc}"
                if problem != last_problem:  # Logged once per distinct problem, not once per retry.
                    # An unexpected type gets its traceback: it is a bug or a library fault worth reading.
                    _LOGGER.warning("voice %s unavailable (retrying with back-off): %s", half, exc,
                                    exc_info=None if isinstance(exc, _FAILURES) else exc)
                    last_problem = problem
                self._set_problem(half, f"{_PART[half]}: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._config.retry_max)

    async def _run_input(self) -> None:
        if self._config.speech_model is None:
            raise RecognizerError("no speech recognition model is configured (setting speech_model)")
        # The device first: failing to open it is cheap, loading the model is not (and is done once).
        source = self._open_source(self._config.input, self._config.listener.recognizer.sample_rate)
        try:
            await source.start()
            models = await self._speech_models()
            relay = _ListenerRelay(self._events, self._publish, self._recognition_failed)
            self._listener = Listener(models, self._config.listener, relay, self.is_speaking, self._language)
            self._set_problem("input", None)
            await self._listener.run(source)
        finally:
            if self._listener is not None:
                self._listener.close()
            self._listener = None
            await source.close()

    async def _speech_models(self) -> dict[str, SpeechModel]:
        """Each language's model; those not loaded yet load now, side by side on their own threads."""
        dirs = model_dirs(self._config)
        missing = [d for d in dict.fromkeys(dirs.values()) if d not in self._models]
        loaded = await asyncio.gather(*(self._load_model(self._config, d) for d in missing), return_exceptions=True)
        for model_dir, result in zip(missing, loaded, strict=True):
            if not isinstance(result, BaseException):
                self._models[model_dir] = result  # kept even if the other failed: a retry loads only that one
        for result in loaded:
            if isinstance(result, BaseException):
                raise result
        return {lang: self._models[d] for lang, d in dirs.items()}

    async def _run_output(self) -> None:
        if self._config.voice is None:
            raise SynthesizerError("no voice is configured (setting voice)")
        if self._loaded_voices is None:
            self._loaded_voices = await self._load_voices(self._config)  # Once: the voices do not change, devices do.
        voices = self._loaded_voices
        sink = self._open_sink(self._config.output, self._config.output_rate or voices.default.sample_rate)
        try:
            await sink.start()
            self._voices, self._sink = voices, sink
            self._output_failed.clear()
            self._set_problem("output", None)
            await self._output_failed.wait()
            raise AudioDeviceError(f"the speaker failed while playing: {self._speech_error()}")
        finally:
            await self.stop_speaking()
            self._voices, self._sink = None, None
            await sink.close()

    def _speech_error(self) -> str:
        return (self._speech.error if self._speech is not None else None) or "unknown error"

    def _set_problem(self, half: str, problem: str | None) -> None:
        if half == "input":
            self._input_problem = problem
        else:
            self._output_problem = problem
        self._publish()

    def _publish(self) -> None:
        problems = [p for p in (self._input_problem, self._output_problem) if p]
        passing = [self._passing[half] for half in sorted(self._passing)]
        state = VoiceState(available=not problems,
                           listening=self._listener is not None and self._listener.listening,
                           speaking=self.is_speaking(), detail="; ".join(problems + passing) or None)
        if state != self._state:
            self._state = state
            self._events.state_changed(state)


class _ListenerRelay:
    """Listener events, passed on to the service's owner; a change of listening republishes the state."""

    def __init__(self, events: VoiceEvents, publish: Callable[[], None], failed: Callable[[str], None]) -> None:
        self._events = events
        self._publish = publish
        self.recognition_failed = failed

    def listening_changed(self, listening: bool) -> None:
        self._publish()

    def transcript(self, transcript: Transcript) -> None:
        self._events.transcript(transcript)

    def wake(self) -> None:
        self._events.wake()
