"""GET /metrics: a real daemon with SmolLM2 answers over the WebSocket and the OpenAI API, then a real scrape is
parsed with prometheus_client's own parser and its counts must add up to what the answers reported. Knowledge
kinds and history writes come from the real app with a scripted engine (cheap), the voice stages from the link."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from prometheus_client.parser import text_string_to_metric_families

from daemon import __version__
from daemon.appkeys import METRICS, SETTINGS
from daemon.metrics import Metrics
from daemon.models.catalogue import lookup
from daemon.settings import load_settings
from daemon.voice_link import VoiceLink
from tests.conftest import AUTH, TEST_MODEL, Daemon, lan_address, start_daemon
from tests.fakes import ScriptedEngine, serve
from tests.test_knowledge_protocol import VENUE
from tests.test_ws_protocol import connect
from tests.wsclient import Answer, ask, read_answer

LAN = lan_address()
Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    return [(s.name, dict(s.labels), s.value) for family in text_string_to_metric_families(text)
            for s in family.samples]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels`."""
    return sum(v for n, got, v in samples if n == name and labels.items() <= got.items())


def labelled(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {got[label]: v for n, got, v in samples if n == name and label in got}


async def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics", headers=headers or {}) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 180))


@pytest.fixture(scope="module")
def kiosk(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """No waiting line (a second question while one is answered is refused as busy); on every interface when
    this machine has a LAN address, so the token rule can be tried from it."""
    d = start_daemon(tmp_path_factory.mktemp("metrics"), "--model", str(test_model), "--queue-size", "0",
                     "--max-tokens", "48", "--temperature", "0", "--host", "0.0.0.0" if LAN else "127.0.0.1")
    yield d
    assert d.stop() == 0, d.log()


async def openai_answers(url: str) -> list[tuple[str, int, int]]:
    """Two answers over /v1 (whole and streamed): (finish reason, prompt tokens, completion tokens) each."""
    client = AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)
    whole = await client.chat.completions.create(model="m", max_tokens=6,
                                                 messages=[{"role": "user", "content": "Say hello."}])
    assert whole.usage is not None
    out = [(whole.choices[0].finish_reason, whole.usage.prompt_tokens, whole.usage.completion_tokens)]
    stream = await client.chat.completions.create(model="m", max_tokens=5, stream=True,
                                                  stream_options={"include_usage": True},
                                                  messages=[{"role": "user", "content": "Name a colour."}])
    reason = ""
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            reason = chunk.choices[0].finish_reason
        if chunk.usage is not None:
            out.append((reason, chunk.usage.prompt_tokens, chunk.usage.completion_tokens))
    await client.close()
    return out


async def busy_refusal(http: aiohttp.ClientSession, url: str) -> tuple[Answer, int, Any]:
    """A WebSocket answer; while it is being written, an OpenAI request (no waiting line: refused as busy)."""
    async with http.ws_connect(url + "/ws") as ws:
        await ws.receive()  # hello
        await ws.send_str(json.dumps({"type": "chat", "session": None, "text": "Count from 1 to 100."}))
        answer = Answer()
        while not answer.tokens:
            frame = json.loads((await asyncio.wait_for(ws.receive(), 60)).data)
            assert frame["type"] not in ("done", "error"), frame
            if frame["type"] == "token":
                answer.tokens.append(frame["text"])
        async with http.post(url + "/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}) as resp:
            status, body = resp.status, await resp.json()
        return await read_answer(ws, answer), status, body


def test_a_scrape_adds_up_to_the_answers_made(kiosk: Daemon) -> None:
    async def test() -> None:
        _, _, before_text = await scrape(kiosk.url)
        before = parse(before_text)
        async with aiohttp.ClientSession() as http, http.ws_connect(kiosk.url + "/ws") as ws:
            await ws.receive()  # hello
            ws_answers = [await ask(ws, q) for q in ("Hello!", "What is 2 + 2?", "Name a fruit.")]
            await ws.send_str("{not json")  # an error frame: bad_json
            assert json.loads((await ws.receive()).data)["code"] == "bad_json"
            async with http.post(kiosk.url + "/v1/chat/completions", json={"messages": []}) as resp:
                assert resp.status == 400
                invalid_code = (await resp.json())["error"]["code"]
            long_answer, busy_status, busy_body = await busy_refusal(http, kiosk.url)
            api = await openai_answers(kiosk.url)
            for _ in range(50):  # the busy test's socket is closed: its handler ends a moment later
                status, content_type, text = await scrape(kiosk.url)
                if value(parse(text), "kioskd_websockets_open") == 1:
                    break
                await asyncio.sleep(0.1)
        return before, [*ws_answers, long_answer], api, (busy_status, busy_body, invalid_code), \
            (status, content_type, text)

    before, ws_answers, api, (busy_status, busy_body, invalid_code), (status, content_type, text) = run(test())
    assert busy_status == 503 and busy_body["error"]["code"] == "busy", busy_body
    assert status == 200 and content_type.startswith("text/plain; version=0.0.4")
    after = parse(text)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    dones = [a.done for a in ws_answers]
    assert all(dones), ws_answers
    reasons = [d["reason"] for d in dones if d] + [reason for reason, _, _ in api]
    answers = len(reasons)
    assert answers == 6
    assert delta("kioskd_request_success_total") == answers
    for reason in set(reasons):
        assert delta("kioskd_request_success_total", finished_reason=reason) == reasons.count(reason), reason
    completion = sum(d["usage"]["completion_tokens"] for d in dones if d) + sum(c for _, _, c in api)
    prompt = sum(d["usage"]["prompt_tokens"] for d in dones if d) + sum(p for _, p, _ in api)
    evaluated = sum(d["timings"]["prompt_eval_tokens"] for d in dones if d)
    assert delta("kioskd_generation_tokens_total") == completion > 0
    assert delta("kioskd_prompt_tokens_total") + delta("kioskd_prompt_tokens_cached_total") == prompt
    assert delta("kioskd_prompt_tokens_total") >= evaluated > 0
    for histogram in ("kioskd_time_to_first_token_seconds", "kioskd_e2e_request_latency_seconds",
                      "kioskd_request_queue_time_seconds"):
        assert delta(histogram + "_count") == answers, histogram
    ttfts = [d["timings"]["ttft_ms"] / 1000 for d in dones if d]
    assert delta("kioskd_time_to_first_token_seconds_sum") >= sum(ttfts) * 0.999
    several = [d["usage"]["completion_tokens"] for d in dones if d] + [c for _, _, c in api]
    assert delta("kioskd_time_per_output_token_seconds_count") == sum(1 for n in several if n >= 2) > 0
    assert delta("kioskd_knowledge_answers_total", kind="ordinary") == answers
    assert delta("kioskd_errors_total", code="busy") == 1 and delta("kioskd_busy_refusals_total") == 1
    assert delta("kioskd_errors_total", code="bad_json") == 1
    assert delta("kioskd_errors_total", code=invalid_code) == 1
    assert value(after, "kioskd_model_loaded") == 1 and value(after, "kioskd_voice_available") == 0
    assert value(after, "kioskd_websockets_open") == 1  # the scrape ran inside the first connection
    assert value(after, "kioskd_num_requests_waiting") == 0 and value(after, "kioskd_num_requests_running") == 0
    assert delta("kioskd_history_writes_deferred_total") == 0 == delta("kioskd_history_writes_failed_total")


def test_the_model_info_names_the_model_its_sha256_and_the_version(kiosk: Daemon) -> None:
    model = json.loads(kiosk.get("/v1/models")[1])["data"][0]["id"]
    info: dict[str, str] = {}
    for _ in range(100):  # the sha256 is filled in after READY, from a thread
        _, _, text = run(scrape(kiosk.url))
        info = next(labels for name, labels, _ in parse(text) if name == "kioskd_model_info")
        if info["sha256"]:
            break
        run(asyncio.sleep(0.1))
    assert info == {"model": model, "sha256": lookup(TEST_MODEL).sources[0].sha256, "version": __version__}


@pytest.mark.skipif(LAN is None, reason="this machine has no non-loopback IPv4 address to call from")
@pytest.mark.parametrize("path", ["/metrics", "/status", "/metrics/"])
def test_other_machines_need_the_token_like_for_the_api(kiosk: Daemon, path: str) -> None:
    async def get(headers: dict[str, str]) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://{LAN}:{kiosk.port}{path}", headers=headers) as resp:
            return resp.status, await resp.text()

    status, body = run(get({}))
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized"
    assert "kioskd_" not in body
    assert run(get({"Authorization": "Bearer wrong"}))[0] == 401
    if path != "/metrics/":
        status, body = run(get(AUTH))
        assert status == 200 and ("kioskd_model_info" in body if path == "/metrics" else '"ready"' in body)
    _, _, text = run(scrape(kiosk.url))  # from the device itself: no token needed
    assert value(parse(text), "kioskd_errors_total", code="unauthorized") >= 2


# ---- the cheap ways: a scripted engine in the real app ----

def test_knowledge_answers_are_counted_by_kind(tmp_path: Path) -> None:
    for name, text in VENUE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")

    async def test() -> Samples:
        engine = ScriptedEngine(["We", " open", " at", " 10", ":00", " on", " weekends", "."])
        async with serve(engine, knowledge=str(tmp_path)) as served, connect(served) as client:
            kinds = [(await client.chat(q))[-1]["knowledge"] for q in (
                "How can I get a library card?", "When do you open on Saturday?", "Is there parking?",
                "Write a poem about autumn", "Is there parking?")]
            assert kinds == ["faq", "grounded", "fallback", "ordinary", "fallback"], kinds
            return parse((await scrape(served.url))[2])

    samples = run(test())
    assert labelled(samples, "kioskd_knowledge_answers_total", "kind") == {
        "faq": 1, "grounded": 1, "fallback": 2, "ordinary": 1}
    assert value(samples, "kioskd_request_success_total", finished_reason="stop") == 5
    # The model was asked twice (grounded, ordinary): only those waited for it and read prompt tokens.
    assert value(samples, "kioskd_request_queue_time_seconds_count") == 2
    assert value(samples, "kioskd_time_to_first_token_seconds_count") == 5


def test_history_writes_deferred_and_lost_are_counted() -> None:
    """A turn the locked database refuses waits (deferred); still locked at shutdown, it is lost (failed)."""
    async def test() -> tuple[Metrics, int]:
        async with serve(ScriptedEngine(["Hi", "."])) as served, connect(served) as client:
            session = (await client.chat("Hello!"))[0]["session"]  # stored: the database exists
            path = served.app[SETTINGS].current.history_file
            with closing(sqlite3.connect(path, isolation_level=None, timeout=10)) as locker:
                locker.execute("BEGIN EXCLUSIVE")
                frames = await client.chat("Are you there?", session)
                assert frames[-1]["stored"] is False, frames
                deferred = value(parse((await scrape(served.url))[2]), "kioskd_history_writes_deferred_total")
                await client.ws.close()
                metrics = served.app[METRICS]
                await served.runner.cleanup()  # the last attempt at shutdown finds the file still locked
                locker.execute("ROLLBACK")
        return metrics, int(deferred)

    metrics, deferred = run(test())
    assert deferred == 2  # the question and its answer
    assert value(parse(metrics.exposition().decode()), "kioskd_history_writes_failed_total") == 2


def test_voice_stages_are_timed_from_the_transcript_and_the_spoken_sentences(tmp_path: Path) -> None:
    pytest.importorskip("vosk")
    from audio.recognizer import Transcript
    from audio.speaker import Sentence

    async def test() -> Metrics:
        metrics = Metrics()
        link = VoiceLink(load_settings({"state_dir": str(tmp_path), "voice": False}, environ={}), metrics)
        now = asyncio.get_running_loop().time()
        link.transcript(Transcript("when do you open", final=True, ended_at=now - 0.25, reason="silence",
                                   endpoint_s=0.4))
        link.transcript(Transcript("", final=True, ended_at=now, reason="no_speech"))  # nothing was said
        link.transcript(Transcript("when do", final=False))
        spoken: list[Sentence] = []

        class Service:
            async def stop_speaking(self) -> None: ...

            def speak(self, on_event: Any, on_first: Any) -> None:
                on_event(Sentence("started", "Hello.", synth_ms=150.0, audio_ms=600.0))
                on_event(Sentence("finished", "Hello."))

        link._service = Service()  # type: ignore[assignment]
        await link.speak(object(), spoken.append)  # type: ignore[arg-type]
        assert [s.state for s in spoken] == ["started", "finished"]  # the page still hears every event
        return metrics

    samples = parse(run(test()).exposition().decode())
    assert value(samples, "kioskd_speech_recognition_seconds_count") == 1
    assert 0.25 <= value(samples, "kioskd_speech_recognition_seconds_sum") < 1.0
    assert value(samples, "kioskd_speech_endpoint_seconds_sum") == 0.4
    assert value(samples, "kioskd_tts_real_time_factor_count") == 1
    assert value(samples, "kioskd_tts_real_time_factor_sum") == pytest.approx(0.25)


def test_every_daemon_has_a_registry_of_its_own() -> None:
    first, second = Metrics(), Metrics()
    first.error("busy", "the model is busy")
    assert value(parse(first.exposition().decode()), "kioskd_busy_refusals_total") == 1
    assert value(parse(second.exposition().decode()), "kioskd_busy_refusals_total") == 0


# ---- the voice stages, through the real voice path ----

def test_a_spoken_question_fills_the_voice_stage_histograms(test_model: Path, tmp_path: Path) -> None:
    """Speech into the daemon's FIFO microphone, Vosk, the answer read aloud by Piper: each stage observed once
    per question (recognition, endpoint) or per spoken sentence (real-time factor)."""
    pytest.importorskip("vosk")
    from tests.speech import spoken
    from tests.test_voice_e2e import QUESTION
    from tests.voice_rig import Mic, is_type, voice_screen

    mic = Mic(tmp_path / "mic")
    mic.start()
    d = start_daemon(tmp_path, "--model", str(test_model), "--max-tokens", "24", "--temperature", "0",
                     "--audio-input", f"pipe:{tmp_path / 'mic'}", "--audio-output", f"wav:{tmp_path / 'out.wav'}",
                     "--listen-silence", "0.6", env={"KIOSKD_VOICE": "true"})

    async def test() -> tuple[int, Samples, dict[str, Any]]:
        async with voice_screen(d.url) as screen:
            mark = screen.mark()
            await screen.send(type="listen", on=True)
            await screen.wait_for(is_type("voice", listening=True), mark)
            mic.say(spoken(QUESTION))
            final = await screen.wait_for(is_type("transcript", final=True), mark)
            asked = screen.mark()
            await screen.send(type="chat", text=final.frame["text"], session=None)
            await screen.wait_for(is_type("done"), asked)
            await screen.wait_for(is_type("voice", speaking=False), asked, within=60)
            started = len([r for r in screen.since(asked, "speaking") if r.frame["state"] == "started"])
            return started, parse((await scrape(d.url))[2]), json.loads(d.get("/status")[1])

    try:
        sentences, samples, line = run(test())
    finally:
        d.stop(signal.SIGKILL)
        mic.close()
    print(f"recognition {value(samples, 'kioskd_speech_recognition_seconds_sum'):.3f} s, endpoint "
          f"{value(samples, 'kioskd_speech_endpoint_seconds_sum'):.3f} s, real-time factor "
          f"{value(samples, 'kioskd_tts_real_time_factor_sum') / max(1, sentences):.3f} over {sentences} sentence(s)")
    assert value(samples, "kioskd_voice_available") == 1 and line["voice"] == "on"
    assert value(samples, "kioskd_speech_recognition_seconds_count") == 1
    assert 0 < value(samples, "kioskd_speech_recognition_seconds_sum") < 5
    assert value(samples, "kioskd_speech_endpoint_seconds_count") == 1
    assert value(samples, "kioskd_speech_endpoint_seconds_sum") == pytest.approx(0.6, abs=0.05)  # listen_silence
    assert sentences > 0 and value(samples, "kioskd_tts_real_time_factor_count") == sentences
    assert 0 < value(samples, "kioskd_tts_real_time_factor_sum") / sentences < 5
