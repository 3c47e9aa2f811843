"""Test doubles at the ChatEngine seam, and a helper that serves the real app on a real socket.

`ScriptedEngine` is a model-free `ChatEngine`: `generate()` returns a real `daemon.generation.Generation`, whose
worker thread "decodes" a scripted list of text pieces, sleeping `delay` seconds per piece and checking the
cancel flag once per piece, as the llama.cpp engine does once per token. It records every request and every
run so tests can assert on what the HTTP layer asked for and on how the generation ended.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from daemon.app import create_app
from daemon.appkeys import LISTENING, SETTINGS
from daemon.gate import ModelGate
from daemon.generation import ChatEngine, Emit, Generation, PrefixReport
from daemon.messages import (
    EngineError,
    Finished,
    FinishReason,
    GenerationRequest,
    ModelNotReady,
    PrefillReport,
    Timings,
    Usage,
)
from daemon.settings import load_settings

DEFAULT_PIECES = ("Hello", ",", " world", "!")
API_TOKEN = "test-api-token-0123456789abcdef"
"""The API token `serve` configures unless told otherwise; `request_json` sends it to /api/ by default."""
HARNESS_DEFAULTS: dict[str, object] = {"voice": False, "history_mode": "keep", "api_token": API_TOKEN}
"""What `serve` sets unless a test says otherwise: history_mode keep, so that what a test stored can still be
read after its connection closed (tests of the visit and off modes ask for them)."""


@dataclass
class Run:
    """What one generation did on the worker thread."""

    request: GenerationRequest
    emitted: list[str] = field(default_factory=list)
    saw_cancel: bool = False
    first_text_at: float | None = None
    finished: Finished | None = None
    done: threading.Event = field(default_factory=threading.Event)


def prompt_tokens(request: GenerationRequest) -> int:
    """The scripted engine's "tokenizer": one token per whitespace-separated word."""
    return sum(len(m.content.split()) for m in request.messages)


class ScriptedEngine:
    """A ChatEngine without a model. Set `ready`, `error`, `pieces` or `delay` before (or between) requests."""

    def __init__(self, pieces: Sequence[str] = DEFAULT_PIECES, *, delay: float = 0.0,
                 model_id: str = "scripted-model", queue_size: int = 8, ready: bool = True,
                 error: type[EngineError] | None = None, end_reason: FinishReason = "stop") -> None:
        self.pieces = list(pieces)
        self.delay = delay
        self.model_id = model_id
        self.ready = ready
        self.error = error
        """Raised on the worker thread when a run starts (as PromptTooLong is by the real engine)."""
        self.end_reason: FinishReason = end_reason
        """The reason reported when the script runs out (the model's end-of-generation token)."""
        self.requests: list[GenerationRequest] = []
        """Every request passed to generate(), including ones that never ran."""
        self.runs: list[Run] = []
        """Every generation that got the model and started on the worker thread."""
        self.generations: list[Generation] = []
        self.shut_down = False
        self.warmed: list[list[str]] = []
        self.prefills: list[tuple[GenerationRequest, str | None]] = []
        """Every prefill asked for, with its text_end, including ones skipped."""
        self._gate = ModelGate(queue_size)

    @property
    def gate(self) -> ModelGate:
        return self._gate

    def generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        if not self.ready:
            raise ModelNotReady("the model is still loading")

        def run(cancel: threading.Event, emit: Emit, queue_ms: float) -> Finished:
            return self._run(Run(request), cancel, emit, queue_ms)

        generation = Generation(self._gate, run)
        self.generations.append(generation)
        return generation

    async def warm_prefixes(self, system_prompts: Sequence[str]) -> PrefixReport:
        """Records the system prompts whose model state the daemon would store (it has no model state)."""
        self.warmed.append(list(system_prompts))
        return PrefixReport(loaded=len(system_prompts))

    async def prefill(self, request: GenerationRequest, text_end: str | None = None,
                      draft: bool = False) -> PrefillReport:
        """As LlamaEngine.prefill, without a model: skipped when not ready or the model is taken or awaited,
        else it "reads" the whole prompt (one token per word) at once."""
        self.prefills.append((request, text_end))
        if not self.ready:
            return PrefillReport(skipped="not_ready")
        if self._gate.busy or self._gate.waiting:
            return PrefillReport(skipped="busy")
        tokens = prompt_tokens(request)
        return PrefillReport(evaluated=tokens, target=tokens)

    def shutdown(self) -> None:
        """As LlamaEngine.shutdown: turn away every waiter and stop the running answer after its current piece."""
        self.shut_down = True
        self._gate.close()
        for generation in self.generations:
            generation.cancel()

    def _run(self, run: Run, cancel: threading.Event, emit: Emit, queue_ms: float) -> Finished:
        self.runs.append(run)
        started = time.perf_counter()
        try:
            if self.error is not None:
                raise self.error("scripted engine failure")
            reason = self._decode(run, cancel, emit)
            run.finished = self._report(run, reason, started, queue_ms)
            return run.finished
        finally:
            run.done.set()

    def _decode(self, run: Run, cancel: threading.Event, emit: Emit) -> FinishReason:
        if cancel.is_set():  # Cancelled before the worker thread got to it, as the real Decoder checks.
            run.saw_cancel = True
            return "cancelled"
        for piece in self.pieces:
            time.sleep(self.delay)  # "decoding" the token
            if cancel.is_set():
                run.saw_cancel = True
                return "cancelled"
            run.first_text_at = run.first_text_at or time.perf_counter()
            run.emitted.append(piece)
            emit(piece)
            if len(run.emitted) >= run.request.sampling.max_tokens:
                return "length"
        return self.end_reason

    def _report(self, run: Run, reason: FinishReason, started: float, queue_ms: float) -> Finished:
        now = time.perf_counter()
        n, prompt = len(run.emitted), prompt_tokens(run.request)
        timings = Timings(queue_ms=round(queue_ms, 2), ttft_ms=round(((run.first_text_at or now) - started) * 1000, 2),
                          prompt_eval_tokens=prompt, prompt_ms=0.0,
                          tokens_per_s=round(n / (now - started), 2) if n else 0.0,
                          total_ms=round((now - started) * 1000, 2))
        return Finished(reason=reason, text="".join(run.emitted), usage=Usage(prompt, n), timings=timings)


