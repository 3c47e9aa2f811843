"""The Vosk speech model: loaded once (seconds, hundreds of MB) and shared by the recognizers in `audio.recognizer`.

Decisions:
- `SpeechModel.load(..., dither=0.0, keep_recognizers=0)` makes recognition reproducible: Kaldi's default dither
  (1.0) adds random noise to every frame, and reused Vosk recognizers prune ties in their own order, so the same
  audio could otherwise give different words. Tests load models that way; devices keep the defaults.
- Decoder settings are applied by loading the model through a temporary directory that links the model's files
  and holds an edited copy of its conf/ (vosk 0.3.45 has no API for them); Vosk reads everything while loading,
  so the directory is removed right after.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import vosk

WARM_UP_S = 1.0


class RecognizerError(Exception):
    """The speech model cannot be used: a missing or broken model directory, bad settings, an unknown wake word."""


class SpeechModel:
    """A loaded Vosk model (seconds to load, hundreds of MB): load once, share between recognizers.

    It also keeps up to `keep_recognizers` finished Vosk recognizers for `UtteranceRecognizer` to reuse. A Vosk
    recognizer composes its decoding graph lazily and keeps what it built: measured here, a question on a new one
    costs 1.5 s of CPU for 2.3 s of speech (one 30 ms block takes 0.7-1 s), on a reused one 0.1-0.8 s. A reused
    one starts each utterance with fresh features, but the graph it built changes the order in which equally good
    paths are pruned, so borderline audio (synthetic speech, here) can come out differently; with
    keep_recognizers=0 the same audio always gives the same words (tests use that, with dither=0)."""

    def __init__(self, model: Any, model_dir: Path, *, keep_recognizers: int = 2) -> None:
        self.vosk_model = model
        self.model_dir = model_dir
        self.keep_recognizers = keep_recognizers
        self._idle: dict[int, list[Any]] = {}
        self._idle_lock = threading.Lock()  # taken and given back on different recognizers' worker threads

    def take_recognizer(self, sample_rate: int) -> Any:
        """A free-form Vosk recognizer, kept or new; `give_back` it after its FinalResult()."""
        with self._idle_lock:
            idle = self._idle.get(sample_rate)
            if idle:
                return idle.pop()
        return vosk.KaldiRecognizer(self.vosk_model, sample_rate)

    def warm_up(self, sample_rate: int = 16000, seconds: float = WARM_UP_S) -> None:
        """Fill the pool with recognizers that have decoded `seconds` of quiet noise (blocking: run it on a
        thread). Part of the graph a recognizer builds lazily is built then, not while the first visitors speak:
        measured on the Korean model, a first question's decoding took 0.5 s instead of 1.1 s on a new recognizer
        (0.06 s on one that heard that question before); the speech model's recognizer then lags the visitor
        less, and the words settle sooner (audio.recognizer)."""
        noise = (np.random.default_rng(0).standard_normal(int(seconds * sample_rate)) * 3000).astype("<i2")
        warmed = []
        for _ in range(self.keep_recognizers):
            recognizer = vosk.KaldiRecognizer(self.vosk_model, sample_rate)
            recognizer.AcceptWaveform(noise.tobytes())
            recognizer.FinalResult()
            warmed.append(recognizer)
        for recognizer in warmed:
            self.give_back(recognizer, sample_rate)

    def give_back(self, recognizer: Any, sample_rate: int) -> None:
        """Keep a finished recognizer for reuse (FinalResult() starts its next utterance with fresh features)."""
        with self._idle_lock:
            idle = self._idle.setdefault(sample_rate, [])
            if len(idle) < self.keep_recognizers:
                idle.append(recognizer)

    @classmethod
    async def load(
        cls,
        model_dir: Path,
        *,
        max_active: int | None = None,
        beam: float | None = None,
        lattice_beam: float | None = None,
        dither: float | None = None,
        keep_recognizers: int = 2,
    ) -> SpeechModel:
        """Load on a thread. Raises RecognizerError if the directory is missing or not a Vosk model."""
        return await asyncio.to_thread(
            lambda: cls.load_sync(
                model_dir,
                max_active=max_active,
                beam=beam,
                lattice_beam=lattice_beam,
                dither=dither,
                keep_recognizers=keep_recognizers,
            )
        )

    @classmethod
    def load_sync(
        cls,
        model_dir: Path,
        *,
        max_active: int | None = None,
        beam: float | None = None,
        lattice_beam: float | None = None,
        dither: float | None = None,
        keep_recognizers: int = 2,
    ) -> SpeechModel:
        model_dir = Path(model_dir)
        _check_model_dir(model_dir)
        decoder = _decoder_options(max_active, beam, lattice_beam)
        mfcc = {} if dither is None else {"--dither": _positive("dither", dither, allow_zero=True)}
        vosk.SetLogLevel(-1)  # Kaldi's LOG lines (dozens per load) off; its warnings and errors stay
        if not decoder and not mfcc:
            return cls(_vosk_model(model_dir, model_dir), model_dir, keep_recognizers=keep_recognizers)
        staging = Path(tempfile.mkdtemp(prefix="kioskd-vosk-"))
        try:
            _stage_model(model_dir, staging, decoder, mfcc)
            return cls(_vosk_model(staging, model_dir), model_dir, keep_recognizers=keep_recognizers)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def knows(self, word: str) -> bool:
        return int(self.vosk_model.vosk_model_find_word(word)) >= 0


def _check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise RecognizerError(f"speech model directory {model_dir} does not exist")
    graph = model_dir / "graph"
    missing = [
        name for name in ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf") if not (model_dir / name).is_file()
    ]
    if not (graph / "HCLG.fst").is_file() and not ((graph / "HCLr.fst").is_file() and (graph / "Gr.fst").is_file()):
        missing.append("graph/HCLG.fst (or graph/HCLr.fst with graph/Gr.fst)")
    if missing:
        raise RecognizerError(f"{model_dir} is not a Vosk model: it has no {', '.join(missing)}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> str:
    if not (value >= 0 if allow_zero else value > 0):
        raise RecognizerError(f"speech model setting {name} must be {'>= 0' if allow_zero else '> 0'}, not {value}")
    return str(value)


def _decoder_options(max_active: int | None, beam: float | None, lattice_beam: float | None) -> dict[str, str]:
    options = {}
    if max_active is not None:
        if max_active < 2:
            raise RecognizerError(f"speech model setting max_active must be >= 2, not {max_active}")
        options["--max-active"] = str(int(max_active))
    if beam is not None:
        options["--beam"] = _positive("beam", beam)
    if lattice_beam is not None:
        options["--lattice-beam"] = _positive("lattice_beam", lattice_beam)
    return options


def _stage_model(model_dir: Path, staging: Path, decoder: dict[str, str], mfcc: dict[str, str]) -> None:
    """Links to everything in `model_dir` but conf/, and a conf/ with the settings written in."""
    for entry in model_dir.iterdir():
        if entry.name != "conf":
            (staging / entry.name).symlink_to(entry.resolve())
    shutil.copytree(model_dir / "conf", staging / "conf", symlinks=False)
    model_conf = staging / "conf" / "model.conf"
    options = _read_conf(model_conf)
    if "--max-active" in decoder and int(options.get("--min-active", "0")) > int(decoder["--max-active"]):
        decoder = {**decoder, "--min-active": decoder["--max-active"]}  # Kaldi insists on min <= max
    _write_conf(model_conf, {**options, **decoder})
    mfcc_conf = staging / "conf" / "mfcc.conf"
    _write_conf(mfcc_conf, {**_read_conf(mfcc_conf), **mfcc})


def _read_conf(path: Path) -> dict[str, str]:
    options = {}
    for line in path.read_text().splitlines():
        name, _, value = line.split("#", 1)[0].strip().partition("=")
        if name:
            options[name] = value
    return options


def _write_conf(path: Path, options: dict[str, str]) -> None:
    path.write_text("".join(f"{name}={value}\n" if value else f"{name}\n" for name, value in options.items()))


def _vosk_model(path: Path, shown: Path) -> Any:
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise RecognizerError(f"Vosk could not load the speech model in {shown}: {exc}") from exc
