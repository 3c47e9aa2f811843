"""The test upstream itself: the llama-server built from the pinned llama.cpp serves SmolLM2 over OpenAI streaming,
shows its slots, and dies on .kill() and comes back on the same port on .start(), as the failover tests need."""

from __future__ import annotations

import urllib.error
import urllib.request

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.conftest import TEST_MODEL, pulled_model
from tests.llama_server import LlamaServer

pytestmark = pytest.mark.upstream

QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]


def _streamed_answer(server: LlamaServer, max_tokens: int = 24) -> tuple[str, str | None, int]:
    """The streamed text, the last finish_reason and the number of content chunks."""
    client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
    text, finish, pieces = "", None, 0
    stream = client.chat.completions.create(
        model="any", messages=QUESTION, stream=True, max_tokens=max_tokens, temperature=0
    )
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            text += choice.delta.content
            pieces += 1
        finish = choice.finish_reason or finish
    return text, finish, pieces


def test_serves_an_openai_stream_with_slots_and_metrics() -> None:
    with LlamaServer(pulled_model(TEST_MODEL), parallel=2) as server:
        assert len(server.slots()) == 2
        text, finish, pieces = _streamed_answer(server)
        assert text.strip(), "the answer is empty"
        assert pieces > 1, "the answer came in one piece, not streamed"
        assert finish in {"stop", "length"}
        assert server.is_idle()
        assert "llamacpp:tokens_predicted_total" in server.metrics()
        assert server.log_path.exists()
    assert not server.running


def test_kill_drops_the_port_and_start_brings_it_back_on_the_same_port() -> None:
    with LlamaServer(pulled_model(TEST_MODEL)) as server:
        port = server.port
        first, _, _ = _streamed_answer(server, max_tokens=8)
        server.kill()
        assert not server.running
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(f"{server.origin}/health", timeout=2)
        server.start()
        assert server.port == port
        again, _, _ = _streamed_answer(server, max_tokens=8)
        assert again == first, "temperature 0 on the same model should give the same answer after a restart"
