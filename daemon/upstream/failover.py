"""FailoverEngine, the engine of ENGINE=upstream: the upstream while it is up, else the local model.

A question whose upstream fails before any text (unreachable, refused, no first token in time) marks the
upstream down and is answered by the local model in the same request (or fails with upstream_unavailable
without one). An upstream lost in the middle of an answer ends that answer as an error (upstream_lost: the
kiosk shows it interrupted, history stores it so) and marks the upstream down, so the next question goes to
the local model; the health follower sends questions upstream again once it answers.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from daemon.engine import LlamaEngine
from daemon.gate import ModelGate
from daemon.generation import Generation, PrefixReport
from daemon.messages import GenerationRequest, PrefillReport
from daemon.settings import Settings
from daemon.upstream.engine import UpstreamEngine
from daemon.upstream.errors import UpstreamFailure, UpstreamLost, UpstreamUnavailable
from daemon.upstream.health import HealthFollower
from daemon.upstream.stream import UpstreamGeneration

_LOGGER = logging.getLogger(__name__)

OnFailover = Callable[[str], None]
"""Told the reason ("unreachable", "refused", "first_token_timeout", "lost") each time a question or the next
ones leave the upstream for the local model (or for the upstream_unavailable error)."""


@dataclass(frozen=True)
class EngineState:
    """Which engine answers now, for the hello frame, /readyz and /status."""

    kind: str
    serving: str
    upstream: str = ""
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v or k in ("kind", "serving")}


def engine_state(engine: object) -> EngineState:
    state = getattr(engine, "state", None)
    return state() if callable(state) else EngineState("local", "local")


class FailoverEngine:
    def __init__(self, settings: Settings, upstream: UpstreamEngine, local: LlamaEngine | None) -> None:
        self.upstream, self.local = upstream, local
        self._health = HealthFollower(lambda: not upstream.up, upstream.check, settings.upstream_health_interval)
        self.on_failover: OnFailover = lambda reason: None
        self.on_answer: Callable[[str], None] = lambda engine: None
        """Told "upstream" or "local" for each answer the model finished (the metrics count them)."""

    @property
    def serving(self) -> str:
        return "upstream" if self.upstream.up or self.local is None else "local"

    @property
    def ready(self) -> bool:
        return self.upstream.up or (self.local is not None and self.local.ready)

    @property
    def model_id(self) -> str:
        return self.upstream.model_id if self.serving == "upstream" or self.local is None else self.local.model_id

    @property
    def gate(self) -> ModelGate:
        return self.local.gate if self.serving == "local" and self.local is not None else self.upstream.gate

    @property
    def model_path(self) -> Path | None:
        """The local model's file while it serves (the metrics follow the file that answers); None upstream."""
        return self.local.model_path if self.local is not None and self.serving == "local" else None

    def state(self) -> EngineState:
        up = "up" if self.upstream.up else "down"
        if self.upstream.up:
            detail = self.upstream.detail
        elif self.local is not None:
            detail = f"the upstream is down ({self.upstream.detail}); the local model answers"
        else:
            detail = f"the upstream is down ({self.upstream.detail}) and there is no local model"
        return EngineState("upstream", self.serving, up, detail)

    def generate(self, request: GenerationRequest) -> Generation:
        if not self.upstream.up and self.local is None:
            raise UpstreamUnavailable(f"the upstream inference server is unavailable: {self.upstream.detail}")
        return FailoverGeneration(self, request)

    def failed(self, reason: str, detail: str) -> None:
        """The upstream failed a question: down until its health check answers again."""
        if self.upstream.mark_down(detail):
            self.on_failover(reason)

    async def load(self, system_prompts: Sequence[str] = ()) -> None:
        """Check the upstream once, follow its health, and load the local fallback model when there is one."""
        await self.upstream.check()
        self._health.start()
        if self.local is not None:
            await self.local.load(system_prompts)

    async def reload(self, settings: Settings, model_path: Path | None) -> bool:
        self.upstream.reload(settings)
        if self.local is not None and model_path is not None:
            return await self.local.reload(settings, model_path)
        return False

    async def warm_prefixes(self, system_prompts: Sequence[str]) -> PrefixReport:
        return await self.local.warm_prefixes(system_prompts) if self.local is not None else PrefixReport()

    async def prefill(self, request: GenerationRequest, text_end: str | None = None,
                      draft: bool = False) -> PrefillReport:
        # Reading ahead only helps the model that will answer: while the upstream serves, it would only take
        # the board's cores from the voice.
        if self.local is None or self.serving != "local":
            return PrefillReport(skipped="not_ready")
        return await self.local.prefill(request, text_end, draft)

    def yield_cpu(self, seconds: float) -> None:
        if self.local is not None:
            self.local.yield_cpu(seconds)

    def stalled_for(self) -> float:
        return self.local.stalled_for() if self.local is not None else 0.0

    def shutdown(self) -> None:
        self.upstream.shutdown()
        if self.local is not None:
            self.local.shutdown()

    async def close(self) -> None:
        await self._health.stop()
        await self.upstream.close()
        if self.local is not None:
            await self.local.close()


class FailoverGeneration(Generation):
    """One answer: upstream first when it is up; before any text a failure hands the question to the local
    model. Shares Generation's interface; the base class's constructor is deliberately not called."""

    def __init__(self, engine: FailoverEngine, request: GenerationRequest) -> None:
        self._engine, self._request = engine, request
        self._current: Generation | None = None
        self._cancelled = False
        self.result = None

    @property
    def started(self) -> bool:
        return self._current is not None and self._current.started

    def cancel(self) -> None:
        self._cancelled = True
        if self._current is not None:
            self._current.cancel()

    async def __aenter__(self) -> FailoverGeneration:
        engine = self._engine
        if engine.upstream.up or engine.local is None:
            await self._enter(engine.upstream.generate(self._request))
        else:
            await self._enter(engine.local.generate(self._request))
        return self

    async def _enter(self, generation: Generation) -> None:
        await generation.__aenter__()
        self._current = generation
        if self._cancelled:
            generation.cancel()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if self._current is not None:
            await self._current.__aexit__(exc_type, exc, tb)
            self.result = self._current.result

    async def __aiter__(self) -> AsyncIterator[str]:
        assert self._current is not None
        try:
            async for text in self._current:
                yield text
        except UpstreamFailure as exc:  # raised only before any text
            await self._fall_back(exc)
            async for text in self._current:
                yield text
        except UpstreamLost as exc:
            self._engine.failed("lost", str(exc))
            raise
        self.result = self._current.result
        self._engine.on_answer("upstream" if isinstance(self._current, UpstreamGeneration) else "local")

    async def _fall_back(self, exc: UpstreamFailure) -> None:
        engine, failed = self._engine, self._current
        assert failed is not None
        engine.failed(exc.reason, str(exc))
        self._current = None
        await failed.__aexit__(None, None, None)  # the upstream's place in its gate is free again
        if engine.local is None:
            raise UpstreamUnavailable(f"the upstream inference server is unavailable: {exc}") from None
        _LOGGER.info("answer %s: the upstream failed before its first token (%s); the local model answers",
                     self._request.request_id or "-", exc)
        await self._enter(engine.local.generate(self._request))
