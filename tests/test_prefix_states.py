"""Prefix states with the real model: a state built on top of what the live context already holds is the same
state a cold read gives, so an answer after restoring it is the answer without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.prefix_states import PrefixStates

IDENTITY = {"model": "test", "n_ctx": 512}


@pytest.fixture(scope="module")
def llm(test_model: Path):  # type: ignore[no-untyped-def]
    from llama_cpp import Llama

    return Llama(str(test_model), n_ctx=512, n_threads=2, verbose=False)


def greedy(llm, tokens: list[int], n: int = 12) -> list[int]:  # type: ignore[no-untyped-def]
    out = []
    for token in llm.generate(tokens, temp=0.0, reset=True):  # reset=True: reuse the matching prefix
        out.append(token)
        if len(out) == n:
            break
    return out


def test_a_prefix_built_on_a_shared_start_restores_to_the_cold_answer(llm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start = llm.tokenize(b"You are the helpful assistant of a library kiosk. Venue information:")
    first = start + llm.tokenize(b" The library opens at nine.", add_bos=False)
    second = start + llm.tokenize(b" Printing costs two yuan a page.", add_bos=False)
    question = llm.tokenize(b" Question: how much is printing? Answer:", add_bos=False)
    llm.reset()
    cold = greedy(llm, second + question)

    states = PrefixStates(tmp_path, IDENTITY)
    assert states.ensure(llm, first) == "built"
    assert states.ensure(llm, second) == "built"  # on top of `first`: only its own tail is read
    llm.reset()
    assert states.restore_longest(llm, second + question) == len(second)
    assert greedy(llm, second + question) == cold

    again = PrefixStates(tmp_path, IDENTITY)  # after a restart the files are found, nothing is read
    assert again.ensure(llm, second) == "loaded"
