"""Delivering a planned answer: curated text streamed like the model's, or the model's answer let through only
as far as its sections support it, replaced by the fallback when they do not."""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Awaitable, Callable

from daemon.knowledge.planning import Plan
from daemon.knowledge.support import SupportCheck
from daemon.messages import Finished, Timings, Usage

_LOGGER = logging.getLogger(__name__)

OnPiece = Callable[[str], Awaitable[None]]
OnRetract = Callable[[], Awaitable[None]]

# Curated text goes out in pieces of about a word (English) or two characters (Chinese), like tokens.
_PIECES = re.compile(r"\s*[\u3400-\u9fff\uf900-\ufaff]{1,2}|\s*[^\s\u3400-\u9fff\uf900-\ufaff]+|\s+")


def pieces(text: str) -> list[str]:
    return _PIECES.findall(text)


class KnowledgeAnswer:
    """One answer following `plan`. The caller feeds the model's pieces to `piece` (grounded and ordinary
    answers) and stops the model when it returns False; `finish` then settles what the visitor was told."""

    def __init__(self, plan: Plan, on_piece: OnPiece, on_retract: OnRetract | None, fallback: str) -> None:
        self.plan = plan
        self._on_piece = on_piece
        self._on_retract = on_retract
        self._fallback = fallback
        self._check = SupportCheck(plan.evidence, plan.question, plan.about) if plan.kind == "grounded" else None
        self.shown: list[str] = []

    @property
    def canned(self) -> bool:
        """The answer is a fixed text (an FAQ entry or the fallback): no model is needed."""
        return self.plan.canned

    @property
    def unsupported(self) -> bool:
        return self._check is not None and self._check.violation is not None

    async def stream_canned(self) -> Finished:
        started = time.perf_counter()
        first: float | None = None
        for part in pieces(self.plan.text):
            await self._show(part)
            first = first or time.perf_counter()
        elapsed = (time.perf_counter() - started) * 1000
        timings = Timings(queue_ms=0.0, ttft_ms=round(((first or started) - started) * 1000, 2),
                          prompt_eval_tokens=0, prompt_ms=0.0, tokens_per_s=0.0, total_ms=round(elapsed, 2))
        finished = Finished(reason="stop", text=self.plan.text, usage=Usage(0, 0), timings=timings)
        return self._annotate(finished)

    async def piece(self, text: str) -> bool:
        """Pass on what may be shown of the model's next piece; False once the answer is unsupported."""
        if self._check is None:
            await self._show(text)
            return True
        if released := self._check.feed(text):
            await self._show(released)
        return self._check.violation is None

    async def finish(self, finished: Finished) -> Finished:
        """The answer as it stands after the model stopped: annotated with its kind and sources, or replaced by
        the fallback (after a retract) when the sections do not support it."""
        stopped = finished.reason in ("cancelled", "time_limit") and not self.unsupported
        # A stopped answer keeps what was shown: its held-back tail was never checked, so it is dropped.
        if self._check is not None and not stopped and self._check.violation is None \
                and (rest := self._check.finish()):
            await self._show(rest)
        if not self.unsupported:
            return self._annotate(dataclasses.replace(finished, text="".join(self.shown)))
        assert self._check is not None
        self.shown.clear()
        if self._on_retract is not None:
            await self._on_retract()
        if (quote := self.plan.quote) and not self._check.declined:
            _LOGGER.info("a grounded answer was replaced by its section's words: it %s", self._check.violation)
            for part in pieces(quote):
                await self._show(part)
            return self._annotate(dataclasses.replace(finished, reason="stop", text=quote))
        _LOGGER.info("a grounded answer was replaced by the fallback: it %s", self._check.violation)
        for part in pieces(self._fallback):
            await self._show(part)
        return dataclasses.replace(finished, reason="stop", text=self._fallback, knowledge="fallback", sources=())

    async def _show(self, text: str) -> None:
        self.shown.append(text)
        await self._on_piece(text)

    def _annotate(self, finished: Finished) -> Finished:
        return dataclasses.replace(finished, knowledge=self.plan.kind, sources=self.plan.sources)
