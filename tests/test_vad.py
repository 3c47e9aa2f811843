"""The Silero VAD adapter (`audio.vad`) and the endpointer's Silero mode, on real Silero and generated audio:
silence, a tone and pink noise are not speech, espeak-ng speech is; the hysteresis; chunk sizes and resets do
not change the decisions; the pre-roll gives the recognizer the audio just before speech."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from audio.endpointing import PREROLL_S, Endpointer, PreRoll
from audio.pcm import AudioChunk, silence
from audio.vad import WINDOW_S, Hysteresis, SileroVad
from tests.speech import blocks, concat, pause, read_wav, speech_span, spoken, spoken_wav

QUESTION = "버스 어디예요"


def samples(values: np.ndarray) -> AudioChunk:
    return AudioChunk(np.clip(np.rint(values), -32768, 32767).astype("<i2").tobytes(), 16000)


def tone(seconds: float, hz: float = 440.0, amplitude: float = 6000.0) -> AudioChunk:
    return samples(amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * 16000)) / 16000))


def pink(seconds: float, rms: float = 3000.0, seed: int = 0) -> AudioChunk:
    """1/f noise (an air conditioner, a fan): white noise shaped in the frequency domain."""
    white = np.random.default_rng(seed).normal(0.0, 1.0, round(seconds * 16000))
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(white.size, 1 / 16000)
    spectrum[1:] /= np.sqrt(freqs[1:])
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, white.size)
    return samples(noise * rms / noise.std())


def endpointer(**overrides: Any) -> Endpointer:
    settings: dict[str, Any] = dict(trailing_silence_s=0.4, max_utterance_s=15.0, no_speech_timeout_s=3.0)
    return Endpointer(16000, threshold_dbfs=-45.0, **{"vad": "silero", **settings, **overrides})


@pytest.mark.parametrize(
    ("name", "audio"),
    [("digital silence", silence(2.0, 16000)), ("a quiet room", pause(2.0)), ("a tone", tone(2.0)),
     ("pink noise", pink(2.0))],
)
def test_silence_a_tone_and_pink_noise_are_not_speech(name: str, audio: AudioChunk) -> None:
    vad = SileroVad()
    probabilities = vad.push(audio.pcm)
    assert len(probabilities) == audio.frames // 512 and max(probabilities) < 0.3, (name, max(probabilities))
    end = endpointer(no_speech_timeout_s=1.5).push(audio.pcm)  # loud or not: no speech ever starts
    assert end is not None and end.reason == "no_speech" and end.offset_s == pytest.approx(1.5, abs=WINDOW_S), end


def test_espeak_speech_is_speech_and_ends_after_the_trailing_silence() -> None:
    audio = spoken(QUESTION)
    start, stop = speech_span(audio)
    speech = SileroVad().speech(audio.pcm)
    during = speech[round(start / WINDOW_S) + 2 : round(stop / WINDOW_S) - 2]
    assert sum(during) >= 0.8 * len(during) and not any(speech[: round(start / WINDOW_S) - 1]), speech
    gate = endpointer()
    end = gate.push(audio.pcm)
    assert gate.speech_start is not None and abs(gate.speech_start * WINDOW_S - start) < 0.1, gate.speech_start
    assert end is not None and end.reason == "silence" and 0.4 <= end.offset_s - stop <= 0.4 + 2 * WINDOW_S, end


def test_hysteresis_keeps_a_speech_run_until_the_probability_drops_well_under_the_threshold() -> None:
    decide = Hysteresis(0.5)
    assert [decide(p) for p in (0.2, 0.49, 0.5, 0.4, 0.36, 0.34, 0.45, 0.5, 0.9)] == [
        False, False, True, True, True, False, False, True, True
    ]
    decide.reset()
    assert not decide(0.4) and decide.release == pytest.approx(0.35)
    with pytest.raises(ValueError, match="between 0 and 1"):
        Hysteresis(1.5)


def test_chunk_sizes_do_not_change_the_probabilities_or_the_endpoint() -> None:
    audio = concat(pink(1.0, rms=300), spoken(QUESTION), pause(0.5))
    whole = SileroVad().push(audio.pcm)
    pieces = SileroVad()
    chunked = [p for block in blocks(audio, 0.0173) for p in pieces.push(block.pcm)]
    assert chunked == whole and len(whole) == audio.frames // 512
    at_once = endpointer().push(audio.pcm)
    gate = endpointer()
    found = [end for block in blocks(audio, 0.0173) if (end := gate.push(block.pcm)) is not None]
    assert at_once is not None and found and found[0].offset_s == at_once.offset_s and at_once.reason == "silence"


def test_reset_starts_silero_afresh() -> None:
    audio = spoken(QUESTION)
    vad = SileroVad()
    first = vad.speech(audio.pcm[:-100])  # leaves part of a window behind, and the hysteresis in speech maybe
    vad.reset()
    assert vad.push(audio.pcm) == SileroVad().push(audio.pcm) and not vad.hysteresis.speaking
    assert any(first)


def test_other_sample_rates_are_judged_in_32_ms_windows() -> None:
    audio = read_wav(spoken_wav(QUESTION, rate=48000))
    vad = SileroVad(48000)
    speech = vad.speech(audio.pcm)
    assert len(speech) == audio.frames // 1536 and any(speech)
    assert any(SileroVad(8000).speech(audio.resampled(8000).pcm))


def test_the_endpointer_refuses_an_unknown_vad() -> None:
    with pytest.raises(ValueError, match="vad must be one of silero, energy"):
        endpointer(vad="webrtc")


def test_the_pre_roll_starts_just_before_speech() -> None:
    audio = concat(pause(2.0), spoken(QUESTION))
    gate = endpointer()
    preroll = PreRoll(gate, PREROLL_S, 16000)
    heard, pushed = b"", 0
    for block in blocks(audio):
        end = gate.push(block.pcm)
        part = block.pcm if end is None else block.pcm[: end.consumed]
        pushed += len(part)
        heard += preroll.take(part)
        if end is not None:
            break
    start = gate.speech_start_byte
    assert start is not None and start > 2 * 32000 * PREROLL_S and end is not None and end.reason == "silence"
    assert heard == audio.pcm[start - round(PREROLL_S * 16000) * 2 : pushed]
