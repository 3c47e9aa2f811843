"""Speculative work (a prefill or a draft while the visitor speaks) leaves the speech recognizer a core, and the
answer afterwards runs at the configured width again."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import pytest

from daemon import llama_adapter
from daemon.llama_adapter import load_llama, sharing_the_cores


def test_speculative_work_runs_one_thread_short_of_the_cores_and_the_width_comes_back(
        test_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    llm = load_llama(test_model, n_ctx=256, n_batch=64, threads=4, threads_batch=4)
    monkeypatch.setattr(llama_adapter, "usable_cores", lambda: 4)
    with sharing_the_cores(llm):
        assert (llama_cpp.llama_n_threads(llm.ctx), llama_cpp.llama_n_threads_batch(llm.ctx)) == (3, 3)
        llm.eval(llm.tokenize(b"Hello there"))  # the model still works at the narrower width
    assert (llama_cpp.llama_n_threads(llm.ctx), llama_cpp.llama_n_threads_batch(llm.ctx)) == (4, 4)

    monkeypatch.setattr(llama_adapter, "usable_cores", lambda: 1)  # one core: one thread, never zero
    with sharing_the_cores(llm):
        assert llama_cpp.llama_n_threads(llm.ctx) == 1
    assert llama_cpp.llama_n_threads(llm.ctx) == 4
