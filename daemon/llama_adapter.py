"""Everything that touches llama-cpp-python directly; imported only on the engine's worker thread."""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import Llama
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import LlamaGrammar

from daemon.messages import ChatMessage, EngineError, Finished, FinishReason, Sampling, Timings, Usage
from daemon.settings import usable_cores
from daemon.speculative import Speculation

_LOGGER = logging.getLogger(__name__)


class CountingLlama(Llama):
    """A Llama that counts the tokens it really evaluates, so cache reuse can be reported exactly."""

    evaluated = 0
    on_progress: Callable[[], None] | None = None
    """Called before and after every evaluation, so a watchdog can tell a long prompt from a hang."""
    fault_countdown: int | None = None
    """Fault injection (setting fault_engine_raise): evaluations left before one fails; None: disarmed."""
    fault_spent = False
    decoding = False
    """Set once an answer's prompt is read (daemon.speculative.Speculation): a batch of several tokens is then
    the sampled token and a proposal, and the sampler gets the logits of every position in it.

    Every evaluation of a single token (a step without a proposal, the last prompt token read again after a
    cache hit) is padded to a batch of two whose second result is never used: llama.cpp's CPU kernels compute
    one token differently from a batch (its tinyBLAS matrix code only runs for two or more), so the logits, and
    at a near tie the greedy choice, would depend on whether a proposal was made or the prompt came from the
    cache; in batches of any size >= 2 they do not (see also weights_as_stored)."""
    sampler_history: Sequence[int] = ()
    """Tokens the next sampler llama-cpp-python builds treats as already sampled: an answer that goes on after a
    draft penalizes repeats of the drafted tokens exactly as if one sampler had written them all."""

    def _init_sampler(self, *args: Any, **kwargs: Any) -> Any:
        sampler = super()._init_sampler(*args, **kwargs)
        for token in self.sampler_history:
            sampler.accept(token)
        self.sampler_history = ()
        return sampler

    def eval(self, tokens: Sequence[int]) -> None:
        if self.fault_countdown is not None:
            self.fault_countdown -= 1
            if self.fault_countdown <= 0:
                self.fault_countdown, self.fault_spent = None, True
                raise RuntimeError("llama_decode returned -1 (fault injected by setting fault_engine_raise)")
        self.evaluated += len(tokens)
        if self.on_progress is not None:
            self.on_progress()
        if len(tokens) == 1 and self.n_tokens + 2 <= self._n_ctx:
            self._eval_padded(tokens[0])
        elif self.decoding and 1 < len(tokens) <= self.n_batch:
            self._eval_every_position(tokens)
        else:
            super().eval(tokens)
        if self.on_progress is not None:
            self.on_progress()

    def _eval_padded(self, token: int) -> None:
        """One token, evaluated as a batch of two (the token and a copy after it) with the logits of the first
        only; the copy's cache cell is past n_tokens, so the next evaluation drops it."""
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        self._batch.set_batch(batch=[token, token], n_past=self.n_tokens, logits_all=True)
        self._batch.batch.logits[1] = False
        self._ctx.decode(self._batch)
        self.input_ids[self.n_tokens] = token
        self.n_tokens += 1
        self._requires_eval = False

    def _eval_every_position(self, tokens: Sequence[int]) -> None:
        """Llama.eval with logits kept for each token of one batch (as it does only with logits_all, which
        would also keep them for every prompt token and allocate an n_ctx x vocabulary matrix)."""
        self._ctx.kv_cache_seq_rm(-1, self.n_tokens, -1)
        self._batch.set_batch(batch=tokens, n_past=self.n_tokens, logits_all=True)
        self._ctx.decode(self._batch)
        self.input_ids[self.n_tokens:self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)
        self._requires_eval = False

    def tokenize_prompt(self, prompt: str) -> list[int]:
        # The chat template already writes the special tokens (BOS included where the model wants it).
        return list(self.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))


