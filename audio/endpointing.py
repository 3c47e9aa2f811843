"""Where a spoken question ends: a per-frame speech decision (Silero VAD or an energy gate), the pre-roll that
keeps the recognizer on speech only, and the clean-up of the recognizer's text.

Vosk 0.3.45 has no configurable endpointer (its own one, behind `AcceptWaveform() == True`, fires after half a
second of silence and would cut "where is ... the bus" in two), so `Endpointer` decides from the audio itself,
frame by frame, with one of two speech decisions (`vad`):

- "silero" (the default): 32 ms frames. A frame is speech when Silero VAD says so (`audio.vad`, with its
  hysteresis) AND it is at least `margin_db` (9 dB) louder than the noise floor (and not quieter than
  `threshold_dbfs`). Silero alone is not enough in a lobby: to it, the babble of other people is speech too;
  but the visitor in front of the microphone is louder than the babble. The margin and the 4 frames (128 ms) that
  start speech were tuned on generated lobby noise (tests/speech.py: five espeak-ng voices and pink noise): no
  false start in 75 s of noise alone, and at 10 dB SNR the end found 0.36 s after speech ended (with 0.4 s
  trailing silence). Lower margins let babble keep the question going; higher ones cut its quieter last syllable.
  Noise without speech (an air conditioner, a tone) never counts, however loud.
- "energy": 30 ms frames, loud when the RMS level is at least `max(threshold_dbfs, noise_floor + 10 dB)`; for
  a quiet room, and the fallback where Silero is not wanted. It needs a longer trailing silence (0.8 s): the gate
  hears the dips between words as silence.

The noise floor follows quieter frames at once but louder ones by at most 6 dB a second: steady noise (a fan, a
crowd) lifts it within seconds, while a speaker's voice, which dips between words, barely moves it. With Silero,
frames judged speech lift it by only 1.5 dB a second (the visitor is not the room), and a first utterance starts
from the first frame's level, so that the floor is the lobby's within a fraction of a second, not after the
seconds the 6 dB/s rise would take from a quiet guess. The energy gate starts 10 dB under `threshold_dbfs`.

- Speech starts after `START_FRAMES` speech frames in a row (a click or a tap on the screen is shorter), or (energy
  gate only, in effect) when the recognizer reports words (`note_words`) the gate did not hear.
- The utterance ends with "silence" `trailing_silence_s` after the last speech frame (while the energy gate has
  heard nothing, growing partials count as activity instead), with "max_length" `max_utterance_s` after speech
  started, or with "no_speech" `no_speech_timeout_s` (None: never) after the first audio if speech never started.

All times are audio time (frames counted), not wall-clock time, so the decisions do not depend on how fast or in
what pieces the audio is fed.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import numpy as np

from audio.pcm import SAMPLE_WIDTH
from audio.vad import WINDOW_S, SileroVad

log = logging.getLogger(__name__)

VADS = ("silero", "energy")
FRAME_S = 0.03  # energy gate frames; Silero's are WINDOW_S (32 ms)
GATE_MARGIN_DB = 10.0  # energy gate, above the noise floor: speech is typically 15-30 dB louder than the room
SILERO_MARGIN_DB = 9.0  # Silero speech must be this much louder than the floor (see the module docstring)
FLOOR_RISE_DB_PER_S = 6.0
SPEECH_FLOOR_RISE_DB_PER_S = 1.5  # Silero: during frames judged speech (not frozen: a crowd may grow louder)
START_FRAMES = {"energy": 3, "silero": 4}  # consecutive speech frames that start speech: 90 ms, 128 ms
PREROLL_S = 0.3

_DIGITS = re.compile(r"^\[(\d+)\]$")


def normalize_text(text: str) -> str:
    """Recognizer output for people and the chat model: noise tokens dropped, "[9]" as "9", spaces collapsed.

    Vosk models mark unknown words and noises as "[unk]", "<UNK>", "<SPOKEN_NOISE>", "[noise]", "!SIL"; the Korean
    model writes digits as "[4]"."""
    words = []
    for word in text.split():
        digits = _DIGITS.match(word)
        if digits:
            words.append(digits.group(1))
        elif not (word.startswith("!") or (word[0] in "<[" and word[-1] in ">]")):
            words.append(word)
    return " ".join(words)


@dataclass(frozen=True)
class Endpoint:
    reason: str  # "silence" | "max_length" | "no_speech"
    offset_s: float  # audio time (since the start) where the utterance ended
    consumed: int  # bytes of the pushed PCM up to and including the frame that ended it


class Endpointer:
    """Frame-by-frame endpoint decisions for one utterance of mono s16le PCM at `sample_rate`."""

    def __init__(
        self,
        sample_rate: int,
        *,
        trailing_silence_s: float,
        max_utterance_s: float,
        no_speech_timeout_s: float | None,
        threshold_dbfs: float,
        noise_floor_dbfs: float | None = None,
        vad: str = "silero",
        vad_threshold: float = 0.5,
        margin_db: float | None = None,
    ) -> None:
        if vad not in VADS:
            raise ValueError(f"vad must be one of {', '.join(VADS)}, not {vad!r}")
        self.vad = vad
        self._silero = SileroVad(sample_rate, vad_threshold) if vad == "silero" else None
        self.frame_s = WINDOW_S if self._silero else FRAME_S
        self.frame_bytes = round(self.frame_s * sample_rate) * SAMPLE_WIDTH
        self._margin = margin_db if margin_db is not None else SILERO_MARGIN_DB if self._silero else GATE_MARGIN_DB
        self.start_frames = START_FRAMES[vad]
        # Whole frames, at least trailing_silence_s (1e-9: 0.4 s is 12.5 frames, but 0.09 s is not 3.0000001).
        self._trailing = max(1, math.ceil(trailing_silence_s / self.frame_s - 1e-9))
        self._max_frames = max(1, round(max_utterance_s / self.frame_s))
        self._no_speech = None if no_speech_timeout_s is None else max(1, round(no_speech_timeout_s / self.frame_s))
        self._threshold = threshold_dbfs
        self._rise = FLOOR_RISE_DB_PER_S * self.frame_s
        self._speech_rise = (SPEECH_FLOOR_RISE_DB_PER_S if self._silero else FLOOR_RISE_DB_PER_S) * self.frame_s
        start_floor = math.inf if self._silero else threshold_dbfs - GATE_MARGIN_DB  # inf: the first frame's level
        self.noise_floor_dbfs = start_floor if noise_floor_dbfs is None else noise_floor_dbfs
        self._pending = b""  # the start of a frame that the next push completes
        self._frames = 0  # frames judged so far
        self.restart()

    def restart(self) -> None:
        """Forget the speech so far (it was noise without words) but keep the clock and the noise floor."""
        self.speech_start: int | None = None  # frame index
        self._gate_heard = False
        self._run = 0  # consecutive speech frames
        self._last_active = 0  # frame index of the last speech frame (or word activity) after speech started

    @property
    def speech_started(self) -> bool:
        return self.speech_start is not None

    @property
    def speech_start_byte(self) -> int | None:
        """Where speech started, in bytes of the PCM pushed since construction."""
        return None if self.speech_start is None else self.speech_start * self.frame_bytes

    @property
    def elapsed_s(self) -> float:
        """Audio time judged so far, whole frames only."""
        return self._frames * self.frame_s

    @property
    def silence_s(self) -> float:
        """Audio time since the last speech frame, once speech started (0 before)."""
        if self.speech_start is None:
            return 0.0
        return (self._frames - 1 - self._last_active) * self.frame_s

    @property
    def gate_dbfs(self) -> float:
        return max(self._threshold, self.noise_floor_dbfs + self._margin)

    def note_words(self) -> None:
        """The recognizer's words changed: speech is going on even if the gate cannot hear it."""
        if self.speech_start is None:
            self.speech_start = self._frames
            self._last_active = self._frames
        elif not self._gate_heard:
            self._last_active = self._frames

    def push(self, pcm: bytes) -> Endpoint | None:
        """Judge the whole frames that `pcm` completes; the first endpoint found stops the judging."""
        data = self._pending + pcm
        whole = len(data) // self.frame_bytes
        levels = _frame_levels(data[: whole * self.frame_bytes], self.frame_bytes)
        for index, level in enumerate(levels):
            frame = data[index * self.frame_bytes : (index + 1) * self.frame_bytes]
            reason = self._judge(frame, float(level))
            if reason is not None:
                self._pending = b""
                consumed = (index + 1) * self.frame_bytes - (len(data) - len(pcm))
                return Endpoint(reason, self.elapsed_s, max(0, consumed))
        self._pending = data[whole * self.frame_bytes :]
        return None

    def _is_speech(self, frame: bytes, level: float) -> bool:
        if self._silero is None:
            return level >= self.gate_dbfs
        # Silero runs on every frame (also loud ones) so that its state and the hysteresis follow the audio.
        return self._silero.hysteresis(self._silero.probability(frame)) and level >= self.gate_dbfs

    def _judge(self, pcm: bytes, level: float) -> str | None:
        speech = self._is_speech(pcm, level)
        self.noise_floor_dbfs = min(level, self.noise_floor_dbfs + (self._speech_rise if speech else self._rise))
        frame = self._frames
        self._frames += 1
        self._run = self._run + 1 if speech else 0
        if self.speech_start is None and self._run >= self.start_frames:
            self.speech_start = frame - self.start_frames + 1
        if speech and self.speech_start is not None:
            self._gate_heard = True
            self._last_active = frame
        if self.speech_start is None:
            return "no_speech" if self._no_speech is not None and self._frames >= self._no_speech else None
        if self._frames - self.speech_start >= self._max_frames:
            return "max_length"
        if frame - self._last_active >= self._trailing:
            return "silence"
        return None


