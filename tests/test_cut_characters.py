"""An answer cut by max_tokens inside a multi-byte character (SmolLM2 writes most Chinese characters as two or
three byte-level tokens) ends at the last whole character: no U+FFFD, in the stream nor in what is stored."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp

from daemon.llama_adapter import load_llama
from daemon.textstream import Utf8Assembler
from tests.conftest import Daemon
from tests.wsclient import ask_once

QUESTION = "你好"


def complete(d: Daemon, max_tokens: int) -> tuple[str, int, str]:
    async def call() -> tuple[str, int, str]:
        body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": max_tokens}
        async with aiohttp.ClientSession() as http, http.post(d.url + "/v1/chat/completions", json=body) as resp:
            answer = await resp.json()
        choice = answer["choices"][0]
        return choice["message"]["content"], answer["usage"]["completion_tokens"], choice["finish_reason"]

    return asyncio.run(asyncio.wait_for(call(), 60))


def test_the_tokenizer_splits_chinese_characters_and_a_cut_one_is_dropped(test_model: Path) -> None:
    llm = load_llama(test_model, n_ctx=256, n_batch=64, threads=1, threads_batch=1)
    pieces = [bytes(llm.detokenize([t])) for t in llm.tokenize("你好，图书馆".encode(), add_bos=False)]
    cuts = [n for n in range(1, len(pieces)) if not _whole(b"".join(pieces[:n]))]
    assert cuts, f"no token boundary inside a character: {pieces}"
    for n in cuts:
        assembler = Utf8Assembler()
        text = "".join(assembler.feed(p) for p in pieces[:n]) + assembler.flush()
        assert "\ufffd" not in text and "你好，图书馆".startswith(text) and assembler.dropped, (n, text)


def _whole(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_an_answer_cut_inside_a_character_drops_it_when_streamed_and_stored(
        test_model: Path, daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(test_model), "--temperature", "0", "--max-tokens", "64")
    full, _, _ = complete(d, 64)
    answers = [complete(d, k) for k in range(1, 17)]
    assert all("\ufffd" not in text and full.startswith(text) for text, _, _ in answers), answers
    # A token that only starts a character adds nothing: the k-token answer is the (k-1)-token one.
    cut = [k for k in range(2, 17) if answers[k - 1][0] == answers[k - 2][0] and answers[k - 1][1:] == (k, "length")]
    assert cut, f"no answer of up to 16 tokens was cut inside a character: {answers}"
    d.stop()

    # The same cut on the WebSocket, and in the history.
    d = daemon_factory("--model", str(test_model), "--temperature", "0", "--max-tokens", str(cut[0]))
    answer = asyncio.run(ask_once(d.url, QUESTION))
    assert answer.done and answer.done["reason"] == "length" and answer.text == answers[cut[0] - 1][0]
    status, body = d.get(f"/api/sessions/{answer.session}")
    assert status == 200 and json.loads(body)["turns"][1]["content"] == answer.text
    assert "\ufffd" not in answer.text
