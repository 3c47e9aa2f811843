"""Audio as it crosses module boundaries: small typed chunks of 16-bit mono PCM, and the conversions
between sample rates that the devices, the recognizer (16 kHz) and the voice (22.05 kHz) need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_WIDTH = 2  # bytes: signed 16-bit little-endian, the format of PortAudio's int16, Vosk and Piper alike
RECOGNIZER_RATE = 16_000


@dataclass(frozen=True)
class AudioChunk:
    """A piece of mono signed 16-bit little-endian PCM at `sample_rate`."""

    pcm: bytes
    sample_rate: int

    @property
    def frames(self) -> int:
        return len(self.pcm) // SAMPLE_WIDTH

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate

    def samples(self) -> np.ndarray:
        return np.frombuffer(self.pcm, dtype="<i2")

    def resampled(self, rate: int) -> AudioChunk:
        return self if rate == self.sample_rate else AudioChunk(resample(self.pcm, self.sample_rate, rate), rate)


def silence(seconds: float, sample_rate: int) -> AudioChunk:
    return AudioChunk(b"\0\0" * round(seconds * sample_rate), sample_rate)


def resample(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Linear-interpolation resampling: plenty for speech going to a recognizer or a small speaker."""
    if src_rate == dst_rate or not pcm:
        return pcm
    src = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    count = max(1, round(len(src) * dst_rate / src_rate))
    positions = np.linspace(0, len(src) - 1, count, dtype=np.float64)
    out = np.interp(positions, np.arange(len(src)), src)
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()


def rms_dbfs(pcm: bytes) -> float:
    """Loudness of a chunk in dB relative to full scale (-120 for digital silence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(samples * samples)))
    return max(-120.0, 20.0 * float(np.log10(max(rms, 1e-9) / 32768.0)))
