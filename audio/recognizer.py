"""Speech to text with Vosk, driven from the event loop: one spoken question at a time, and a wake-phrase spotter.

Every Vosk call runs on a worker thread: a `ThreadPoolExecutor(max_workers=1)` per recognizer, or an executor
passed in, which must be single-threaded too, because the calls of one recognizer must run in the order they were
made (sharing one worker between the spotter and the question recognizer also keeps Vosk on one core while the
chat model uses the others). `reset()` is queued on that worker like everything else, so it never races a `feed`.
The model itself (`SpeechModel`, loading, decoder settings) lives in `audio.speech_model`.

Decisions:
- `UtteranceRecognizer` ends an utterance with its own endpointer (`audio.endpointing`), never Vosk's: a Vosk
  endpoint mid-question only moves the text so far into a list of segments, which `FinalResult()` completes.
- Vosk hears only what the speech decision (`vad`: Silero VAD by default, or the energy gate) calls speech, from
  a short pre-roll before it started up to the endpoint (`audio.endpointing.PreRoll`): decoding long stretches of
  lobby noise, it would make words of some of them, and then a question. The wake-phrase spotter likewise.
- Sound that the speech decision took for speech but that gives no words does not end the utterance: listening
  goes on, and `no_speech_timeout_s` still counts from the first audio.
- After its final, a recognizer ignores audio (the rest of that chunk included) until `reset()`.
- Settled text (Silero only): `settle_silence_s` (0.16 s) into a pause, the recognizer asks Vosk for its final
  result of the words so far (`FinalResult()`, which also lets Vosk go on with the next words) and reports them
  as a partial marked `settled`. Vosk's partials lag the speech by ~0.3 s, so without this the complete text
  would be known only when the question ends; with it, the daemon can start the answer during the trailing
  silence (daemon.prefill). If the visitor goes on speaking, the new words follow the settled ones, as after one
  of Vosk's own endpoints. Not with the energy gate, which hears the dips between words as pauses.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import vosk

from audio.endpointing import PREROLL_S, SILERO_MARGIN_DB, Endpointer, PreRoll, normalize_text
from audio.pcm import SAMPLE_WIDTH, AudioChunk
from audio.speech_model import RecognizerError, SpeechModel

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PHRASE_S = 4.0  # the spotter judges speech in pieces at most this long
UNKNOWN_WORDS = ("[unk]", "<UNK>", "<unk>")  # the garbage word, as the models of different recipes spell it
# Ordinary words that absorb speech which is not the wake phrase. With only [phrase, unknown word] as its grammar,
# Vosk maps almost any speech onto the phrase (measured: an English TTS sentence gave the phrase three times).
# Words missing from a model's vocabulary are skipped, so one list serves Korean, English and Chinese models.
_FILLERS = """
    아 어 오 우 이 에 네 예 그 저 뭐 왜 다 요 죠 가 나 도 로 는 은 의 지 기 비 피 스 트
    여기 저기 버스 어디 라디오 여보세요 감사합니다 안녕 하세요 세요 아니 그럼 했다 지금 오늘 시간 사람
    HELLO THE I YOU OK A
    the a i you it is to and what how where please thank yes no okay hello hi
    的 我 你 是 了 不 在 有 这 个 好 吗 什么 请 谢谢