@contextmanager
def sharing_the_cores(llm: Llama) -> Iterator[None]:
    """Run speculative work (a prefill or a draft while the visitor still speaks) on one thread fewer than the
    cores, so the speech recognizer keeps a core: on two cores a draft at full width delayed the final
    transcript it was racing (bench/bench_voice.py). An answer runs at the configured width again."""
    width = max(1, usable_cores() - 1)  # a core left for the recognizer
    llama_cpp.llama_set_n_threads(llm.ctx, min(llm.n_threads, width), min(llm.n_threads_batch, width))
    try:
        yield
    finally:
        llama_cpp.llama_set_n_threads(llm.ctx, llm.n_threads, llm.n_threads_batch)


def load_llama(path: Path, *, n_ctx: int, n_batch: int, threads: int, threads_batch: int,
               flash_attn: bool = False) -> CountingLlama:
    with weights_as_stored():
        return CountingLlama(
            model_path=str(path), n_ctx=n_ctx, n_batch=n_batch, n_threads=threads,
            n_threads_batch=threads_batch, use_mmap=True, verbose=False, flash_attn=flash_attn,
        )


_MODEL_PARAMS_LOCK = threading.Lock()


@contextmanager
def weights_as_stored() -> Iterator[None]:
    """Load models without llama.cpp's weight repacking (`use_extra_bufts`, llama-server's --no-repack).

    Repacked Q4_K/Q8_0 weights are multiplied by one kernel for groups of 4 or 8 tokens and by another for the
    rest, so a token's logits would depend on its place in a batch and a checked proposal could change the
    answer (daemon.speculative). Unrepacked, every batch of two or more computes each token alike. It costs
    ~3 % of prompt speed with Qwen2.5 0.5B here (whose weights are mostly Q5_0/Q8_0: llamafile's kernels, not
    repacked ones), and keeps the weights in the mmap'd file instead of a repacked copy in anonymous memory.
    llama-cpp-python sets no such parameter, so its default parameters are amended while a model loads."""
    import llama_cpp.llama_cpp as bindings

    with _MODEL_PARAMS_LOCK:
        defaults = bindings.llama_model_default_params

        def unrepacked() -> Any:
            params = defaults()
            params.use_extra_bufts = False
            return params

        bindings.llama_model_default_params = unrepacked
        try:
            yield
        finally:
            bindings.llama_model_default_params = defaults


def make_renderer(llm: CountingLlama, fallback_template: str) -> Callable[[Sequence[ChatMessage]], str]:
    """A function that renders messages with the GGUF's own chat template."""
    model = llm._model

    def token_text(token: int) -> str:
        return str(model.token_get_text(token)) if token != -1 else ""

    formatter = Jinja2ChatFormatter(
        template=llm.metadata.get("tokenizer.chat_template") or fallback_template,
        eos_token=token_text(llm.token_eos()),
        bos_token=token_text(llm.token_bos()),
    )

    def render(messages: Sequence[ChatMessage]) -> str:
        turns: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        rendered = formatter(messages=turns)
        return str(rendered.prompt)

    return render


