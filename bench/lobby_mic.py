"""A microphone in a lobby, for the voice benchmark: the room's sound all the time, questions spoken over it.

Like `tests.voice_rig.Mic` it writes 30 ms blocks into the daemon's FIFO at real-time pace from its own thread,
but what it writes between and under the questions is the room: a faint microphone noise floor when quiet, or
generated lobby noise (`tests.speech.lobby_noise`: espeak-ng babble plus pink noise) looped, scaled so that
the speech of `reference` (a typical question) is `snr_db` above it (RMS over the speech against RMS of the
noise). The room keeps that level all the time, as a real one does.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from audio.pcm import AudioChunk
from tests.speech import lobby_noise, pause, speech_span

BLOCK_S = 0.03
NOISE_LOOP_S = 60.0


class LobbyMic:
    def __init__(self, fifo: Path, snr_db: float | None, reference: AudioChunk, sample_rate: int = 16000) -> None:
        self._fifo = fifo
        self._rate = sample_rate
        self._snr_db = snr_db
        room = pause(NOISE_LOOP_S, sample_rate) if snr_db is None else lobby_noise(NOISE_LOOP_S)
        self._room = room.samples().astype(np.float32)
        self._gain = 1.0 if snr_db is None else _room_gain(self._room, reference, snr_db)
        self._at = 0  # sample position in the room loop
        self._pending: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-mic", daemon=True)

    def start(self) -> None:
        if not self._fifo.exists():
            os.mkfifo(self._fifo)
        self._thread.start()

    def say(self, audio: AudioChunk) -> float:
        """Queue `audio` over the room; returns the monotonic time its speech will end."""
        _, end = speech_span(audio)
        samples = audio.samples().astype(np.float32)
        block = round(BLOCK_S * self._rate)
        with self._lock:
            queued = sum(len(b) for b in self._pending) / self._rate
            self._pending.extend(samples[i : i + block] for i in range(0, len(samples), block))
        return time.monotonic() + queued + end

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _next_block(self) -> bytes:
        size = round(BLOCK_S * self._rate)
        with self._lock:
            voice = self._pending.popleft() if self._pending else np.zeros(size, np.float32)
        room = np.take(self._room, np.arange(self._at, self._at + len(voice)), mode="wrap")
        self._at = (self._at + len(voice)) % len(self._room)
        mixed = voice + room * self._gain
        return np.clip(np.rint(mixed), -32768, 32767).astype("<i2").tobytes()

    def _run(self) -> None:
        with open(self._fifo, "wb", buffering=0) as pipe:  # Blocks until the daemon opens its end.
            next_at = time.monotonic()
            while not self._stop.is_set():
                block = self._next_block()
                try:
                    pipe.write(block)
                except BrokenPipeError:
                    return
                next_at += len(block) / 2 / self._rate
                time.sleep(max(0.0, next_at - time.monotonic()))


def _room_gain(room: np.ndarray, reference: AudioChunk, snr_db: float) -> float:
    start, end = speech_span(reference)
    rate = reference.sample_rate
    speech = reference.samples().astype(np.float32)[int(start * rate) : int(end * rate)]
    speech_rms = float(np.sqrt(np.mean(speech**2)))
    return speech_rms / (float(np.sqrt(np.mean(room**2))) * 10 ** (snr_db / 20))