class PreRoll:
    """What a recognizer hears of the audio pushed into `endpointer`: from `preroll_s` before speech started up to
    the endpoint, nothing of the noise in between utterances.

    Why: given long stretches of lobby noise, Vosk decodes some of it into words, and those become a question. The
    pre-roll (a ring buffer of the latest audio) gives it back the start of the first word, which the speech
    decision, needing several frames, hears only late. Behind the energy gate everything passes, as before: there
    the recognizer's words may start speech that the gate missed (`note_words`), so it must hear all."""

    def __init__(self, endpointer: Endpointer, preroll_s: float, sample_rate: int) -> None:
        self._endpointer = endpointer
        self._keep = round(preroll_s * sample_rate) * SAMPLE_WIDTH
        # Speech is known to have started only `start_frames` into it (and the last push may end mid-frame).
        self._hold = self._keep + (endpointer.start_frames + 1) * endpointer.frame_bytes
        self._held = b""
        self._end = 0  # bytes taken so far: the position of the end of `_held`

    def take(self, pcm: bytes) -> bytes:
        """`pcm` has just been pushed into the endpointer (up to its endpoint, if any): what to recognize of it."""
        if self._endpointer.vad == "energy":
            return pcm
        self._held += pcm
        self._end += len(pcm)
        start = self._endpointer.speech_start_byte
        if start is None:
            self._held = self._held[-self._hold :]
            return b""
        cut = max(0, start - self._keep - (self._end - len(self._held)))
        out, self._held = self._held[cut:], b""
        return out


def _frame_levels(pcm: bytes, frame_bytes: int) -> np.ndarray:
    """RMS level in dBFS of each whole frame (-120 for digital silence), vectorised: one numpy pass per push."""
    if not pcm:
        return np.empty(0)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32).reshape(-1, frame_bytes // SAMPLE_WIDTH)
    rms = np.sqrt(np.mean(samples * samples, axis=1))
    levels: np.ndarray = np.maximum(-120.0, 20.0 * np.log10(np.maximum(rms, 1e-9) / 32768.0))
    return levels
