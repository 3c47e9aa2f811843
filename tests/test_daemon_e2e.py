"""The real daemon as a process, the real SmolLM2 model, real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path

import aiohttp
import openai
import pytest

from tests.conftest import Daemon, start_daemon
from tests.wsclient import ask, ask_once

# The installed distribution's version: the daemon must report the release it runs.
daemon_version = version("kioskd")

LONG_QUESTION = "Write a very long story about a lighthouse keeper and the sea."


@pytest.fixture(scope="module")
def daemon(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("daemon")
    d = start_daemon(tmp, "--model", str(test_model), "--max-tokens", "200", "--temperature", "0",
                     "--queue-size", "4")
    yield d
    assert d.stop() == 0, d.log()


def run(coro: object) -> object:
    return asyncio.run(asyncio.wait_for(coro, 120))  # type: ignore[arg-type]


def test_ws_answer_streams_as_many_frames(daemon: Daemon) -> None:
    answer = run(ask_once(daemon.url, LONG_QUESTION))
    assert answer.session and answer.done, answer
    assert answer.done["reason"] in ("stop", "length")
    assert len(answer.tokens) >= 20, "an answer arrives as many token frames"
    # Streaming, not buffering: the frames are spread over the generation time.
    spread = answer.token_times[-1] - answer.token_times[0]
    assert spread > 0.5 * (answer.done["timings"]["total_ms"] - answer.done["timings"]["ttft_ms"]) / 1000
    usage, timings = answer.done["usage"], answer.done["timings"]
    assert usage["completion_tokens"] >= len(answer.tokens)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < timings["prompt_eval_tokens"] <= usage["prompt_tokens"]
    assert timings["ttft_ms"] > 0 and timings["tokens_per_s"] > 0


def test_ws_cancel_stops_the_answer(daemon: Daemon) -> None:
    answer = run(ask_once(daemon.url, LONG_QUESTION, cancel_after=5))
    assert answer.done and answer.done["reason"] == "cancelled", answer
    assert 5 <= len(answer.tokens) < 40
    assert answer.done["usage"]["completion_tokens"] < 40


def test_follow_up_sees_earlier_turns_and_reuses_the_cache(daemon: Daemon) -> None:
    async def conversation() -> tuple[dict[str, object], dict[str, object], str]:
        async with aiohttp.ClientSession() as http, http.ws_connect(daemon.url + "/ws") as ws:
            first = await ask(ws, "My name is Alice. Remember it.")
            second = await ask(ws, "What is my name?", session=first.session)
            assert first.done and second.done and second.session == first.session
            return first.done, second.done, second.text

    first, second, _ = run(conversation())  # type: ignore[misc]
    first_total = first["usage"]["total_tokens"]  # type: ignore[index]
    assert second["usage"]["prompt_tokens"] > first_total  # type: ignore[index]
    # Only the new question is read: the earlier turns come from the KV cache.
    assert second["timings"]["prompt_eval_tokens"] < 40  # type: ignore[index]


def test_chinese_streams_intact(daemon: Daemon) -> None:
    # SmolLM2's vocabulary is mostly English: a Chinese character takes two or three byte tokens, so a frame
    # sent per token would carry half characters. The exact wording at temperature 0 depends on the CPU's
    # kernels, so the answer is only required to be Chinese, with more tokens than characters.
    answer = run(ask_once(daemon.url, "请重复这句话：我爱北京天安门。"))
    assert answer.done, answer
    assert all("\ufffd" not in piece for piece in answer.tokens), "no half characters in any frame"
    chinese = sum("\u4e00" <= ch <= "\u9fff" for ch in answer.text)
    assert chinese >= 4, answer.text
    assert answer.done["usage"]["completion_tokens"] > len(answer.text), "characters were split across tokens"


def test_disconnect_frees_the_engine_for_the_next_client(daemon: Daemon) -> None:
    async def scenario() -> float:
        await ask_once(daemon.url, LONG_QUESTION, disconnect_after=3)
        follow = await ask_once(daemon.url, "Say hi.")
        assert follow.done, follow
        return float(follow.done["timings"]["queue_ms"])

    queue_ms = run(scenario())
    assert queue_ms < 1000, "the abandoned answer must not keep the model busy"
    status, body = daemon.get("/readyz")
    assert status == 200 and json.loads(body)["busy"] is False
    assert json.loads(body)["version"] == daemon_version


def test_openai_client_streams_and_completes(daemon: Daemon) -> None:
    client = openai.OpenAI(base_url=daemon.url + "/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == [daemon_model_id(daemon)]
    chunks = list(client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": LONG_QUESTION}], stream=True, max_tokens=40))
    contents = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(contents) >= 10
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    reply = client.chat.completions.create(
        model="any", messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=30,
        temperature=0)
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 30


def daemon_model_id(daemon: Daemon) -> str:
    return Path(daemon.args[daemon.args.index("--model") + 1]).stem


def test_busy_queue_answers_503(test_model: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--queue-size", "0", "--max-tokens", "300",
                       "--retry-after", "7")

    async def scenario() -> tuple[int, dict[str, str], dict[str, object]]:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            await ws.send_str(json.dumps({"type": "chat", "session": None, "text": LONG_QUESTION}))
            while json.loads((await ws.receive()).data)["type"] != "token":
                pass  # The model is now busy with this answer.
            body = {"messages": [{"role": "user", "content": "hi"}]}
            async with http.post(d.url + "/v1/chat/completions", json=body) as resp:
                return resp.status, dict(resp.headers), await resp.json()

    status, headers, body = run(scenario())  # type: ignore[misc]
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert body["error"]["code"] == "busy"  # type: ignore[index]


def test_readyz_is_503_until_the_model_is_loaded(test_model: Path,
                                                 daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--fault-load-delay", "2", wait=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            status, _ = d.get("/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    assert status == 200, "the loop answers while the model loads"
    status, body = d.get("/readyz")
    assert status == 503 and json.loads(body) == {"status": "loading", "version": daemon_version,
                                                  "engine": {"kind": "local", "serving": "local"}}
    d.wait_ready()
    assert d.get("/readyz")[0] == 200


def test_sigterm_mid_answer_exits_cleanly(test_model: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--max-tokens", "2000")

    async def start_answer() -> None:
        async with aiohttp.ClientSession() as http, http.ws_connect(d.url + "/ws") as ws:
            await ws.send_str(json.dumps({"type": "chat", "session": None, "text": LONG_QUESTION}))
            for _ in range(5):
                await ws.receive()
            d.proc.send_signal(signal.SIGTERM)
            closing = await asyncio.wait_for(ws.receive(), 20)
            while closing.type == aiohttp.WSMsgType.TEXT:
                closing = await asyncio.wait_for(ws.receive(), 20)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)

    run(start_answer())
    assert d.stop(timeout=20) == 0, d.log()


def test_sigterm_mid_stream_ends_the_http_answer_promptly(test_model: Path,
                                                          daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--max-tokens", "4000")

    async def stream_then_stop() -> float:
        body = {"messages": [{"role": "user", "content": LONG_QUESTION}], "stream": True}
        async with aiohttp.ClientSession() as http, http.post(d.url + "/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            await resp.content.readline()
            signalled = time.perf_counter()
            d.proc.send_signal(signal.SIGTERM)
            async for _ in resp.content:
                pass
            return time.perf_counter() - signalled

    ended_after = run(stream_then_stop())
    assert d.stop(timeout=20) == 0, d.log()
    assert ended_after < 10, "shutdown must cut a long answer short, not wait for all 4000 tokens"
