"""A microphone in a lobby, for the voice benchmark: the room's sound all the time, questions spoken over it.

`tests.voice_rig.Mic` writes the queued questions into the daemon's FIFO at real-time pace; this one adds the
room under every block: a faint microphone noise floor when quiet, or generated lobby noise
(`tests.speech.lobby_noise`: espeak-ng babble plus pink noise) looped, scaled so that the speech of `reference`
(a typical question) is `snr_db` above it (RMS over the speech against RMS of the noise). The room keeps that
level all the time, as a real one does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from audio.pcm import AudioChunk
from tests.speech import lobby_noise, pause, speech_span
from tests.voice_rig import Mic

NOISE_LOOP_S = 60.0


class LobbyMic(Mic):
    def __init__(self, fifo: Path, snr_db: float | None, reference: AudioChunk, sample_rate: int = 16000) -> None:
        super().__init__(fifo, sample_rate)
        room = pause(NOISE_LOOP_S, sample_rate) if snr_db is None else lobby_noise(NOISE_LOOP_S)
        self._room = room.samples().astype(np.float32)
        self._gain = 1.0 if snr_db is None else _room_gain(self._room, reference, snr_db)
        self._at = 0  # sample position in the room loop

    def _next_block(self) -> bytes:
        voice = np.frombuffer(super()._next_block(), dtype="<i2").astype(np.float32)
        room = np.take(self._room, np.arange(self._at, self._at + len(voice)), mode="wrap")
        self._at = (self._at + len(voice)) % len(self._room)
        return np.clip(np.rint(voice + room * self._gain), -32768, 32767).astype("<i2").tobytes()


def _room_gain(room: np.ndarray, reference: AudioChunk, snr_db: float) -> float:
    start, end = speech_span(reference)
    rate = reference.sample_rate
    speech = reference.samples().astype(np.float32)[int(start * rate) : int(end * rate)]
    speech_rms = float(np.sqrt(np.mean(speech**2)))
    return speech_rms / (float(np.sqrt(np.mean(room**2))) * 10 ** (snr_db / 20))
