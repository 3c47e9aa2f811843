"""The model states the engine keeps of recent conversations (ContextCache) forget a deleted conversation, with
the real model: its saved state is dropped at once, and its live state is never saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon.context_cache import ContextCache
from daemon.llama_adapter import load_llama


@pytest.fixture(scope="module")
def llm(test_model: Path) -> Any:
    return load_llama(test_model, n_ctx=256, n_batch=64, threads=2, threads_batch=2)


def talk(llm: Any, text: str) -> None:
    llm.reset()
    llm.eval(llm.tokenize(text.encode()))


def test_a_forgotten_conversation_keeps_no_state(llm: Any) -> None:
    cache = ContextCache(4)
    for name in ("a", "b", "c"):
        cache.switch(llm, name)
        talk(llm, f"Visitor {name} asks where the pharmacy is.")
    assert cache.saved() == ["a", "b"]  # c is live
    ContextCache.forget_everywhere(["a", "nonexistent"])
    assert cache.saved() == ["b"]
    cache.forget(["c"])  # the live one: not saved when the engine moves on
    cache.switch(llm, "d")
    assert cache.saved() == ["b"] and cache.active == "d"
    talk(llm, "Visitor d asks about the opening hours.")
    cache.switch(llm, "b")  # an unforgotten live state is saved as before
    assert cache.saved() == ["d"] and cache.active == "b"
