"""Answering a question within a stored conversation, so that no turn is ever lost or half-stored.

The question is committed before the model starts; the answer is committed when it completes, or as
"interrupted" with the text written so far when it is cancelled, the client leaves, the model fails or the
daemon stops. A question the model never started on (busy, too long, cancelled while waiting) is taken back.
A turn the database refuses for now (locked, full) waits in memory and is saved later (see daemon.history);
the conversation goes on meanwhile, with the waiting turns in the model's context.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from daemon.context_cache import DRAFT
from daemon.generation import ChatEngine, Generation
from daemon.history import History, HistoryStore, NoSuchSession, Turn, TurnRef, TurnStatus
from daemon.knowledge.answers import KnowledgeAnswer, OnRetract
from daemon.knowledge.library import VenueKnowledge
from daemon.knowledge.planning import Plan
from daemon.messages import ChatMessage, Finished, GenerationRequest, PrefillReport
from daemon.settings import LiveSettings, Settings

_LOGGER = logging.getLogger(__name__)

OnPiece = Callable[[str], Awaitable[None]]
OnStart = Callable[[Generation | None], None]


def prompt_messages(system_prompt: str, turns: Sequence[Turn], question: str) -> tuple[ChatMessage, ...]:
    """The model's view of a conversation; exchanges whose answer never started are left out."""
    messages = [ChatMessage("system", system_prompt)]
    for turn in turns:
        if turn.role == "assistant" and turn.content:
            messages.append(ChatMessage("assistant", turn.content))
        elif turn.role == "user":
            if messages[-1].role == "user":
                messages.pop()  # A question without an answer (e.g. the daemon was killed mid-way).
            messages.append(ChatMessage("user", turn.content))
    if messages[-1].role == "user":
        messages.pop()
    return (*messages, ChatMessage("user", question))


def fallback_for(settings: Settings, lang: str) -> str:
    return settings.knowledge_fallback_zh if lang == "zh" else settings.knowledge_fallback


def _request(plan: Plan, settings: Settings, turns: Sequence[Turn], question: str, request_id: str, *,
             conversation: str) -> GenerationRequest:
    """What the model is asked for `question` under `plan`: the same for an answer and for its prefill."""
    messages = prompt_messages(plan.system_prompt, turns, question)
    return GenerationRequest(messages, settings.sampling(), request_id=request_id, conversation=conversation)


def _last_question(turns: Sequence[Turn]) -> str:
    return next((t.content for t in reversed(turns) if t.role == "user"), "")