class Decoder:
    """Iterates the bytes of each sampled token, checking cancellation once per token.

    `drafted` are tokens a draft already sampled after `prompt` (daemon.prefill.draft; the context holds them):
    they are handed out first, then sampling goes on after them (`drafted_complete`: the draft ended the answer).
    `grammar`: GBNF text every sampled token must follow (daemon.structured.grammar); "" for free text.
    `speculation`: proposes tokens for llama.cpp to check in batches (daemon.speculative); the text is the same
    (without one nothing is proposed, and the steps are still batches, see CountingLlama.decoding).
    When llama.cpp fails mid-answer the model's context is reset (it may hold a half-evaluated batch) and an
    EngineError is raised: the text handed out so far stays with the caller, and the next answer starts clean.
    """

    def __init__(self, llm: CountingLlama, prompt: list[int], sampling: Sampling,
                 cancel: threading.Event, budget: int, request_id: str = "", fault_after: int = 0,
                 drafted: Sequence[int] = (), drafted_complete: bool = False, grammar: str = "",
                 speculation: Speculation | None = None) -> None:
        self._llm = llm
        self._speculation = speculation or Speculation(llm, longest=0)
        self._grammar = grammar
        self._request_id = request_id
        self._fault_after = fault_after
        self._prompt = prompt
        self._sampling = sampling
        self._cancel = cancel
        self._drafted = list(drafted)
        self._drafted_complete = drafted_complete
        self._budget = min(budget, llm.n_ctx() - len(prompt))
        self.reason: FinishReason = "length"
        self.prompt_tokens = len(prompt)
        self.prompt_eval_tokens = 0
        self.prompt_ms = 0.0
        self.completion_tokens = 0
        self.tokens: list[int] = []
        """The answer's tokens so far, drafted ones included."""
        self.first_token_at = 0.0
        self.first_sampled_at = 0.0  # the first token sampled now (after any drafted ones)
        self.first_text_at: float | None = None
        self.last_token_at = 0.0

    @property
    def drafted_tokens(self) -> int:
        """Tokens of this answer that a draft wrote ahead (handed out, not sampled now)."""
        return min(len(self._drafted), self.completion_tokens)

    def mark_text(self) -> None:
        if self.first_text_at is None:
            self.first_text_at = time.perf_counter()

    def __iter__(self) -> Iterator[bytes]:
        llm, s = self._llm, self._sampling
        if self._cancel.is_set():  # Cancelled while waiting for the thread: do not read the prompt.
            self.reason = "cancelled"
            return
        if s.seed is not None:
            llm.set_seed(s.seed)
        llm.evaluated = 0
        started = time.perf_counter()
        yield from self._replay(started)
        if self.completion_tokens < len(self._drafted) or self.completion_tokens >= self._budget:
            return  # cancelled, or the budget was spent, within the draft
        if self._drafted_complete:
            self.reason = "stop"
            return
        if self._fault_after and not llm.fault_spent:
            llm.fault_countdown = self._fault_after + 1  # the prompt's evaluation, then one per answer token
        llm.sampler_history = self._drafted
        grammar = checked_grammar(llm, self._grammar) if self._grammar else None
        tokens = llm.generate(self._prompt + self._drafted, top_k=s.top_k, top_p=s.top_p, temp=s.temperature,
                              repeat_penalty=s.repeat_penalty, frequency_penalty=s.frequency_penalty,
                              presence_penalty=s.presence_penalty, reset=True, grammar=grammar)
        sampled = self._speculation.tokens(tokens, self._prompt + self._drafted,
                                           self._budget - self.completion_tokens)
        try:
            yield from self._sample(sampled, started)
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:
            sampled.close()
            tokens.close()
            llm.fault_countdown = None  # an answer that ended before the fault point re-arms it for the next

    def _replay(self, started: float) -> Iterator[bytes]:
        for token in self._drafted:
            if self._cancel.is_set():
                self.reason = "cancelled"
                return
            if not self.tokens:
                self.prompt_ms = (time.perf_counter() - started) * 1000
                self.first_token_at = time.perf_counter()
            yield from self._hand_out(token)
            if self.completion_tokens >= self._budget:
                return

    def _hand_out(self, token: int) -> Iterator[bytes]:
        self.last_token_at = time.perf_counter()
        self.completion_tokens += 1
        self.tokens.append(token)
        yield bytes(self._llm.detokenize([token]))

    def _failed(self, exc: Exception) -> EngineError:
        self._llm.reset()  # type: ignore[no-untyped-call]
        _LOGGER.error("the model failed after %d tokens of answer %s; its context was reset", self.completion_tokens,
                      self._request_id or "-", exc_info=exc, extra={"REQUEST_ID": self._request_id})
        return EngineError(f"the model failed while writing the answer: {exc}")

    def _sample(self, tokens: Iterator[int], started: float) -> Iterator[bytes]:
        llm = self._llm
        vocab: Any = llm._model.vocab
        for sampled, token in enumerate(tokens):
            now = time.perf_counter()
            if sampled == 0:
                self.first_sampled_at = now
                self.prompt_eval_tokens = llm.evaluated
                if not self.tokens:
                    self.prompt_ms = (now - started) * 1000
                    self.first_token_at = now
            self.last_token_at = now
            if self._cancel.is_set():
                self.reason = "cancelled"
                return
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                self.reason = "stop"
                return
            yield from self._hand_out(token)
            if self.completion_tokens >= self._budget:
                self.reason = "length"
                return


