"""The engine's side of prefill: reading a question into the model's context while the visitor still says it.

The prompt is rendered and fitted exactly as the answer's would be (LlamaEngine._prepare: same conversation
key, same fit_prompt, same stored prefix restored), then cut at the end of the user text, less its last token
(the last word may still grow and tokenize differently), and the part the context does not already hold is
evaluated, without sampling. When the question comes, llama.cpp keeps the common prefix and reads only the rest.

Prefill is the lowest priority the model has: it runs only when the model is idle and nobody waits, never
waits itself, and gives way to a question after the chunk it is reading (`Prefills.interrupt`). A call reads
at most MAX_TOKENS tokens and MAX_SECONDS of them; the next partial transcript, or the answer, reads the rest.
Nothing here imports llama_cpp: the model object is driven through CountingLlama's methods on the model thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any

from daemon.gate import ModelGate
from daemon.messages import ChatMessage, EngineError, GenerationRequest, PrefillReport, PromptTooLong
from daemon.prefix_states import common_prefix
from daemon.prompting import FittedPrompt

_LOGGER = logging.getLogger(__name__)

MAX_TOKENS = 256
"""Tokens one prefill reads at most (with prefix states the system prompt is never among them)."""
MAX_SECONDS = 1.0
CHUNK = 32
"""Tokens read per llama.cpp call: how long a question that arrives may wait for the model to be handed over
(about 0.1-0.3 s on a 2-core board), against the cost of many small batches."""
HOLDBACK = 1
"""Tokens left off the end of the user text: its last word may still grow ("op" -> "open")."""

Work = Callable[[threading.Event], PrefillReport]


class Prefills:
    """At most one prefill at a time, through the model's gate, only when it is free and nobody waits."""

    def __init__(self, gate: ModelGate, executor: Executor) -> None:
        self._gate = gate
        self._executor = executor
        self._cancel: threading.Event | None = None
        self._drafting: Callable[[GenerationRequest], bool] | None = None

    def interrupt(self, question: GenerationRequest | None = None) -> None:
        """A question is coming (or the daemon stops): the running prefill ends after its current chunk, unless
        it is a draft of this very `question`'s answer (daemon.prefill.draft), which the question waits for."""
        drafting = self._drafting
        if question is not None and drafting is not None and drafting(question):
            return
        if self._cancel is not None:
            self._cancel.set()

    async def run(self, work: Work, drafting: Callable[[GenerationRequest], bool] | None = None) -> PrefillReport:
        """`work(cancel)` on the model thread, or a "busy" report at once when the model is taken or awaited.
        Cancelling the caller stops the work after its chunk; the gate opens only once the thread is done.
        `drafting(question)`: whether the work drafts `question`'s answer (an interrupt for it lets it finish)."""
        gate = self._gate
        await asyncio.sleep(0)  # an answer that just ended opens the gate from a callback: let it run first
        if gate.busy or gate.waiting:
            return PrefillReport(skipped="busy")
        try:
            await gate.acquire()  # free and nobody in line: taken without waiting
        except EngineError:  # shutting down
            return PrefillReport(skipped="busy")
        cancel = threading.Event()
        self._cancel, self._drafting = cancel, drafting
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, work, cancel)
        except BaseException:
            self._done(cancel)
            raise
        future.add_done_callback(lambda _: self._done(cancel))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _done(self, cancel: threading.Event) -> None:
        if self._cancel is cancel:
            self._cancel = self._drafting = None
        self._gate.release()


def prefill_prompt(llm: Any, render: Callable[[Sequence[ChatMessage]], str], prepare: Callable[[], FittedPrompt],
                   messages: Sequence[ChatMessage], text_end: str, cancel: threading.Event) -> PrefillReport:
    """On the model thread: prepare the context as the answer would, then read the cut prompt into it."""
    if cancel.is_set():  # a question came before the thread got to it
        return PrefillReport(skipped="cancelled")
    try:
        fitted = prepare()
    except PromptTooLong:
        return PrefillReport(skipped="too_long")
    cut = prompt_cut(render, llm.tokenize_prompt, messages, fitted.tokens, text_end)
    if cut is None:
        _LOGGER.debug("prefill: the user text is not in the rendered prompt; nothing read")
        return PrefillReport(skipped="no_cut")
    return evaluate_prefix(llm, fitted.tokens[:cut], cancel)


def prompt_cut(render: Callable[[Sequence[ChatMessage]], str], tokenize: Callable[[str], list[int]],
               messages: Sequence[ChatMessage], tokens: Sequence[int], text_end: str,
               holdback: int = HOLDBACK) -> int | None:
    """How many of `tokens` (the fitted prompt of `messages`) lie before the end of `text_end`, less `holdback`;
    None when `text_end` is not in the rendered prompt.

    Counted from the end: what follows the user text (end of turn, assistant header) is the same however many
    old turns fit_prompt dropped, and tokenizes on its own as in the whole prompt when it starts with a special
    token; if its first token merged with the user text's last one instead, that token is left out too."""
    needle = text_end.rstrip()
    rendered = render(messages)
    at = rendered.rfind(needle) if needle else -1
    if at < 0:
        return None
    tail = tokenize(rendered[at + len(needle):])
    matched = _common_suffix(tokens, tail)
    cut = len(tokens) - matched - (1 if matched < len(tail) else 0)
    return max(cut - holdback, 0)


def _common_suffix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return n


def evaluate_prefix(llm: Any, tokens: Sequence[int], cancel: threading.Event) -> PrefillReport:
    """Read what the live context lacks of `tokens`, chunk by chunk, until done, capped or cancelled.

    A context that already holds all of `tokens` is left alone: it may hold more of the question than this
    (shorter, revised) partial, and the answer's own common prefix decides what of it is kept."""
    max_tokens, max_seconds, chunk = MAX_TOKENS, MAX_SECONDS, CHUNK  # read per call: tests may change them
    started = time.perf_counter()
    live = common_prefix(llm.input_ids[: llm.n_tokens], tokens)
    end = min(len(tokens), live + max_tokens)
    pos = live
    if pos < end:
        llm.n_tokens = live  # what follows the shared part belongs to another text; eval overwrites it
    try:
        while pos < end and not cancel.is_set() and time.perf_counter() - started < max_seconds:
            step = list(tokens[pos: min(end, pos + chunk)])
            llm.eval(step)
            pos += len(step)
    except Exception as exc:  # llama.cpp failed: the context may hold half a batch, start the answer clean
        llm.reset()
        _LOGGER.warning("prefill failed after %d tokens; the model's context was reset: %s", pos - live, exc)
        return PrefillReport(evaluated=pos - live, cached=live, target=len(tokens), skipped="failed")
    ms = round((time.perf_counter() - started) * 1000, 2)
    return PrefillReport(evaluated=pos - live, cached=live, target=len(tokens), ms=ms, capped=pos < len(tokens))