@dataclass
class Served:
    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def urls(self) -> list[str]:
        """The base URL of each address served, in the order of `serve`'s `hosts`."""
        return [f"http://{host}:{port}" for host, port, *_ in self.runner.addresses]


@asynccontextmanager
async def serve(engine: ChatEngine, hosts: tuple[str, ...] = ("127.0.0.1",), **settings: object
                ) -> AsyncIterator[Served]:
    """The real app on each of `hosts` (a free port each; `url` is the first's), set up as daemon.server does;
    `settings` as in load_settings, over HARNESS_DEFAULTS."""
    with tempfile.TemporaryDirectory(prefix="kioskd-test-") as state_dir:
        merged = {"state_dir": state_dir, **HARNESS_DEFAULTS, **settings}
        app = create_app(load_settings(merged, environ={}), engine)
        async with _serve_app(app, hosts) as served:
            yield served


@asynccontextmanager
async def _serve_app(app: web.Application, hosts: tuple[str, ...]) -> AsyncIterator[Served]:
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    try:
        for host in hosts:
            await web.TCPSite(runner, host, 0).start()
        app[LISTENING].set()
        yield Served(app, runner, runner.addresses[0][1])
    finally:
        if runner.server is not None:
            await runner.cleanup()


async def request_json(served: Served, method: str, path: str, *, auth: bool = True, **kwargs: Any
                       ) -> tuple[int, Any]:
    """One HTTP request to the served app: its status and its JSON body (None when the body is empty).

    `kwargs` go to aiohttp's `request` (`params=`, `json=`, `data=`, `headers=`); the whole exchange is bounded
    in time. With `auth`, a request to /api/ carries the served app's API token (the whole archive), unless
    `headers` has an Authorization of its own.
    """
    token = served.app[SETTINGS].current.api_token
    if auth and token and path.startswith("/api/"):
        kwargs["headers"] = {"Authorization": f"Bearer {token}", **kwargs.get("headers", {})}
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http, \
            http.request(method, served.url + path, **kwargs) as resp:
        body = await resp.read()
        return resp.status, json.loads(body) if body else None