class Conversations:
    """Opens sessions and answers questions in them, keeping the history store in step."""

    def __init__(self, settings: LiveSettings, engine: ChatEngine, history: History,
                 knowledge: VenueKnowledge | None = None) -> None:
        self._live = settings
        self._engine = engine
        self._history = history
        self._knowledge = knowledge or VenueKnowledge()

    async def open(self, session: str | None) -> tuple[str, list[Turn]]:
        """A new session (None) or an existing one with its turns; raises NoSuchSession."""

        def load(store: HistoryStore) -> tuple[str, list[Turn]]:
            if session is None:
                return store.create_session(), []
            return session, store.turns(session) + store.pending_turns(session)

        return await self._history.run(load)

    async def prefill(self, session: str | None, turns: Sequence[Turn] | None, partial: str,
                      draft: bool = False) -> PrefillReport:
        """Read the question `partial` (a transcript still being spoken) into the model ahead of time, with the
        messages answer() would build for it; nothing is stored. `session` None: the screen's next conversation,
        not created yet (daemon.context_cache.DRAFT); `turns` None: the session's turns, read from the history.
        `draft`: the partial seems complete; write the first clause of its answer too (daemon.prefill.draft)."""
        if turns is None:
            try:
                turns = await self._turns(session)
            except NoSuchSession:
                return PrefillReport(skipped="no_session")
        settings = self._live.current
        plan = await self._knowledge.plan(partial, settings, previous=_last_question(turns))
        if plan.canned:  # a fixed text: the model is not asked
            return PrefillReport(skipped="canned")
        request = _request(plan, settings, turns, partial, session or "", conversation=session or DRAFT)
        report = await self._engine.prefill(request, partial, draft)
        _LOGGER.debug("prefill in session %s: %s", session or "(new)", report)
        return report

    async def _turns(self, session: str | None) -> list[Turn]:
        if session is None:
            return []
        return await self._history.run(lambda store: store.turns(session) + store.pending_turns(session))

    async def answer(self, session: str, turns: Sequence[Turn], question: str, on_piece: OnPiece,
                     on_start: OnStart, on_retract: OnRetract | None = None) -> Finished:
        """Stream an answer through `on_piece`; `on_start` gets the running generation (None when done);
        `on_retract` is called when the model's answer is withdrawn for the fallback (venue knowledge).

        `Finished.stored` is False when the answer (or a turn before it) waits in memory to be saved."""
        asked = await self._history.append(session, "user", question, request_id=session)
        settings = self._live.current  # read per question: a reload applies to the next one
        try:
            plan = await self._knowledge.plan(question, settings, previous=_last_question(turns))
        except BaseException:
            await self._settle(session, asked, None, "", cancelled=True)
            raise
        answer = KnowledgeAnswer(plan, on_piece, on_retract, fallback_for(settings, plan.lang))
        if answer.canned:
            return await self._store_answer(session, session, await answer.stream_canned())
        request = _request(plan, settings, turns, question, session, conversation=session)
        generation: Generation | None = None
        try:
            generation = self._engine.generate(request)
            async with generation:
                on_start(generation)
                async for piece in generation:
                    if not await answer.piece(piece):
                        generation.cancel()  # unsupported: nothing more of it is shown
                        break
        except BaseException as exc:
            await self._settle(session, asked, generation, "".join(answer.shown),
                               cancelled=isinstance(exc, asyncio.CancelledError))
            raise
        finally:
            on_start(None)
        assert generation.result is not None
        return await self._store_answer(session, request.request_id, await answer.finish(generation.result))

    async def _store_answer(self, session: str, request_id: str, finished: Finished) -> Finished:
        status: TurnStatus = "complete" if finished.reason != "cancelled" else "interrupted"
        stored = True
        try:
            ref = await self._history.append(session, "assistant", finished.text, status, request_id=request_id)
            stored = ref.stored
        except NoSuchSession:  # Deleted (DELETE /api/sessions/{id}) while the answer was being written.
            _LOGGER.info("session %s was deleted while answering; its answer is not stored", session)
        t = finished.timings
        _LOGGER.info("answered in session %s: %s, %d tokens, first token after %.0f ms, %.1f tokens/s%s", session,
                     finished.reason, finished.usage.completion_tokens, t.ttft_ms, t.tokens_per_s,
                     "" if stored else " (not saved yet)",
                     extra={"SESSION_ID": session, "REQUEST_ID": request_id, "FINISH_REASON": finished.reason,
                            "TTFT_MS": round(t.ttft_ms, 1), "QUEUE_MS": round(t.queue_ms, 1),
                            "TOKENS_PER_S": round(t.tokens_per_s, 1),
                            "COMPLETION_TOKENS": finished.usage.completion_tokens, "STORED": stored})
        return finished if stored else dataclasses.replace(finished, stored=False)

    async def _settle(self, session: str, asked: TurnRef, generation: Generation | None, text: str, *,
                      cancelled: bool) -> None:
        """After a failure or cancellation: keep what the visitor was shown, or take the question back."""
        started = generation is not None and generation.started
        try:
            if text or (cancelled and started):
                await asyncio.shield(self._history.append(session, "assistant", text, "interrupted",
                                                          request_id=session))
            else:
                await asyncio.shield(self._history.run(lambda store: store.take_back(session, asked)))
        except NoSuchSession:
            _LOGGER.info("session %s was deleted while it was answering", session)
        except Exception:
            _LOGGER.exception("could not store the end of an interrupted answer in session %s", session)
