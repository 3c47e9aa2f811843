"""The llama.cpp adapter: one model context, one generation at a time, on one worker thread.

The event loop never touches the model. A generation runs on the engine's single thread and hands each piece
of text to the loop as soon as it is decoded; cancelling sets a flag that the thread checks after every token.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from daemon.board.report import log_profile
from daemon.context_cache import ContextCache
from daemon.gate import ModelGate
from daemon.generation import Emit, Generation, PrefixReport
from daemon.messages import (
    Busy,
    ChatMessage,
    EngineError,
    Finished,
    FinishReason,
    GenerationRequest,
    ModelNotReady,
    PrefillReport,
)
from daemon.prefill.draft import Draft, drafting_allowed, same_question, write_draft
from daemon.prefill.engine_prefill import Prefills, prefill_prompt
from daemon.prefix_states import PrefixStates, common_prefix, model_identity
from daemon.prompting import FittedPrompt, fit_prompt
from daemon.settings import Settings
from daemon.speculative import Speculation
from daemon.structured.grammar import answer_grammar
from daemon.structured.qwen_tools import render_tools_into
from daemon.textstream import StopMatcher, Utf8Assembler

_LOGGER = logging.getLogger(__name__)

# Used only when a GGUF file carries no chat template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class ModelLoadError(EngineError):
    code = "model_load_failed"


# Settings that decide how the model is loaded: changing one on reload loads the model again.
MODEL_SETTINGS = ("model", "model_name", "models_dir", "n_ctx", "n_batch", "flash_attn", "threads", "threads_batch",
                  "board_profile")


class LlamaEngine:
    """Owns the llama_cpp.Llama instance and the thread that drives it."""

    def __init__(self, settings: Settings, model_path: Path) -> None:
        self._settings = settings
        self._model_path = model_path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama")
        self._gate = ModelGate(settings.queue_size)
        self._llm: Any = None
        self._generations: weakref.WeakSet[Generation] = weakref.WeakSet()
        self._render: Callable[[Sequence[ChatMessage]], str] | None = None
        self._contexts = ContextCache(settings.context_cache)
        self._prefixes: PrefixStates | None = None
        self._prepared = False  # loaded and its prompt prefixes stored: questions may come
        self._last_progress = time.monotonic()  # written by the model thread, read by the watchdog
        self._yield_until = 0.0  # written by the loop, read by the model thread (a float: atomic enough)
        self._working = False  # the model thread is inside a generation (even one its client gave up on)
        self._prefills = Prefills(self._gate, self._executor)
        self._draft: Draft | None = None  # the first tokens of an answer, written ahead (model thread only)

    def yield_cpu(self, seconds: float) -> None:
        """Speech first: pause the model between tokens for up to `seconds` so the first sentence's voice gets
        the cores (on a 2-core board llama.cpp and Piper otherwise slow each other down); 0 resumes at once."""
        self._yield_until = time.monotonic() + seconds

    def mark_progress(self) -> None:
        self._last_progress = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds the answer being written has made no progress (0 when the model is idle)."""
        return time.monotonic() - self._last_progress if self._working else 0.0

    @property
    def ready(self) -> bool:
        return self._llm is not None and self._prepared

    @property
    def model_id(self) -> str:
        return self._settings.model_id

    @property
    def gate(self) -> ModelGate:
        return self._gate

    @property
    def model_path(self) -> Path:
        return self._model_path

    async def load(self, system_prompts: Sequence[str] = ()) -> None:
        """Load the model, then store the model state after each of `system_prompts` (see warm_prefixes); the
        engine is ready for questions only after both."""
        if not self._model_path.is_file():
            raise ModelLoadError(f"model file {self._model_path} does not exist; run `kioskd pull` "
                                 f"or set --model / KIOSKD_MODEL")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await loop.run_in_executor(self._executor, self._load)
        _LOGGER.info("model %s loaded in %.2f s", self._model_path, time.perf_counter() - started)
        await self.warm_prefixes(system_prompts)
        self._prepared = True

    async def reload(self, settings: Settings, model_path: Path) -> bool:
        """Apply new settings. When the model file or how it is loaded changed, the new model is loaded on the
        model thread between answers while the old one keeps its place; the old one is closed only once the new
        one works (a failure raises ModelLoadError and changes nothing). Returns whether the model was swapped."""
        swap = model_path != self._model_path or any(
            getattr(settings, name) != getattr(self._settings, name) for name in MODEL_SETTINGS)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._apply, settings, model_path, swap)
        return swap

    def _apply(self, settings: Settings, model_path: Path, swap: bool) -> None:
        old_llm, old_settings, old_path = self._llm, self._settings, self._model_path
        if swap and not model_path.is_file():
            raise ModelLoadError(f"model file {model_path} does not exist")
        self._settings, self._model_path = settings, model_path
        if swap:
            try:
                self._load()
            except ModelLoadError:
                self._llm, self._settings, self._model_path = old_llm, old_settings, old_path
                raise
            if old_llm is not None:
                old_llm.close()
        if swap or settings.context_cache != old_settings.context_cache:
            self._contexts = ContextCache(settings.context_cache)  # saved states belong to the old model

    def _load(self) -> None:
        from daemon.llama_adapter import load_llama, make_renderer

        s = self._settings
        log_profile(s)
        try:
            llm = load_llama(self._model_path, n_ctx=s.n_ctx, n_batch=s.n_batch, threads=s.threads,
                             threads_batch=s.threads_batch, flash_attn=s.flash_attn)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelLoadError(f"cannot load model {self._model_path}: {exc}") from None
        self._render = make_renderer(llm, CHATML_TEMPLATE)
        llm.on_progress = self.mark_progress
        self._llm = llm
        identity = model_identity(self._model_path, s.n_ctx, s.flash_attn, s.state_dir / "prefixes")
        self._prefixes = PrefixStates(s.state_dir / "prefixes", identity)

    async def warm_prefixes(self, system_prompts: Sequence[str]) -> PrefixReport:
        """Make sure the model state after each system prompt is stored on disk (computed now if it is not),
        one prompt at a time through the gate so questions are answered in between. Prefixes not named any
        more are forgotten. Raises ModelNotReady before the model is loaded."""
        if self._llm is None:
            raise ModelNotReady("the model is still loading")
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        counts = {"loaded": 0, "built": 0, "failed": 0}
        wanted = []
        for prompt in dict.fromkeys(system_prompts):
            await self._acquire_for_upkeep()
            try:
                outcome, tokens = await loop.run_in_executor(self._executor, self._warm_one, prompt)
            finally:
                self._gate.release()
            counts[outcome] += 1
            wanted.append(tokens)
        await loop.run_in_executor(self._executor, self._forget_prefixes, wanted)
        report = PrefixReport(counts["loaded"], counts["built"], round(time.perf_counter() - started, 3),
                              counts["failed"])
        _LOGGER.info("prompt prefixes: %d loaded from disk, %d computed, in %.2f s", report.loaded, report.built,
                     report.seconds)
        return report

    async def _acquire_for_upkeep(self) -> None:
        while True:
            try:
                await self._gate.acquire()
                return
            except Busy:  # Questions fill the line: they go first, upkeep waits for room.
                await asyncio.sleep(0.5)

    def _warm_one(self, system_prompt: str) -> tuple[str, list[int]]:
        llm, prefixes = self._llm, self._prefixes
        assert self._render is not None and prefixes is not None
        probes = [self._render([ChatMessage("system", system_prompt), ChatMessage("user", text)])
                  for text in ("Hello", "你好")]
        first, second = (llm.tokenize_prompt(p) for p in probes)
        tokens = first[: common_prefix(first, second)]
        self._contexts.switch(llm, "")  # The live context is about to be replaced: keep the conversation's.
        self.mark_progress()
        try:
            return prefixes.ensure(llm, tokens), tokens
        except OSError as exc:  # A full or read-only disk: answers still work, they read the prefix each time.
            _LOGGER.warning("cannot store a prompt prefix state in %s: %s", self._settings.state_dir, exc)
            return "failed", tokens

    def _forget_prefixes(self, wanted: list[list[int]]) -> None:
        if self._prefixes is not None:
            self._prefixes.forget_all_but(wanted)

    async def prefill(self, request: GenerationRequest, text_end: str | None = None,
                      draft: bool = False) -> PrefillReport:
        """Read `request`'s prompt up to the end of `text_end` (default: its last message) into the context ahead
        of the question, without answering: only when the model is idle, giving way to a question at once
        (see daemon.prefill.engine_prefill). `draft`: read all of it and write the answer's first clause too,
        for the answer to `request` to start with (daemon.prefill.draft)."""
        if not self.ready:
            return PrefillReport(skipped="not_ready")
        if time.monotonic() < self._yield_until:  # the kiosk's voice has the cores
            return PrefillReport(skipped="busy")
        if draft and drafting_allowed(request.sampling, answer_grammar(request)):
            return await self._prefills.run(lambda cancel: self._draft_now(request, cancel),
                                            drafting=lambda question: same_question(request, question))
        end = request.messages[-1].content if text_end is None else text_end
        return await self._prefills.run(lambda cancel: self._prefill_now(request, end, cancel))

    @contextmanager
    def _speculating(self, share_cores: bool) -> Iterator[None]:
        """Work on the model thread ahead of a question (a prefill or a draft): the watchdog watches it as it
        watches an answer. `share_cores`: it leaves the speech recognizer a core (daemon.llama_adapter)."""
        from daemon.llama_adapter import sharing_the_cores

        self._working = True
        self.mark_progress()
        try:
            with sharing_the_cores(self._llm) if share_cores else nullcontext():
                yield
        finally:
            self._working = False

    def _draft_now(self, request: GenerationRequest, cancel: threading.Event) -> PrefillReport:
        # At full width: a draft is written once the words are settled, when the recognizer has only the
        # trailing silence left to hear, and the visitor is waiting for it (daemon.prefill.speech).
        with self._speculating(share_cores=False):
            report, self._draft = write_draft(self._llm, lambda: self._prepare(request), request.sampling, cancel)
        return report

    def _prefill_now(self, request: GenerationRequest, text_end: str, cancel: threading.Event) -> PrefillReport:
        assert self._render is not None
        with self._speculating(share_cores=True):  # the visitor is still speaking
            return prefill_prompt(self._llm, self._render, lambda: self._prepare(request)[0], request.messages,
                                  text_end, cancel)

    def generate(self, request: GenerationRequest) -> Generation:
        self._prefills.interrupt(request)  # a question goes before any prefill (but the draft of its answer)
        if not self.ready:
            raise ModelNotReady("the model is still loading")

        def run(cancel: threading.Event, emit: Emit, queue_ms: float) -> Finished:
            self._working = True
            try:
                return self._run(request, cancel, emit, queue_ms)
            finally:
                self._working = False

        generation = Generation(self._gate, run, self._executor, self._settings.max_generation_seconds)
        self._generations.add(generation)
        return generation

    def shutdown(self) -> None:
        """Stop the running answer after its current token and turn away everything that waits."""
        self._gate.close()
        self._prefills.interrupt()
        for generation in list(self._generations):
            generation.cancel()

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _pause_if_asked(self, cancel: threading.Event) -> None:
        while (pause := self._yield_until - time.monotonic()) > 0 and not cancel.is_set():
            time.sleep(min(pause, 0.01))

    def _prepare(self, request: GenerationRequest) -> tuple[FittedPrompt, int]:
        """The context and prompt for `request`: its conversation's state, the fitted prompt and the longest
        stored prefix of it; shared by answers and prefills, so a prefill reads exactly what its answer would."""
        llm = self._llm
        self._contexts.switch(llm, request.conversation)
        if request.sampling.seed is not None:
            # A seeded answer must repeat exactly: its prompt is read the same way each time (from a stored prefix
            # or from the start). Reusing whatever the context holds would compute the last logits in another
            # batch shape, whose last bits differ, and at temperature > 0 the answer drifts.
            llm.n_tokens = 0
        budget = min(request.sampling.max_tokens, self._settings.max_tokens)
        assert self._render is not None
        # Tools, tool calls and tool turns as plain turns in Qwen2.5's format, which any chat template renders.
        messages = render_tools_into(request.messages, request.tools, request.tool_choice)
        fitted = fit_prompt(messages, self._render, llm.tokenize_prompt, llm.n_ctx(), budget)
        if self._prefixes is not None:
            self._prefixes.restore_longest(llm, fitted.tokens)
        return fitted, budget

    def _speculation(self) -> Speculation | None:
        if not self._settings.speculative_decoding:
            return None
        return Speculation(self._llm, self._settings.speculative_max_draft, self._contexts.answers)

    def _run(self, request: GenerationRequest, cancel: threading.Event, emit: Emit,
             queue_ms: float) -> Finished:
        from daemon.llama_adapter import Decoder, finished_report

        llm, s = self._llm, request.sampling
        started = time.perf_counter()
        self.mark_progress()
        if self._settings.fault_engine_hang:  # Fault injection: a model thread stuck in native code.
            time.sleep(self._settings.fault_engine_hang)
        fitted, budget = self._prepare(request)
        grammar = answer_grammar(request)
        draft, self._draft = self._draft, None
        drafted = draft if draft is not None and draft.fits(fitted.tokens, s, llm, grammar) else None
        speculation = self._speculation()
        decoder = Decoder(llm, fitted.tokens, s, cancel, budget, request.request_id, self._settings.fault_engine_raise,
                          drafted.tokens if drafted else (), drafted is not None and drafted.complete, grammar,
                          speculation)
        assembler, stopper = Utf8Assembler(), StopMatcher(s.stop)
        pieces: list[str] = []
        for raw in decoder:
            text = stopper.feed(assembler.feed(raw))
            self.mark_progress()
            if text:
                decoder.mark_text()
                pieces.append(text)
                emit(text)
                self._pause_if_asked(cancel)
            if stopper.stopped:
                break
        tail = stopper.feed(assembler.flush()) + stopper.flush()
        if tail:
            decoder.mark_text()
            pieces.append(tail)
            emit(tail)
        reason: FinishReason = "stop" if stopper.stopped else decoder.reason
        finished = finished_report(decoder, reason, "".join(pieces), fitted.dropped_turns, started, queue_ms,
                                   drafted.evaluated if drafted else 0, speculation)
        self._contexts.answers.add(decoder.tokens, self._contexts.active)
        t = finished.timings
        _LOGGER.info("answer %s: %s, %d prompt tokens (%d evaluated), %d generated (%d drafted), ttft %.0f ms, "
                     "%.1f tokens/s", request.request_id or "-", reason, finished.usage.prompt_tokens,
                     t.prompt_eval_tokens, finished.usage.completion_tokens, t.drafted_tokens,
                     t.ttft_ms, t.tokens_per_s)
        return finished

