"""Starting the answer before the question is over: a draft of its first clause, written on the settled words.

When the visitor stops talking, the recognizer still waits `listen_silence` (0.4 s) before it calls the question
final, and the page then asks it. 0.16 s into that silence it settles the words (audio.recognizer: Vosk's own
final result of what was said, which plain partials give only ~0.3 s late), and the draft reads
the whole prompt of that partial (as the answer would have it, assistant header included) and samples the first
clause of the answer into the context, exactly as the answer would (the same sampler settings, one token at a
time). If the question asked is that text, the answer starts with the draft's tokens, so the voice has its first
clause at once, and samples on after them; any other question finds the context's common prefix and reads only
what differs (the draft is then forgotten). A draft stops at the end of the first clause, at DRAFT_TOKENS, at
the end of the answer, or when it is cancelled: a question for another text interrupts it at once, the question
it drafted waits for it (it was writing that question's answer already).

Seeded requests are not drafted: their tokens are to be the same with or without a draft. Nor are answers that
follow a grammar (JSON, a forced tool call): a draft's sampler did not follow it.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from daemon.messages import EngineError, GenerationRequest, PrefillReport, PromptTooLong, Sampling
from daemon.prefill.engine_prefill import evaluate_prefix
from daemon.prompting import FittedPrompt
from daemon.textstream import Utf8Assembler

_LOGGER = logging.getLogger(__name__)

DRAFT_TOKENS = 24
"""Tokens a draft samples at most: about one second of decoding on a 2-core board."""
CLAUSE_END = re.compile(r"[.!?;:,。！？；：，、\n]")
MIN_CLAUSE_CHARS = 8
"""A clause mark this early ("Hi," "Yes.") does not end the draft: the voice's first chunk is longer."""


@dataclasses.dataclass(frozen=True)
class Draft:
    """The first tokens of an answer to `prompt`, sampled into the live context (which holds `prompt` and all
    of `tokens` but the last, as after any sampled token)."""

    prompt: tuple[int, ...]
    tokens: tuple[int, ...]
    sampling: Sampling
    complete: bool
    """The model ended the answer within the draft."""
    evaluated: int = 0
    """Prompt tokens the draft read."""

    def fits(self, prompt: Sequence[int], sampling: Sampling, llm: Any, grammar: str = "") -> bool:
        """Whether the answer to `prompt` can start with this draft: the same prompt and sampler (no grammar),
        and the context still as the draft left it."""
        if tuple(prompt) != self.prompt or not drafting_allowed(sampling, grammar) or sampling != self.sampling:
            return False
        held = list(self.prompt) + list(self.tokens[:-1])
        return llm.n_tokens >= len(held) and [int(t) for t in llm.input_ids[: len(held)]] == held


def drafting_allowed(sampling: Sampling, grammar: str = "") -> bool:
    return sampling.seed is None and not grammar


def same_question(a: GenerationRequest, b: GenerationRequest) -> bool:
    """Whether an answer to `b` would use a draft written for `a` (the conversation key may differ: a screen's
    next conversation continues from its draft context, see daemon.context_cache)."""
    return a.messages == b.messages and a.sampling == b.sampling


def write_draft(llm: Any, prepare: Callable[[], tuple[FittedPrompt, int]], sampling: Sampling,
                cancel: threading.Event) -> tuple[PrefillReport, Draft | None]:
    """On the model thread: prepare the context as the answer would (`prepare`: its fitted prompt and token
    budget), read the prompt into it, then sample until the first clause is written. The draft is None when
    nothing was sampled."""
    from daemon.llama_adapter import Decoder

    if cancel.is_set():
        return PrefillReport(skipped="cancelled"), None
    started = time.perf_counter()
    try:
        fitted, budget = prepare()
    except PromptTooLong:
        return PrefillReport(skipped="too_long"), None
    prompt = fitted.tokens
    read = evaluate_prefix(llm, prompt, cancel)
    if read.skipped or read.capped or cancel.is_set():
        return read, None
    decoder = Decoder(llm, prompt, sampling, cancel, min(budget, DRAFT_TOKENS))
    assembler, text = Utf8Assembler(), ""
    try:
        for raw in decoder:
            text += assembler.feed(raw)
            if _clause_ended(text):
                break
    except EngineError as exc:  # the decoder reset the context
        _LOGGER.warning("a draft failed; the answer starts from the prompt: %s", exc)
        return dataclasses.replace(read, skipped="failed"), None
    tokens = tuple(decoder.tokens)
    report = dataclasses.replace(read, evaluated=read.evaluated + decoder.prompt_eval_tokens, drafted=len(tokens),
                                 ms=round((time.perf_counter() - started) * 1000, 2))
    if not tokens:
        return report, None
    complete = decoder.reason == "stop"
    _LOGGER.debug("drafted %d tokens%s: %r", len(tokens), " (the whole answer)" if complete else "", text)
    return report, Draft(tuple(prompt), tokens, sampling, complete, report.evaluated)


def _clause_ended(text: str) -> bool:
    return CLAUSE_END.search(text, MIN_CLAUSE_CHARS) is not None