_CHECKED_GRAMMARS: dict[str, LlamaGrammar] = {}
"""Grammars llama.cpp parsed once (model thread only): a forced call or schema repeats across requests."""
GRAMMAR_CACHE = 32


def checked_grammar(llm: CountingLlama, text: str) -> LlamaGrammar:
    """`text` as a LlamaGrammar that llama.cpp accepts. llama-cpp-python hands the text straight to the sampler
    chain, where a grammar llama.cpp cannot parse is a NULL sampler (a crash), so it is parsed here first."""
    grammar = _CHECKED_GRAMMARS.get(text)
    if grammar is not None:
        return grammar
    vocab = llm._model.vocab
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise EngineError("llama.cpp could not parse the answer's grammar")
    llama_cpp.llama_sampler_free(sampler)
    if len(_CHECKED_GRAMMARS) >= GRAMMAR_CACHE:
        _CHECKED_GRAMMARS.pop(next(iter(_CHECKED_GRAMMARS)))
    grammar = _CHECKED_GRAMMARS[text] = LlamaGrammar.from_string(text, verbose=False)
    return grammar


def finished_report(decoder: Decoder, reason: FinishReason, text: str, dropped: int, started: float,
                    queue_ms: float, draft_prompt_tokens: int = 0,
                    speculation: Speculation | None = None) -> Finished:
    """The Finished report of an answer `decoder` wrote (`draft_prompt_tokens`: what its draft read, if any).
    The decode rate counts only the tokens sampled now, not those a draft wrote ahead."""
    first, last, n = decoder.first_text_at, decoder.last_token_at, decoder.completion_tokens
    sampled = n - decoder.drafted_tokens
    decode_s = (last - decoder.first_sampled_at) if sampled > 1 else 0.0
    timings = Timings(
        queue_ms=round(queue_ms, 2),
        ttft_ms=round(((first or last or started) - started) * 1000, 2),
        prompt_eval_tokens=decoder.prompt_eval_tokens,
        prompt_ms=round(decoder.prompt_ms, 2),
        tokens_per_s=round((sampled - 1) / decode_s, 2) if decode_s > 0 else 0.0,
        total_ms=round((time.perf_counter() - started) * 1000, 2),
        drafted_tokens=decoder.drafted_tokens,
        draft_prompt_tokens=draft_prompt_tokens if decoder.drafted_tokens else 0,
        **(speculation.stats.timings() if speculation is not None else {}),
    )
    usage = Usage(prompt_tokens=decoder.prompt_tokens, completion_tokens=n)
    return Finished(reason=reason, text=text, usage=usage, timings=timings, dropped_turns=dropped)


class SavedContext:
    """A conversation's KV cache and token history, small enough to keep a few in memory.

    llama-cpp-python's own save_state also copies a logits matrix of n_batch x n_vocab floats (hundreds of MB
    for Qwen's 152k vocabulary); only the llama.cpp context state and the evaluated tokens are needed here.
    """

    def __init__(self, llm: CountingLlama) -> None:
        self.data = state_bytes(llm)
        self.tokens = [int(t) for t in llm.input_ids[: llm.n_tokens]]

    @property
    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.tokens)

    def restore(self, llm: CountingLlama) -> None:
        if not set_state(llm, self.data):
            raise RuntimeError("llama.cpp refused the saved context")
        llm.input_ids[: len(self.tokens)] = self.tokens
        llm.n_tokens = len(self.tokens)


def state_bytes(llm: Any) -> bytes:
    """llama.cpp's context state (KV cache and last logits) as bytes."""
    size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
    buffer = (ctypes.c_uint8 * size)()
    written = llama_cpp.llama_state_get_data(llm._ctx.ctx, buffer, size)
    return bytes(buffer)[:written]


def set_state(llm: Any, data: bytes) -> bool:
    """Put a state from state_bytes back; False when llama.cpp refuses it (another model or set-up)."""
    buffer = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
    if llama_cpp.llama_state_set_data(llm._ctx.ctx, buffer, len(data)) != len(data):
        return False
    llm._requires_eval = True  # The restored logits are not from a live decode: re-read one token.
    return True
