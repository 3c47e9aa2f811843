"""The default Qwen2.5 0.5B model end to end (slow: fetches ~490 MB once, then minutes of CPU).

Run with `make test-slow` (or `.venv/bin/pytest -m slow`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import openai
import pytest

from tests.conftest import DEFAULT_MODEL, Daemon, pulled_model
from tests.wsclient import ask_once

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_model() -> Path:
    return pulled_model(DEFAULT_MODEL)


def test_default_model_answers_in_chinese_and_english(default_model: Path,
                                                      daemon_factory: Callable[..., Daemon]) -> None:
    d = daemon_factory("--model", str(default_model), "--temperature", "0", "--max-tokens", "96")
    chinese = asyncio.run(asyncio.wait_for(ask_once(d.url, "中国的首都是哪里？请用一句话回答。"), 300))
    assert chinese.done and chinese.done["reason"] in ("stop", "length"), chinese
    assert "北京" in chinese.text and "\ufffd" not in chinese.text
    assert len(chinese.tokens) >= 3

    client = openai.OpenAI(base_url=d.url + "/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="kioskd", messages=[{"role": "user", "content": "What is the capital of France? One sentence."}],
        stream=True, max_tokens=48, temperature=0)
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "Paris" in text
