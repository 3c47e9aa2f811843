"""The venue knowledge in force: opened at start, replaced on reload only once the new index is ready."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from daemon.knowledge.index import KnowledgeIndex
from daemon.knowledge.planning import Plan, Policy, grounded_system_prompt, plan_answer
from daemon.settings import Settings

_LOGGER = logging.getLogger(__name__)


def policy(settings: Settings) -> Policy:
    return Policy(settings.system_prompt, settings.knowledge_fallback, settings.knowledge_fallback_zh,
                  settings.knowledge_only)


def index_path(settings: Settings) -> Path:
    return settings.state_dir / "knowledge" / "index.db"


class VenueKnowledge:
    """Owns the current KnowledgeIndex (or none, without a `knowledge` folder)."""

    def __init__(self) -> None:
        self.index: KnowledgeIndex | None = None

    async def open(self, settings: Settings) -> KnowledgeIndex | None:
        """The index for `settings.knowledge` (built in a thread when the folder changed), not yet in force;
        KnowledgeError for a broken folder."""
        if settings.knowledge is None:
            return None
        folder, db_path = settings.knowledge, index_path(settings)
        return await asyncio.to_thread(KnowledgeIndex.open, folder, db_path)

    def use(self, index: KnowledgeIndex | None) -> None:
        """Put `index` in force. The one it replaces is left to the garbage collector, not closed: a search
        that started on it (in a thread) finishes on it."""
        self.index = index

    async def plan(self, question: str, settings: Settings, previous: str = "") -> Plan:
        index = self.index
        if index is None:
            return plan_answer(None, question, policy(settings))
        return await asyncio.to_thread(plan_answer, index, question, policy(settings), previous)

    def close(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None


def system_prompts(settings: Settings, index: KnowledgeIndex | None) -> Sequence[str]:
    """Every system message an answer may start with: their model states are stored once (prefix states)."""
    sections = index.sections if index is not None else []
    return [settings.system_prompt, *(grounded_system_prompt(settings.system_prompt, s) for s in sections)]
