"""Where a spoken question ends: an energy gate over 30 ms frames, plus the clean-up of the recognizer's text.

Vosk 0.3.45 has no configurable endpointer (its own one, behind `AcceptWaveform() == True`, fires after half a
second of silence and would cut "where is ... the bus" in two), so `Endpointer` decides from the audio itself:

- Each 30 ms frame is loud when its RMS level is at least the gate: `max(threshold_dbfs, noise_floor + 10 dB)`.
  The noise floor starts 10 dB under the threshold (or where the last utterance left it) and follows quieter
  frames at once but louder ones by at most 6 dB a second: steady noise (a fan, a crowd) lifts the gate within
  seconds, while a speaker's voice, which dips between words, barely moves it. So the gate only ever rises above
  `threshold_dbfs`, in a room noisier than `threshold_dbfs - 10 dB`.
- Speech starts after 3 loud frames in a row (90 ms: a click or a tap on the screen is shorter), or when the
  recognizer reports words (`note_words`) the gate did not hear, e.g. a speaker too quiet for the threshold.
- The utterance ends with "silence" after `trailing_silence_s` without a loud frame following speech (while the
  gate has heard nothing, growing partials count as activity instead), with "max_length" `max_utterance_s` after
  speech started, or with "no_speech" `no_speech_timeout_s` (None: never) after the first audio if speech never
  started.

All times are audio time (frames counted), not wall-clock time, so the decisions do not depend on how fast or in
what pieces the audio is fed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from audio.pcm import SAMPLE_WIDTH

FRAME_S = 0.03
GATE_MARGIN_DB = 10.0  # above the noise floor: speech is typically 15-30 dB louder than the room
FLOOR_RISE_DB_PER_S = 6.0
START_FRAMES = 3  # consecutive loud frames that make speech

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
    ) -> None:
        self._frame_bytes = round(FRAME_S * sample_rate) * SAMPLE_WIDTH
        self._trailing = max(1, round(trailing_silence_s / FRAME_S))
        self._max_frames = max(1, round(max_utterance_s / FRAME_S))
        self._no_speech = None if no_speech_timeout_s is None else max(1, round(no_speech_timeout_s / FRAME_S))
        self._threshold = threshold_dbfs
        self._rise = FLOOR_RISE_DB_PER_S * FRAME_S
        self.noise_floor_dbfs = threshold_dbfs - GATE_MARGIN_DB if noise_floor_dbfs is None else noise_floor_dbfs
        self._pending = b""  # the start of a frame that the next push completes
        self._frames = 0  # frames judged so far
        self.restart()

    def restart(self) -> None:
        """Forget the speech so far (it was noise without words) but keep the clock and the noise floor."""
        self.speech_start: int | None = None  # frame index
        self._gate_heard = False
        self._run = 0  # consecutive loud frames
        self._last_active = 0  # frame index of the last loud frame (or word activity) after speech started

    @property
    def speech_started(self) -> bool:
        return self.speech_start is not None

    @property
    def elapsed_s(self) -> float:
        """Audio time judged so far, whole frames only."""
        return self._frames * FRAME_S

    @property
    def gate_dbfs(self) -> float:
        return max(self._threshold, self.noise_floor_dbfs + GATE_MARGIN_DB)

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
        whole = len(data) // self._frame_bytes
        levels = _frame_levels(data[: whole * self._frame_bytes], self._frame_bytes)
        for index, level in enumerate(levels):
            reason = self._judge(float(level))
            if reason is not None:
                self._pending = b""
                consumed = (index + 1) * self._frame_bytes - (len(data) - len(pcm))
                return Endpoint(reason, self.elapsed_s, max(0, consumed))
        self._pending = data[whole * self._frame_bytes :]
        return None

    def _judge(self, level: float) -> str | None:
        loud = level >= self.gate_dbfs
        self.noise_floor_dbfs = min(level, self.noise_floor_dbfs + self._rise)
        frame = self._frames
        self._frames += 1
        self._run = self._run + 1 if loud else 0
        if self.speech_start is None and self._run >= START_FRAMES:
            self.speech_start = frame - START_FRAMES + 1
        if loud and self.speech_start is not None:
            self._gate_heard = True
            self._last_active = frame
        if self.speech_start is None:
            return "no_speech" if self._no_speech is not None and self._frames >= self._no_speech else None
        if self._frames - self.speech_start >= self._max_frames:
            return "max_length"
        if frame - self._last_active >= self._trailing:
            return "silence"
        return None


def _frame_levels(pcm: bytes, frame_bytes: int) -> np.ndarray:
    """RMS level in dBFS of each whole frame (-120 for digital silence), vectorised: one numpy pass per push."""
    if not pcm:
        return np.empty(0)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32).reshape(-1, frame_bytes // SAMPLE_WIDTH)
    rms = np.sqrt(np.mean(samples * samples, axis=1))
    levels: np.ndarray = np.maximum(-120.0, 20.0 * np.log10(np.maximum(rms, 1e-9) / 32768.0))
    return levels
