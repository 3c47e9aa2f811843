"""The whole voice loop through the running daemon: spoken WAV audio into its FIFO microphone, Vosk, the
transcript on the screen, the SmolLM2 answer, Piper, and audio written to its WAV speaker; barge-in,
half-duplex, the wake phrase, and a kiosk without audio devices.

The Korean Vosk model is the only one PyPI serves, so questions are Korean espeak-ng speech (phrases that
round-trip are listed in tests/speech.py); the English joe voice reads the answers.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import wave
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import Daemon, start_daemon
from tests.speech import concat, spoken
from tests.voice_rig import Mic, Screen, is_type, voice_screen

QUESTION = "버스 어디예요"  # comes back as "버스 어디에 요"
WAKE = "여보세요"  # the phrase the grammar-restricted spotter hears reliably (tests/speech.py)
LONG_ANSWER = "Tell me a long story about a lighthouse keeper and the sea, in many sentences."


@pytest.fixture(scope="module")
def voice_daemon(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Mic, Path]]:
    tmp = tmp_path_factory.mktemp("voice")
    mic = Mic(tmp / "mic")
    mic.start()
    out = tmp / "out.wav"
    daemon = start_daemon(tmp, "--model", str(test_model), "--max-tokens", "60", "--n-ctx", "1024",
                          "--audio-input", f"pipe:{tmp / 'mic'}", "--audio-output", f"wav:{out}",
                          "--wake-phrase", WAKE, "--listen-silence", "0.6", "--temperature", "0",
                          env={"KIOSKD_VOICE": "true"})  # temperature 0: the same answers (and speech) every run
    try:
        yield daemon, mic, out
    finally:
        daemon.stop(signal.SIGKILL)
        mic.close()


def screen(daemon: Daemon) -> AbstractAsyncContextManager[Screen]:
    return voice_screen(daemon.url)


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


async def ask(client: Screen, text: str) -> int:
    mark = client.mark()
    await client.send(type="chat", text=text, session=None)
    return mark


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 240))  # type: ignore[arg-type]


def test_spoken_question_is_transcribed_answered_and_spoken(voice_daemon: tuple[Daemon, Mic, Path]) -> None:
    daemon, mic, out = voice_daemon

    async def test() -> None:
        async with screen(daemon) as client:
            mark = client.mark()
            await client.send(type="listen", on=True)
            await client.wait_for(is_type("voice", listening=True), mark)
            mic.say(spoken(QUESTION))
            final = await client.wait_for(is_type("transcript", final=True), mark)
            partials = client.since(mark, "transcript")[:-1]
            assert partials and all(not r.frame["final"] for r in partials)
            assert "버스" in final.frame["text"]
            # At the pause the words were settled before the question ended, and the answer drafted from them.
            assert any(r.frame["settled"] and r.frame["text"] == final.frame["text"] for r in partials), partials
            await client.wait_for(is_type("voice", listening=False), mark)
            # The page asks the final transcript like a typed question.
            asked = await ask(client, final.frame["text"])
            done = await client.wait_for(is_type("done"), asked)
            assert done.frame["reason"] in ("stop", "length")
            timings = done.frame["timings"]
            assert timings["drafted_tokens"] > 0 and timings["draft_prompt_tokens"] > 0, timings
            assert timings["prompt_eval_tokens"] <= 1, timings  # the draft read the question
            await client.wait_for(is_type("speaking", state="started"), asked)
            await client.wait_for(is_type("voice", speaking=False), asked, within=60)
            spoken_sentences = client.since(asked, "speaking")
            queued = [r.frame["text"] for r in spoken_sentences if r.frame["state"] == "queued"]
            finished = [r.frame["text"] for r in spoken_sentences if r.frame["state"] == "finished"]
            assert queued and finished == queued
        assert wav_seconds(out) > 1.0
        status, body = daemon.get("/readyz")
        assert status == 200 and json.loads(body)["voice"]["available"] is True

    run(test())


def test_stop_silences_the_answer_within_200_ms(voice_daemon: tuple[Daemon, Mic, Path]) -> None:
    daemon, _mic, out = voice_daemon

    async def test() -> None:
        async with screen(daemon) as client:
            asked = await ask(client, LONG_ANSWER)
            started = await client.wait_for(is_type("speaking", state="started"), asked, within=60)
            await asyncio.sleep(0.3)
            size = out.stat().st_size
            sent = time.monotonic()
            await client.send(type="cancel")
            stopped = await client.wait_for(is_type("speaking", state="stopped"), asked, within=5)
            assert stopped.at - sent < 0.2, f"speech stopped {1000 * (stopped.at - sent):.0f} ms after stop"
            await asyncio.sleep(0.5)
            grown = out.stat().st_size - size
            assert grown < 0.3 * 22050 * 2 * 2, "audio kept playing after stop"  # < 0.6 s incl. the first 0.3 s
            assert started.at < stopped.at

    run(test())
    events = [json.loads(line) for line in Path(f"{out}.events").read_text().splitlines()]
    assert any(e["event"] == "stop_now" and e["seconds"] > 0 for e in events), "no queued audio was dropped"


def test_wake_phrase_interrupts_the_answer_and_listens(voice_daemon: tuple[Daemon, Mic, Path]) -> None:
    daemon, mic, _out = voice_daemon

    async def test() -> None:
        async with screen(daemon) as client:
            asked = await ask(client, LONG_ANSWER)
            await client.wait_for(is_type("speaking", state="started"), asked, within=60)
            mark = client.mark()
            mic.say(spoken(WAKE, trail_silence_s=0.3))
            stopped = await client.wait_for(is_type("speaking", state="stopped"), mark, within=10)
            await client.wait_for(is_type("voice", listening=True), mark, within=10)
            done = await client.wait_for(is_type("done"), asked)
            # The answer was still being written (then the wake phrase cancelled it) or had just been finished.
            assert done.frame["reason"] == "cancelled" or done.at <= stopped.at
            mic.say(spoken(QUESTION))
            final = await client.wait_for(is_type("transcript", final=True), mark, within=20)
            assert "버스" in final.frame["text"]

    run(test())


@pytest.mark.parametrize("half_duplex", [True, False])
def test_the_kiosk_does_not_take_its_own_voice_for_a_question(
        test_model: Path, tmp_path: Path, half_duplex: bool) -> None:
    """Listening is on while the kiosk reads an answer aloud and the microphone hears that voice. Half-duplex
    (the default) ignores it; the control case without it shows the echo would have become a question."""
    mic = Mic(tmp_path / "mic")
    mic.start()
    daemon = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "60", "--n-ctx", "1024",
                          "--audio-input", f"pipe:{tmp_path / 'mic'}", "--audio-output", f"wav:{tmp_path / 'o.wav'}",
                          "--half-duplex", str(half_duplex).lower(), "--listen-timeout", "30",
                          env={"KIOSKD_VOICE": "true"})
    # What the microphone hears while the kiosk speaks: the kiosk's own (English) voice, and in it words the
    # Korean model always catches, so the control case can show that anything reaching the recognizer is heard.
    echo = concat(spoken("The lighthouse keeper walked down to the sea every morning.", voice="en",
                         trail_silence_s=0.1), spoken(QUESTION, lead_silence_s=0.1, trail_silence_s=0.3))

    heard_within = 5.0 if half_duplex else 20.0

    def is_heard(frame: dict[str, Any]) -> bool:
        return frame["type"] == "transcript" and bool(frame["final"]) and bool(frame["text"].strip())

    async def attempt(client: Screen) -> list[str] | None:
        """The final transcripts heard; None when the kiosk stopped speaking before the echo ended (the test
        model's answer was short, or its voice skipped Chinese characters): the rest of the echo was then a
        visitor's voice to the kiosk, rightly heard, and the attempt proves nothing."""
        await client.send(type="listen", on=True)
        asked = await ask(client, LONG_ANSWER)
        started = await client.wait_for(is_type("speaking", state="started"), asked, within=60)
        echo_ends = mic.say(echo)  # What the microphone hears of the kiosk's own speaker.
        # A slow machine recognizes seconds behind the microphone while the model and the voice share its
        # cores: the control case waits for the transcript, half-duplex as long as one would take to come.
        with suppress(AssertionError):
            await client.wait_for(is_heard, asked, within=max(0.0, echo_ends - time.monotonic()) + heard_within)
        silent = [r.at for r in client.since(asked, "voice") if r.frame.get("speaking") is False and r.at > started.at]
        if silent and silent[0] < echo_ends:
            await client.send(type="cancel")
            return None
        return [r.frame["text"] for r in client.since(asked, "transcript") if r.frame["final"]]

    async def test() -> list[str]:
        async with screen(daemon) as client:
            for _ in range(3):
                if (heard := await attempt(client)) is not None:
                    return heard
                await client.send(type="listen", on=False)
                await asyncio.sleep(1.0)
            pytest.fail("in three answers the kiosk never spoke for as long as the echo lasted")

    try:
        heard: list[str] = []

        async def collect() -> None:
            heard.extend(await test())

        run(collect())
    finally:
        daemon.stop(signal.SIGKILL)
        mic.close()
    if half_duplex:
        assert [text for text in heard if text.strip()] == []
    else:
        assert any(text.strip() for text in heard), "control: without half-duplex the echo should be heard"


def test_without_audio_devices_voice_is_reported_and_text_chat_works(
        daemon_factory: object, test_model: Path) -> None:
    daemon = daemon_factory("--model", str(test_model), "--max-tokens", "16",  # type: ignore[operator]
                            "--audio-input", "default", "--audio-output", "default", env={"KIOSKD_VOICE": "true"})

    async def test() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
            client = Screen(ws)
            try:
                hello = (await client.wait_for(is_type("hello"))).frame
                assert hello["voice"]["available"] is False

                def names_both(f: dict[str, object]) -> bool:
                    detail = str(f.get("detail") or "")
                    return f["type"] == "voice" and "microphone" in detail and "speaker" in detail

                # The voice path may have found out before the page connected (then hello says it already).
                unavailable = hello["voice"] if names_both(hello["voice"]) else \
                    (await client.wait_for(names_both, within=30)).frame
                assert unavailable["available"] is False
                mark = client.mark()
                await client.send(type="listen", on=True)
                refused = await client.wait_for(is_type("error"), mark)
                assert refused.frame["code"] == "voice_unavailable" and "microphone" in refused.frame["message"]
                asked = await ask(client, "Hello")
                assert (await client.wait_for(is_type("done"), asked)).frame["reason"] in ("stop", "length")
            finally:
                await client.close()

    run(test())
    status, body = daemon.get("/readyz")  # type: ignore[attr-defined]
    voice = json.loads(body)["voice"]
    assert status == 200 and voice["available"] is False and "microphone" in voice["detail"]
