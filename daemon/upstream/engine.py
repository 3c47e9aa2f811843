"""UpstreamEngine: answers from an OpenAI-compatible server (llama-server, vLLM, Ollama, SGLang), and whether
that server is up now."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

from daemon.gate import ModelGate
from daemon.generation import PrefixReport
from daemon.messages import EngineError, GenerationRequest, PrefillReport
from daemon.settings import Settings
from daemon.upstream.client import UpstreamClient
from daemon.upstream.stream import StreamLimits, UpstreamGeneration

_LOGGER = logging.getLogger(__name__)


class UpstreamEngine:
    """Up or down as the last answer or health check found it; starts down until the first check answers."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.client = UpstreamClient(settings)
        self._gate = ModelGate(settings.queue_size, settings.upstream_parallel)
        self._model = settings.upstream_model
        self._generations: weakref.WeakSet[UpstreamGeneration] = weakref.WeakSet()
        self.up = False
        self.detail = "not checked yet"

    @property
    def ready(self) -> bool:
        return self.up

    @property
    def model_id(self) -> str:
        return self._model or "upstream"

    @property
    def gate(self) -> ModelGate:
        return self._gate

    def generate(self, request: GenerationRequest) -> UpstreamGeneration:
        s = self._settings
        limits = StreamLimits(s.upstream_first_token_timeout, s.upstream_read_timeout, s.max_generation_seconds)
        generation = UpstreamGeneration(self.client, self._gate, request, self._model, limits)
        self._generations.add(generation)
        return generation

    def mark_down(self, detail: str) -> bool:
        """Returns whether this changed the state (the first failure after being up)."""
        changed = self.up
        if changed:
            _LOGGER.warning("upstream %s marked down: %s", self.client.base_url, detail)
        self.up, self.detail = False, detail
        return changed

    async def check(self) -> bool:
        """GET /models: up when it answers (and the model to ask for is known); resolves an empty
        upstream_model to the first model listed."""
        try:
            models = await self.client.models(self._settings.upstream_connect_timeout
                                              + self._settings.upstream_health_interval)
        except EngineError as exc:  # unreachable, or refused (e.g. a wrong token)
            self.mark_down(str(exc))
            return False
        if not self._model:
            if not models:
                self.mark_down(f"the upstream at {self.client.base_url} lists no model")
                return False
            self._model = models[0]
        if not self.up:
            _LOGGER.info("upstream %s is up, answering with model %s", self.client.base_url, self._model)
        self.up, self.detail = True, f"model {self._model} at {self.client.base_url}"
        return True

    def reload(self, settings: Settings) -> None:
        """SIGHUP: a rotated token file and new timeouts apply to the next question."""
        self._settings = settings
        self.client.reload_token(settings)
        if settings.upstream_token_file is not None:
            _LOGGER.info("reload: read the upstream token file %s again", settings.upstream_token_file)

    async def warm_prefixes(self, system_prompts: Sequence[str]) -> PrefixReport:
        return PrefixReport()  # the upstream keeps its own prompt cache

    async def prefill(self, request: GenerationRequest, text_end: str | None = None,
                      draft: bool = False) -> PrefillReport:
        return PrefillReport(skipped="not_ready")

    def shutdown(self) -> None:
        self._gate.close()
        for generation in list(self._generations):
            generation.cancel()

    async def close(self) -> None:
        await self.client.close()
