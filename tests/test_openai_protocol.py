"""The OpenAI-compatible API and health endpoints over real sockets, with the official `openai` client."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from daemon.messages import ChatMessage, PromptTooLong, Timings
from tests.fakes import ScriptedEngine, Served, prompt_tokens, serve

LONG = [f"w{i} " for i in range(400)]


class ServerThread:
    """The app served by its own event loop on a background thread, so the sync `openai` client can call it."""

    def __init__(self, engine: ScriptedEngine, settings: dict[str, object]) -> None:
        self._engine, self._settings = engine, settings
        self._started = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.served: Served | None = None

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with serve(self._engine, **self._settings) as served:
            self.served = served
            self._started.set()
            await self._stop.wait()

    def start(self) -> Served:
        self._thread.start()
        assert self._started.wait(5), "the server did not start"
        assert self.served is not None
        return self.served

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the server did not stop"


Start = Callable[..., tuple[Served, openai.OpenAI]]


@pytest.fixture
def start() -> Iterator[Start]:
    """start(engine, **settings) -> (served, client): the app on a free port and an OpenAI client for it."""
    servers: list[ServerThread] = []
    clients: list[openai.OpenAI] = []

    def start(engine: ScriptedEngine, **settings: object) -> tuple[Served, openai.OpenAI]:
        servers.append(ServerThread(engine, settings))
        served = servers[-1].start()
        clients.append(openai.OpenAI(base_url=f"{served.url}/v1", api_key="x", max_retries=0, timeout=5))
        return served, clients[-1]

    yield start
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


def request(served: Served, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], Any]:
    """A raw GET (or POST when body is given); the status, headers and decoded JSON body."""
    req = urllib.request.Request(served.url + path, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def eventually(check: Callable[[], bool], limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


# ---- completions ----

def test_completion_returns_content_finish_reason_usage_and_timings(start: Start) -> None:
    engine = ScriptedEngine(["Hel", "lo", "!"], model_id="tiny-chat")
    _, client = start(engine)
    completion = client.chat.completions.create(model="anything", messages=USER)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Hello!"
    assert choice.finish_reason == "stop"
    assert completion.model == "tiny-chat" and completion.object == "chat.completion"
    prompt = prompt_tokens(engine.requests[0])
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, 3)
    assert completion.usage.total_tokens == prompt + 3
    assert completion.model_extra is not None
    assert set(completion.model_extra["timings"]) == set(Timings.__dataclass_fields__)


def test_messages_and_sampling_reach_the_engine(start: Start) -> None:
    engine = ScriptedEngine(["ok"])
    _, client = start(engine, system_prompt="Default prompt.", max_tokens=64)
    client.chat.completions.create(
        model="m", temperature=0.2, top_p=0.5, seed=42, stop=["END"], max_tokens=10, extra_body={"top_k": 7},
        messages=[{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Q1"},
                  {"role": "assistant", "content": "A1"},
                  {"role": "user", "content": [{"type": "text", "text": "Q"}, {"type": "text", "text": "2"}]}])
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "plain"}])
    first, second = engine.requests
    assert first.messages == (ChatMessage("system", "Be terse."), ChatMessage("user", "Q1"),
                              ChatMessage("assistant", "A1"), ChatMessage("user", "Q2"))
    s = first.sampling
    assert (s.temperature, s.top_p, s.top_k, s.seed, s.stop, s.max_tokens) == (0.2, 0.5, 7, 42, ("END",), 10)
    assert second.messages == (ChatMessage("system", "Default prompt."), ChatMessage("user", "plain"))
    assert second.sampling.max_tokens == 64


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_is_capped_by_the_daemon_setting(start: Start, field: str) -> None:
    engine = ScriptedEngine(["a", "b", "c", "d", "e"])
    _, client = start(engine, max_tokens=3)
    if field == "max_tokens":
        completion = client.chat.completions.create(model="m", messages=USER, max_tokens=1000)
    else:
        completion = client.chat.completions.create(model="m", messages=USER, max_completion_tokens=1000)
    assert engine.requests[0].sampling.max_tokens == 3
    assert completion.choices[0].message.content == "abc"
    assert completion.choices[0].finish_reason == "length"


def test_cancelled_is_reported_as_length(start: Start) -> None:
    _, client = start(ScriptedEngine(["cut"], end_reason="cancelled"))
    completion = client.chat.completions.create(model="m", messages=USER)
    assert completion.choices[0].finish_reason == "length"


def test_streaming_deltas_role_first_finish_last_and_usage_chunk(start: Start) -> None:
    pieces = ["你好", "，", "world", "！"]
    engine = ScriptedEngine(pieces)
    _, client = start(engine)
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(pieces)
    with_choices = [c for c in chunks if c.choices]
    assert [c.choices[0].finish_reason for c in with_choices] == [None] * (len(with_choices) - 1) + ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces)
    assert chunks[-1].usage.prompt_tokens == prompt_tokens(engine.requests[0])
    assert len({c.id for c in chunks}) == 1 and chunks[0].object == "chat.completion.chunk"


def test_streaming_without_include_usage_has_no_usage_chunk(start: Start) -> None:
    _, client = start(ScriptedEngine(["a", "b"]))
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(c.choices and c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_list_names_the_engine_model(start: Start) -> None:
    _, client = start(ScriptedEngine(model_id="qwen-kiosk"))
    assert [m.id for m in client.models.list()] == ["qwen-kiosk"]


# ---- refusals ----

def test_busy_is_503_with_retry_after(start: Start) -> None:
    engine = ScriptedEngine(LONG, delay=0.01, queue_size=0)
    _, client = start(engine, retry_after=9)
    stream = client.chat.completions.create(model="m", messages=USER, stream=True)
    with stream:
        next(iter(stream))  # the first client now holds the model
        for stream_too in (False, True):
            with pytest.raises(openai.APIStatusError) as caught:
                client.chat.completions.create(model="m", messages=USER, stream=stream_too)
            assert caught.value.status_code == 503
            assert caught.value.response.headers["Retry-After"] == "9"
            assert caught.value.response.json()["error"]["code"] == "busy"


def test_not_ready_is_503_model_loading(start: Start) -> None:
    engine = ScriptedEngine(ready=False)
    served, client = start(engine)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="m", messages=USER)
    assert caught.value.status_code == 503
    assert caught.value.response.json()["error"]["code"] == "model_loading"
    assert caught.value.response.headers["Retry-After"] == "2"
    assert request(served, "/readyz")[0] == 503
    engine.ready = True
    assert request(served, "/readyz")[0] == 200


def test_engine_error_is_an_openai_error(start: Start) -> None:
    _, client = start(ScriptedEngine(error=PromptTooLong))
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="m", messages=USER)
    assert caught.value.response.json()["error"]["code"] == "prompt_too_long"


def test_a_refused_prompt_is_a_400_even_when_streaming(start: Start) -> None:
    engine = ScriptedEngine(error=PromptTooLong)
    _, client = start(engine)
    with pytest.raises(openai.BadRequestError) as caught:
        list(client.chat.completions.create(model="m", messages=USER, stream=True))
    assert caught.value.status_code == 400
    assert isinstance(caught.value.body, dict) and caught.value.body["code"] == "prompt_too_long"
    engine.error = None
    assert client.chat.completions.create(model="m", messages=USER).choices[0].finish_reason == "stop"


# Malformed bodies: tests/test_openai_malformed.py.

@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[Served, ScriptedEngine]]:
    engine = ScriptedEngine(["ok"])
    server = ServerThread(engine, {})
    yield server.start(), engine
    server.stop()


# ---- the client going away ----

def test_client_disconnect_mid_stream_cancels_the_generation(start: Start) -> None:
    engine = ScriptedEngine(LONG, delay=0.01, queue_size=0)
    served, client = start(engine)
    body = json.dumps({"messages": USER, "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        received = b""
        while b'"content": "w1 "' not in received:
            data = sock.recv(4096)
            assert data, received
            received += data
    assert engine.runs[0].done.wait(3), "the generation kept running after the client left"
    assert engine.runs[0].saw_cancel and len(engine.runs[0].emitted) < 50
    eventually(lambda: not engine.gate.busy)
    engine.pieces = ["next"]
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content == "next"


# ---- health and routing ----

def test_health_ready_and_unknown_paths(shared: tuple[Served, ScriptedEngine]) -> None:
    served, _ = shared
    assert request(served, "/healthz")[::2] == (200, {"status": "ok"})
    status, _, ready = request(served, "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["model"] == "scripted-model"
    assert (ready["busy"], ready["waiting"]) == (False, 0)
    status, _, missing = request(served, "/v1/nope")
    assert status == 404 and missing["error"]["code"] == "not_found"
    status, headers, wrong = request(served, "/v1/models", b"{}")
    assert status == 405 and "GET" in headers["Allow"] and wrong["error"]["code"] == "method_not_allowed"