"""
DEFAULT_FILLERS = tuple(_FILLERS.split())


SETTLE_SILENCE_S = 0.16
"""Five Silero frames. Vosk writes a word's partial ~0.3 s after the word ends (its acoustic model's right
context), but `FinalResult()` has the whole text after 0.1 s of silence (measured on the Korean model): so the
text is known ~0.3 s before the trailing silence ends the question."""


@dataclass(frozen=True)
class RecognizerConfig:
    model_dir: Path
    sample_rate: int = 16000
    # End of utterance after this much silence following the last speech frame. 0.4 s suits Silero, which hears
    # the end of speech at once; the energy gate needs 0.8 s (it hears the dips between words as silence).
    trailing_silence_s: float = 0.4
    max_utterance_s: float = 15.0  # force the end of an utterance this long after speech started
    no_speech_timeout_s: float = 8.0  # push-to-talk with nobody speaking: give up (final with empty text)
    # Kaldi decoder settings that trade accuracy for speed on slow boards; None keeps the model's conf/model.conf.
    # They belong to the model: pass them to SpeechModel.load (the recognizers only carry them for that).
    max_active: int | None = None
    beam: float | None = None
    lattice_beam: float | None = None
    # The gate is max(this, noise floor + margin): it only rises above this in a noisy room (audio.endpointing).
    speech_threshold_dbfs: float = -45.0
    vad: str = "silero"  # what tells speech from noise: "silero" (robust in a noisy lobby) or "energy" (quiet room)
    vad_threshold: float = 0.5  # Silero speech probability from which a frame is speech
    vad_margin_db: float = SILERO_MARGIN_DB  # Silero speech must be this much louder than the noise floor
    preroll_s: float = PREROLL_S  # audio before the start of speech that Vosk hears too (the first word's onset)
    # Silero only: after this much silence the words so far are settled (see UtteranceRecognizer); None: never.
    settle_silence_s: float | None = SETTLE_SILENCE_S

    def endpointer(self, noise_floor_dbfs: float | None = None) -> Endpointer:
        """A fresh endpointer for one utterance with these settings."""
        return Endpointer(
            self.sample_rate,
            trailing_silence_s=self.trailing_silence_s,
            max_utterance_s=self.max_utterance_s,
            no_speech_timeout_s=self.no_speech_timeout_s,
            threshold_dbfs=self.speech_threshold_dbfs,
            noise_floor_dbfs=noise_floor_dbfs,
            vad=self.vad,
            vad_threshold=self.vad_threshold,
            margin_db=self.vad_margin_db if self.vad == "silero" else None,
        )


@dataclass(frozen=True)
class Transcript:
    text: str  # normalised: spaces collapsed, Vosk's "[unk]"/noise tokens removed
    final: bool
    ended_at: float | None = None  # loop time (seconds) when the utterance ended, for a final
    reason: str | None = None  # "silence" | "max_length" | "no_speech" | "stopped" (or finish's reason)
    audio_end_s: float | None = None  # where it ended in the audio fed since construction or reset()
    settled: bool = False
    """A partial at a pause: the words so far, complete (the final will be this text unless speech resumes)."""
    endpoint_s: float | None = None
    """For a final that the endpointer ended on silence: audio time from the end of speech to that decision."""


class _VoskWorker:
    """The worker thread (or the single-threaded executor given) that runs every Vosk call of one recognizer."""

    def __init__(self, executor: Executor | None) -> None:
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="vosk")
        self._closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _queue(self, fn: Callable[[], object]) -> None:
        self._executor.submit(fn)

    def close(self) -> None:
        """Stop the worker thread once queued work is done (only if this recognizer created it)."""
        if self._owns_executor and not self._closed:
            self._executor.shutdown(wait=False)
        self._closed = True


class UtteranceRecognizer(_VoskWorker):
    """One spoken question: partials while it is spoken, then one final when the endpointer decides it is over."""

    def __init__(self, model: SpeechModel, config: RecognizerConfig, *, executor: Executor | None = None) -> None:
        super().__init__(executor)
        self._model = model
        self._config = config
        self._bytes_per_s = config.sample_rate * SAMPLE_WIDTH
        self._rec: Any = None  # taken from the model on the worker (a new one takes tens of milliseconds)
        self._reset_sync(noise_floor=None)

    async def feed(self, chunk: AudioChunk) -> list[Transcript]:
        """Partials (final=False) as the text changes, and at most one final. The chunk is resampled as needed."""
        return await self._run(self._feed_sync, chunk, asyncio.get_running_loop().time())

    async def finish(self, reason: str = "stopped") -> Transcript:
        """Force the end now (push-to-talk released); returns the final given earlier if there was one."""
        return await self._run(self._finish_now, reason, asyncio.get_running_loop().time())

    def reset(self) -> None:
        """Ready for the next utterance; queued behind any feed in flight. The noise floor estimate is kept."""
        self._queue(lambda: self._reset_sync(self._endpointer.noise_floor_dbfs))

    def close(self) -> None:
        """Give the Vosk recognizer back to the model and stop the worker (if this recognizer created it)."""
        if not self._closed:
            self._queue(self._close_sync)
        super().close()

    def discard(self) -> None:
        """After a failure: drop the Vosk recognizer instead of giving a possibly broken one back for reuse."""
        if not self._closed:
            self._queue(self._drop_sync)
        super().close()

    def _drop_sync(self) -> None:
        self._rec = None

    def _close_sync(self) -> None:
        if self._rec is not None and self._final is None:
            self._rec.FinalResult()  # an utterance cut short: finish it so that the next one starts afresh
        self._release()

    def _reset_sync(self, noise_floor: float | None) -> None:
        config = self._config
        self._endpointer = config.endpointer(noise_floor)
        self._preroll = PreRoll(self._endpointer, config.preroll_s, config.sample_rate)
        self._segments: list[str] = []  # text of Vosk's own endpoints within this utterance
        self._text = ""  # the text as last reported
        self._final: Transcript | None = None
        self._settled = False  # the words so far were settled in this pause
        if self._rec is not None:
            self._rec.FinalResult()  # rather than Reset(), which would keep the features of the old utterance

    def _recognizer(self) -> Any:
        if self._rec is None:
            self._rec = self._model.take_recognizer(self._config.sample_rate)
        return self._rec

    def _release(self) -> None:
        """After FinalResult(): the Vosk recognizer goes back to the model for the next question."""
        if self._rec is not None:
            self._model.give_back(self._rec, self._config.sample_rate)
            self._rec = None

    def _feed_sync(self, chunk: AudioChunk, arrived: float) -> list[Transcript]:
        if self._final is not None:
            return []
        pcm = chunk.resampled(self._config.sample_rate).pcm
        out: list[Transcript] = []
        while pcm:
            end = self._endpointer.push(pcm)
            out += self._accept(self._preroll.take(pcm if end is None else pcm[: end.consumed]))
            if end is None:
                out += self._settle()
                break
            pcm = pcm[end.consumed :]
            # The chunk arrived when its last sample was heard: the utterance ended `len(pcm)` bytes earlier.
            final = self._end(end.reason, arrived - len(pcm) / self._bytes_per_s, end.offset_s)
            if final is not None:
                out.append(final)
                break
        return out

    def _accept(self, pcm: bytes) -> list[Transcript]:
        if not pcm:
            return []
        rec = self._recognizer()
        if rec.AcceptWaveform(pcm):
            segment = normalize_text(json.loads(rec.Result())["text"])
            self._segments += [segment] if segment else []
            partial = ""
        else:
            partial = normalize_text(json.loads(rec.PartialResult())["partial"])
        text = " ".join([*self._segments, partial] if partial else self._segments)
        if text == self._text:
            return []
        self._text = text
        if text:
            self._endpointer.note_words()
        return [Transcript(text, final=False)]

    def _settle(self) -> list[Transcript]:
        """The settled partial, once per pause: see the module docstring."""
        settle, endpointer = self._config.settle_silence_s, self._endpointer
        if settle is None or endpointer.vad != "silero" or endpointer.silence_s < settle:
            self._settled = False  # speaking (or not yet paused long enough)
            return []
        if self._settled or self._rec is None:
            return []
        self._settled = True
        last = normalize_text(json.loads(self._rec.FinalResult())["text"])
        self._segments += [last] if last else []
        text = " ".join(self._segments)
        if not text:
            return []
        self._text = text
        return [Transcript(text, final=False, settled=True)]

    def _end(self, reason: str, ended_at: float, audio_end_s: float, *, forced: bool = False) -> Transcript | None:
        """The final for an endpoint; None when the "speech" was noise without words and listening goes on."""
        # No Vosk recognizer yet: it never heard speech (one is taken only for audio to recognize).
        last = "" if self._rec is None else normalize_text(json.loads(self._rec.FinalResult())["text"])
        text = " ".join([*self._segments, last] if last else self._segments)
        if not text and reason == "silence" and not forced:
            log.debug("sound without words at %.2f s; still listening", audio_end_s)
            self._segments, self._text = [], ""
            self._endpointer.restart()
            return None
        endpoint_s = self._endpointer.silence_s if reason == "silence" and not forced else None
        self._final = Transcript(text, final=True, ended_at=ended_at, reason=reason, audio_end_s=audio_end_s,
                                 endpoint_s=endpoint_s)
        self._release()
        return self._final

    def _finish_now(self, reason: str, now: float) -> Transcript:
        final = self._final or self._end(reason, now, self._endpointer.elapsed_s, forced=True)
        assert final is not None  # a forced end always gives a final
        return final


class WakeWordSpotter(_VoskWorker):
    """Listens for the wake phrase only, with a recognizer restricted to the grammar [phrase, unknown word, *fillers].

    The phrase must consist of words in the model's vocabulary (RecognizerError otherwise: Vosk would only log a
    warning and drop the word). The fillers (DEFAULT_FILLERS unless given; words the model lacks are skipped) are
    what other speech is recognised as: without them nearly any speech comes out as the phrase.

    A hit is the phrase's words in a row, each with a confidence of at least `min_confidence`, in a final result.
    Finals come when the speech decision (`vad`, as for questions: `audio.endpointing`) hears `pause_s` without
    speech, at most `MAX_PHRASE_S` into speech, or at Vosk's own endpoint; Vosk's alone comes 1-1.5 s after the
    phrase. Vosk hears only speech (with a pre-roll), so the lobby's noise is no phrase to it. Partial
    results would be earlier still but carry no confidence, and (measured) sounds like the phrase pass through them.
    So the phrase needs a pause after it: "<phrase> <question>" said in one breath is not a hit."""

    def __init__(
        self,
        model: SpeechModel,
        phrase: str,
        sample_rate: int = 16000,
        *,
        fillers: Sequence[str] | None = None,
        min_confidence: float = 0.9,
        pause_s: float = 0.4,
        speech_threshold_dbfs: float = -45.0,
        vad: str = "silero",
        vad_threshold: float = 0.5,
        vad_margin_db: float = SILERO_MARGIN_DB,
        executor: Executor | None = None,
    ) -> None:
        words = phrase.split()
        unknown = [word for word in words if not model.knows(word)]
        if not words or unknown:
            raise RecognizerError(
                f"wake phrase {phrase!r}: {', '.join(map(repr, unknown)) or 'no words'} not in the vocabulary of the "
                f"speech model in {model.model_dir}; choose a phrase made of words that model knows"
            )
        super().__init__(executor)
        self.words = words
        garbage = [word for word in UNKNOWN_WORDS if model.knows(word)][:1]
        extra = [w for w in dict.fromkeys(DEFAULT_FILLERS if fillers is None else fillers) if w not in words]
        self.grammar = [" ".join(words), *garbage, *(w for w in extra if model.knows(w))]
        self.min_confidence = min_confidence
        self._model = model
        self._sample_rate = sample_rate
        self._rec: Any = None
        self._endpointer = Endpointer(
            sample_rate,
            trailing_silence_s=pause_s,
            max_utterance_s=MAX_PHRASE_S,
            no_speech_timeout_s=None,
            threshold_dbfs=speech_threshold_dbfs,
            vad=vad,
            vad_threshold=vad_threshold,
            margin_db=vad_margin_db if vad == "silero" else None,
        )
        self._preroll = PreRoll(self._endpointer, PREROLL_S, sample_rate)

    async def feed(self, chunk: AudioChunk) -> bool:
        """True once the phrase was heard; the spotter then starts afresh."""
        return await self._run(self._feed_sync, chunk)

    def reset(self) -> None:
        """Forget what was heard so far (queued behind any feed in flight)."""
        self._queue(self._reset_sync)

    def _reset_sync(self) -> None:
        self._endpointer.restart()
        if self._rec is not None:
            self._rec.FinalResult()  # rather than Reset(), which would keep the features heard so far

    def _feed_sync(self, chunk: AudioChunk) -> bool:
        if self._rec is None:
            grammar = json.dumps(self.grammar, ensure_ascii=False)  # Vosk does not decode "\uXXXX" escapes
            self._rec = vosk.KaldiRecognizer(self._model.vosk_model, self._sample_rate, grammar)
            self._rec.SetWords(True)  # for the confidences
        pcm = chunk.resampled(self._sample_rate).pcm
        while pcm:
            end = self._endpointer.push(pcm)
            part = self._preroll.take(pcm if end is None else pcm[: end.consumed])
            if part and self._rec.AcceptWaveform(part) and self._heard(self._rec.Result()):
                self._endpointer.restart()
                return True
            if end is None:
                return False
            pcm = pcm[end.consumed :]
            self._endpointer.restart()
            if self._heard(self._rec.FinalResult()):
                return True  # the rest of the chunk is the start of the question, not for the spotter
        return False

    def _heard(self, result: str) -> bool:
        """Whether a Vosk result (which also starts Vosk afresh) holds the phrase, confidently."""
        heard = [(word["word"], float(word["conf"])) for word in json.loads(result).get("result", [])]
        size = len(self.words)
        for start in range(len(heard) - size + 1):
            window = heard[start : start + size]
            if [word for word, _ in window] == self.words and min(conf for _, conf in window) >= self.min_confidence:
                log.info("wake phrase %r heard in %r", " ".join(self.words), heard)
                return True
        if heard:
            log.debug("not the wake phrase: %r", heard)
        return False


__all__ = [
    "DEFAULT_FILLERS",
    "MAX_PHRASE_S",
    "UNKNOWN_WORDS",
    "RecognizerConfig",
    "RecognizerError",
    "SpeechModel",
    "Transcript",
    "UtteranceRecognizer",
    "WakeWordSpotter",
]
