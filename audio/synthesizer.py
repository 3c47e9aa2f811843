"""Speech synthesis with Piper, driven from the asyncio loop while the work runs on the synthesizer's own thread.

`Synthesizer.load` opens a voice (an ONNX model and its JSON config); `synthesize` turns one sentence or clause into
16-bit mono PCM at the voice's `sample_rate`, and `stream` yields the audio of each sentence as soon as Piper has it.

Decisions:

- Piper's own `PiperVoice.load` always builds a default `onnxruntime.SessionOptions`, which uses every core. The
  kiosk runs llama.cpp on the same two cores, so we open the `InferenceSession` ourselves with `threads` intra-op
  threads (1 by default; the daemon's `tts_threads` is 2, since the model waits while the first sentence is
  synthesized) and no spin-waiting, and hand it to `PiperVoice`.
- One Piper sentence is the unit of work. Calls are serialized (an asyncio lock across a whole text, so concurrent
  callers get their texts one after another, and a thread lock around each Piper step, so the ONNX session is never
  used by two threads even on a shared multi-thread executor).
- Cancellation: if the awaiting task is cancelled, the sentence being synthesized runs to its end on the worker
  thread and its audio is dropped; later sentences of that text are not synthesized. The next call queues behind it.
- Text is expected to be clean already (the chunker strips Markdown), but two guards stay here: text longer than
  `_MAX_PIECE_CHARS` is handed to Piper in pieces cut at sentence ends, clause marks or spaces (Piper's sentence
  split alone leaves a run-on text as one huge inference), and Chinese/Japanese characters on a voice that cannot
  speak them are skipped with one warning per synthesizer (espeak would otherwise say "Chinese letter" for each).
- A voice that phonemizes with g2pW (Piper's "pinyin" phoneme type) would download that model on its first
  sentence; the kiosk is offline, so loading requires `g2pW/g2pw.onnx` beside the voice and fails otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import inspect
import json
import logging
import re
import threading
import time
from collections.abc import AsyncGenerator, Generator, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnxruntime  # type: ignore[import-untyped]
from piper import PiperVoice
from piper.config import PhonemeType, PiperConfig, SynthesisConfig
from piper.const import BOS, EOS, PAD

from audio.pcm import AudioChunk

__all__ = ["Synthesizer", "SynthesizerError", "VoiceConfig"]

logger = logging.getLogger(__name__)

_MAX_PIECE_CHARS = 400  # about 25 s of speech: the chunker's chunks (at most 300) never need cutting
# Sentence ends first, then clause marks, then any space; each searched in the second half of the window so a
# piece is never tiny.
_CUT_PATTERNS = (
    re.compile(r"[.!?。！？…]+[\"'”’)\]」』）]*(?:\s+|$)"),
    re.compile(r"[,;:，；：、]\s*"),
    re.compile(r"\s+"),
)
# Han ideographs, kana and bopomofo: espeak's non-CJK voices read each one as "Chinese letter" / "Japanese letter".
# Hangul is left alone: espeak transliterates it.
_CJK_SCRIPT = re.compile(
    "[\u3040-\u30ff\u3100-\u312f\u31a0-\u31bf\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\uff66-\uff9f\U00020000-\U0003134f]+"
)
_CJK_ESPEAK_LANGUAGES = frozenset({"cmn", "zh", "yue", "hak", "ja"})
_PIPER_INPUTS = frozenset({"input", "input_lengths", "scales"})
_G2PW_MODULES = ("transformers", "sentence_stream", "unicode_rbnf")


class SynthesizerError(Exception):
    """The voice could not be loaded (missing or corrupt file, bad config) or a text could not be synthesized."""


@dataclass(frozen=True)
class VoiceConfig:
    """Where a voice lives and how to run it."""

    model_path: Path
    config_path: Path | None = None  # None: model_path + ".json", Piper's convention
    speaker_id: int | None = None  # multi-speaker voices only; None: the voice's default speaker
    length_scale: float | None = None  # speaking speed: < 1 faster, > 1 slower; None: the voice's own
    threads: int = 1  # onnxruntime intra-op threads: the chat model needs the cores on 2-core boards

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, not {self.threads}")
        if self.length_scale is not None and not self.length_scale > 0:
            raise ValueError(f"length_scale must be > 0, not {self.length_scale}")
        if self.speaker_id is not None and self.speaker_id < 0:
            raise ValueError(f"speaker_id must be >= 0, not {self.speaker_id}")

    @property
    def resolved_config_path(self) -> Path:
        return self.config_path if self.config_path is not None else Path(f"{self.model_path}.json")


class Synthesizer:
    """A loaded Piper voice. Create with `await Synthesizer.load(config)`; call `close` when done."""

    def __init__(self, voice: PiperVoice, config: VoiceConfig, executor: Executor, owns_executor: bool) -> None:
        self.config = config
        self.sample_rate: int = int(voice.config.sample_rate)
        self._voice = voice
        self._syn_config = SynthesisConfig(speaker_id=config.speaker_id, length_scale=config.length_scale)
        self._executor = executor
        self._owns_executor = owns_executor
        self._lock = asyncio.Lock()  # one text at a time, in call order
        self._session_lock = threading.Lock()  # one Piper step at a time, whatever executor runs it
        self._strip_cjk = not _speaks_cjk(voice.config)
        self._warned_script = False
        self._closed = False

    @classmethod
    async def load(cls, config: VoiceConfig, executor: Executor | None = None) -> Synthesizer:
        """Load the voice on a worker thread. `executor`: run Piper there (not shut down by `close`); by default a
        single thread owned by this synthesizer."""
        owns_executor = executor is None
        worker = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="piper")
        try:
            voice = await asyncio.get_running_loop().run_in_executor(worker, _load_voice, config)
        except BaseException:
            if owns_executor:
                worker.shutdown(wait=False)
            raise
        return cls(voice, config, worker, owns_executor)

    async def synthesize(self, text: str) -> AudioChunk:
        """The whole of `text` (one sentence or clause, typically) as one chunk; empty text gives an empty chunk."""
        parts: list[bytes] = []
        async with contextlib.aclosing(self.stream(text)) as chunks:
            async for chunk in chunks:
                parts.append(chunk.pcm)
        return AudioChunk(b"".join(parts), self.sample_rate)

    async def stream(self, text: str) -> AsyncGenerator[AudioChunk, None]:
        """The audio of each Piper sentence of `text` as soon as it is ready (nothing for empty text). Close the
        iterator (`contextlib.aclosing`) when stopping early: it holds the synthesizer until closed."""
        self._check_open()
        speakable = self._speakable(text)
        if not speakable:
            return
        async with self._lock:
            sentences = self._sentences(speakable)
            try:
                while True:
                    self._check_open()  # closed while this text waited for the lock or between its sentences
                    pcm = await asyncio.get_running_loop().run_in_executor(
                        self._executor, self._step, sentences, speakable
                    )
                    if pcm is None:
                        break
                    if pcm:
                        yield AudioChunk(pcm, self.sample_rate)
            finally:
                self._discard(sentences)

    def close(self) -> None:
        """Refuse further calls and release the worker thread; a sentence already running finishes in the background."""
        if self._closed:
            return
        self._closed = True
        if self._owns_executor:
            # Queued steps still run (one sentence each, at most one per stream); their streams then stop.
            self._executor.shutdown(wait=False)

    def _check_open(self) -> None:
        if self._closed:
            raise SynthesizerError(f"synthesizer for {self.config.model_path} is closed")

    def _speakable(self, text: str) -> str:
        text = text.strip()
        if self._strip_cjk and _CJK_SCRIPT.search(text):
            if not self._warned_script:
                self._warned_script = True
                logger.warning(
                    "voice %s (%s) cannot speak Chinese or Japanese characters: they are skipped",
                    self.config.model_path.name, self._voice.config.espeak_voice,
                )
            text = _CJK_SCRIPT.sub(" ", text).strip()
        # Punctuation alone gives no audio from Piper: skip the round trip to the worker thread.
        return text if any(ch.isalnum() for ch in text) else ""

    def _sentences(self, text: str) -> Generator[bytes, None, None]:
        """Runs on the worker thread, one step per sentence."""
        for piece in _pieces(text):
            for chunk in self._voice.synthesize(piece, syn_config=self._syn_config):
                yield chunk.audio_int16_bytes

    def _step(self, sentences: Generator[bytes, None, None], text: str) -> bytes | None:
        with self._session_lock:
            try:
                return next(sentences, None)
            except Exception as error:  # onnxruntime and espeak raise types of their own
                raise SynthesizerError(f"synthesis failed for {_preview(text)}: {error}") from error

    def _discard(self, sentences: Generator[bytes, None, None]) -> None:
        """Close the generator on the worker thread, after any step still running there (a generator cannot be
        closed while it executes); a finished generator makes this a no-op."""

        if inspect.getgeneratorstate(sentences) == inspect.GEN_CLOSED:
            return  # ran to its end: nothing to close

        def close() -> None:
            with self._session_lock:
                sentences.close()

        with contextlib.suppress(RuntimeError):  # executor shut down: the generator is simply dropped
            self._executor.submit(close)


def _load_voice(config: VoiceConfig) -> PiperVoice:
    started = time.perf_counter()
    model_path = config.model_path
    if not model_path.is_file():
        raise SynthesizerError(f"voice model not found: {model_path}")
    piper_config = _read_piper_config(config.resolved_config_path)
    if config.speaker_id is not None and config.speaker_id >= max(1, piper_config.num_speakers):
        raise SynthesizerError(
            f"speaker_id {config.speaker_id} is out of range: {model_path} has {piper_config.num_speakers} speaker(s)"
        )
    if piper_config.phoneme_type == PhonemeType.PINYIN:
        _check_g2pw(model_path)
    voice = PiperVoice(
        session=_open_session(model_path, config.threads),
        config=piper_config,
        download_dir=model_path.parent,  # where Piper looks for g2pW (checked above), never the process's cwd
    )
    _warm_up(voice, config, model_path)
    logger.info(
        "loaded voice %s (%d Hz, %d thread(s)) in %.2f s",
        model_path.name, piper_config.sample_rate, config.threads, time.perf_counter() - started,
    )
    return voice


def _read_piper_config(path: Path) -> PiperConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise SynthesizerError(f"voice config not found: {path}") from error
    except OSError as error:
        raise SynthesizerError(f"cannot read voice config {path}: {error}") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SynthesizerError(f"voice config {path} is not valid JSON: {error}") from error
    try:
        config = PiperConfig.from_dict(raw)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise SynthesizerError(f"voice config {path} is not a Piper voice config ({error!r})") from error
    if not isinstance(config.sample_rate, int) or config.sample_rate <= 0:
        raise SynthesizerError(f"voice config {path} has an invalid sample rate: {config.sample_rate!r}")
    return config


def _open_session(model_path: Path, threads: int) -> Any:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads would otherwise spin for a while after each run, taking CPU from llama.cpp.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ... share no public base class
        raise SynthesizerError(f"voice model {model_path} is not a loadable ONNX model: {error}") from error
    missing = _PIPER_INPUTS - {node.name for node in session.get_inputs()}
    if missing:
        raise SynthesizerError(f"{model_path} is not a Piper voice: the model lacks inputs {sorted(missing)}")
    return session


def _warm_up(voice: PiperVoice, config: VoiceConfig, model_path: Path) -> None:
    """One tiny inference: the first run of a session allocates its buffers (so the first visitor's sentence would
    be slower), and a model that does not fit its config fails here, at load, rather than mid-conversation."""
    id_map = voice.config.phoneme_id_map
    try:
        ids = [*id_map[BOS], *id_map[PAD], *id_map[EOS]]
        voice.phoneme_ids_to_audio(ids, SynthesisConfig(speaker_id=config.speaker_id))
    except Exception as error:
        raise SynthesizerError(f"voice model {model_path} does not run with its config: {error!r}") from error


def _check_g2pw(model_path: Path) -> None:
    g2pw_model = model_path.parent / "g2pW" / "g2pw.onnx"
    missing = [name for name in _G2PW_MODULES if importlib.util.find_spec(name) is None]
    if not g2pw_model.is_file() or missing:
        raise SynthesizerError(
            f"voice {model_path} phonemizes with g2pW, which needs {g2pw_model} and the Python packages "
            f"{', '.join(_G2PW_MODULES)} (missing: {', '.join(missing) or 'none'}); Piper would download the model "
            "on first use, which an offline kiosk cannot"
        )


def _speaks_cjk(config: PiperConfig) -> bool:
    if config.phoneme_type != PhonemeType.ESPEAK:
        return True  # pinyin and Japanese voices do; the others are not espeak and would not say "letter"
    return config.espeak_voice.lower().split("-")[0] in _CJK_ESPEAK_LANGUAGES


def _pieces(text: str) -> Iterator[str]:
    """`text` in pieces of at most `_MAX_PIECE_CHARS`, cut at the best break in the second half of each window."""
    limit = _MAX_PIECE_CHARS
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = _cut_point(window)
        yield window[:cut]
        rest = rest[cut:].lstrip()
    if rest:
        yield rest


def _cut_point(window: str) -> int:
    for pattern in _CUT_PATTERNS:
        ends = [match.end() for match in pattern.finditer(window, len(window) // 2)]
        if ends:
            return ends[-1]
    return len(window)


def _preview(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
