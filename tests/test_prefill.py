"""Prefill: a spoken question is read into the model while the visitor still says it (daemon.prefill).

The engine and the conversation store are real (SmolLM2 through LlamaEngine, SQLite history); only the speech
policy's tests use a fake prefill callable. Measurements print with `pytest -s`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from daemon.conversation import Conversations
from daemon.engine import LlamaEngine
from daemon.history import History
from daemon.messages import ChatMessage, Finished, GenerationRequest, PrefillReport, Sampling
from daemon.prefill import SpeechPrefill, engine_prefill
from daemon.prefill import draft as draft_module
from daemon.prefill.speech import head
from daemon.settings import LiveSettings, load_settings

T = TypeVar("T")
SYSTEM = "You are the helpful assistant of the city museum."
QWEN = Path("/root/.local/share/kioskd/models/qwen2.5-0.5b-instruct-q4_k_m.gguf")


@dataclass
class Rig:
    engine: LlamaEngine
    conversations: Conversations
    history: History


def _settings(state_dir: Path) -> Any:
    return load_settings({"n_ctx": "1024", "max_tokens": "40", "temperature": "0", "top_k": "1",
                          "state_dir": str(state_dir), "system_prompt": SYSTEM, "history_mode": "keep"},
                         environ={})


@pytest.fixture(scope="module")
def rig_runner(test_model: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[[Callable[[Rig], Awaitable[T]]], T]]:
    """One loaded engine and conversation store, on one long-lived event loop."""
    state = tmp_path_factory.mktemp("prefill")
    loop = asyncio.new_event_loop()
    settings = _settings(state)
    engine = LlamaEngine(settings, test_model)
    loop.run_until_complete(engine.load([SYSTEM]))
    history = loop.run_until_complete(History.open(state / "history.db"))
    rig = Rig(engine, Conversations(LiveSettings(settings), engine, history), history)

    def run(scenario: Callable[[Rig], Awaitable[T]]) -> T:
        return loop.run_until_complete(asyncio.wait_for(scenario(rig), 120))

    yield run  # type: ignore[misc]
    loop.run_until_complete(history.close())
    loop.run_until_complete(engine.close())
    loop.close()


async def ask(rig: Rig, question: str, session: str | None = None) -> tuple[str, Finished]:
    """Answer `question` as the kiosk does, in `session` (None: a new one); the session and the report."""
    session, turns = await rig.conversations.open(session)

    async def on_piece(_: str) -> None:
        return None

    finished = await rig.conversations.answer(session, turns, question, on_piece, lambda _: None)
    return session, finished


async def elsewhere(rig: Rig) -> None:
    """Another visitor's conversation in the live context: what a new question starts from in practice."""
    async with rig.engine.generate(_request("Tell me a joke about a cat.", "elsewhere", 2)) as gen:
        async for _ in gen:
            pass


async def baseline(rig: Rig, question: str) -> Finished:
    await elsewhere(rig)
    return (await ask(rig, question))[1]


async def spoken(rig: Rig, partials: list[str], question: str, stable_s: float = 0.05
                 ) -> tuple[list[PrefillReport], Finished]:
    """The visitor says `partials` then `question` (a new conversation), with the speech policy prefilling."""
    await elsewhere(rig)
    reports: list[PrefillReport] = []
    idle = asyncio.Event()
    idle.set()

    async def prefill(text: str, draft: bool) -> PrefillReport:
        idle.clear()
        try:
            report = await rig.conversations.prefill(None, None, text, draft)
        finally:
            idle.set()
        reports.append(report)
        return report

    policy = SpeechPrefill(prefill, stable_s=stable_s)
    for partial in partials:
        policy.partial(partial)
        await asyncio.sleep(stable_s * 2)  # each partial stays long enough to be stable...
        await idle.wait()  # ...and to be read (a slow test machine must not make this flaky)
    policy.final(question)
    await policy.close()
    return reports, (await ask(rig, question))[1]


def test_a_stable_partial_is_prefilled_and_the_answer_reads_only_the_tail(rig_runner: Callable[..., Any]) -> None:
    question = "What time does the museum open on Sunday mornings?"
    base = rig_runner(lambda rig: baseline(rig, question))
    reports, finished = rig_runner(lambda rig: spoken(rig, ["What time does the museum", question[:-10]], question))
    assert reports and all(r.skipped == "" for r in reports), reports
    assert sum(r.evaluated for r in reports) > 0
    assert finished.text == base.text, "at temperature 0 prefill changes nothing of the answer"
    assert finished.usage.prompt_tokens == base.usage.prompt_tokens
    # Left to read: the last word (" mornings?"), the held-back token and the assistant header (5 tokens).
    assert finished.timings.prompt_eval_tokens <= base.timings.prompt_eval_tokens - 6
    print(f"\nSmolLM2: answer read {base.timings.prompt_eval_tokens} prompt tokens ({base.timings.prompt_ms:.0f} ms) "
          f"without prefill, {finished.timings.prompt_eval_tokens} ({finished.timings.prompt_ms:.0f} ms) with")


@pytest.mark.parametrize(("partial", "question"), [
    ("What time does the museum close", "What time does the museum open?"),  # the last word revised
    ("Where can I buy tickets for the", "Is there a cafe in the building?"),  # another sentence
])
def test_a_final_transcript_that_differs_is_answered_as_without_prefill(rig_runner: Callable[..., Any],
                                                                       partial: str, question: str) -> None:
    base = rig_runner(lambda rig: baseline(rig, question))
    reports, finished = rig_runner(lambda rig: spoken(rig, [partial], question))
    assert reports and reports[-1].skipped == "" and reports[-1].evaluated > 0
    assert finished.text == base.text
    assert finished.timings.prompt_eval_tokens <= base.timings.prompt_eval_tokens
    shared = partial.split()[:3] == question.split()[:3]
    if shared:  # only what changed is read again
        assert finished.timings.prompt_eval_tokens < base.timings.prompt_eval_tokens - 3


def _request(text: str, conversation: str, max_tokens: int = 40) -> GenerationRequest:
    sampling = Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.1)
    return GenerationRequest((ChatMessage("system", SYSTEM), ChatMessage("user", text)), sampling,
                             conversation=conversation)


def test_prefill_while_an_answer_runs_is_skipped_at_once(rig_runner: Callable[..., Any]) -> None:
    async def scenario(rig: Rig) -> tuple[PrefillReport, float]:
        async with rig.engine.generate(_request("Write a long story about the sea.", "story", 60)) as gen:
            async for _ in gen:
                started = time.perf_counter()
                report = await rig.engine.prefill(_request("Where is the cloakroom", "other"))
                return report, time.perf_counter() - started
        raise AssertionError("the story wrote nothing")

    report, took = rig_runner(scenario)
    assert report.skipped == "busy" and report.evaluated == 0
    assert took < 0.05


def test_a_running_prefill_gives_way_to_a_question(rig_runner: Callable[..., Any],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_prefill, "MAX_SECONDS", 60.0)  # only the token cap and the question stop it
    long_text = "I would like to know more about " + " and ".join(f"the exhibition number {i}" for i in range(40))

    async def scenario(rig: Rig) -> tuple[PrefillReport, PrefillReport, Finished]:
        await elsewhere(rig)
        whole = await rig.engine.prefill(_request(long_text, "long-a"))  # uninterrupted, for comparison
        await elsewhere(rig)
        prefill = asyncio.create_task(rig.engine.prefill(_request(long_text, "long-b")))
        await asyncio.sleep(0.02)  # it has the model
        async with rig.engine.generate(_request("Hello!", "question", 8)) as gen:
            async for _ in gen:
                pass
        assert gen.result is not None
        return whole, await prefill, gen.result

    whole, interrupted, answer = rig_runner(scenario)
    assert whole.skipped == "" and whole.evaluated == engine_prefill.MAX_TOKENS
    assert interrupted.capped and interrupted.evaluated < whole.evaluated
    assert answer.timings.queue_ms < whole.ms / 2, "the question waited for one chunk, not the whole prefill"


def test_prefill_never_writes_to_the_history(rig_runner: Callable[..., Any]) -> None:
    async def scenario(rig: Rig) -> tuple[Any, Any, list[PrefillReport]]:
        session, _ = await ask(rig, "Where is the cloakroom?")

        def snapshot(store: Any) -> Any:
            return store.sessions(limit=1000), store.turns(session), store.pending_turns(session)

        before = await rig.history.run(snapshot)
        reports = [await rig.conversations.prefill(session, None, "And where are the toilets"),
                   await rig.conversations.prefill(None, None, "What does a ticket cost"),
                   await rig.conversations.prefill("no-such-session", None, "Hello")]
        return before, await rig.history.run(snapshot), reports

    before, after, reports = rig_runner(scenario)
    assert before == after
    assert [r.skipped for r in reports] == ["", "", "no_session"]


def test_a_new_conversation_continues_from_its_draft(rig_runner: Callable[..., Any]) -> None:
    """The prefill of a screen without a session yet is not saved as a conversation of its own."""
    async def scenario(rig: Rig) -> list[str]:
        await elsewhere(rig)
        await rig.conversations.prefill(None, [], "Can I take photos inside")
        await ask(rig, "Can I take photos inside?")
        return rig.engine._contexts.saved()

    assert not any(key.startswith("\0") for key in rig_runner(scenario))


# ---- drafts: the answer's first clause written on a stable partial (daemon.prefill.draft) ----


async def drafted_answer(rig: Rig, question: str) -> tuple[PrefillReport, Finished]:
    await elsewhere(rig)
    report = await rig.conversations.prefill(None, [], question, draft=True)
    return report, (await ask(rig, question))[1]


def test_an_answer_starts_with_the_draft_of_its_question(rig_runner: Callable[..., Any]) -> None:
    question = "What time does the museum open on Sunday?"
    base = rig_runner(lambda rig: baseline(rig, question))
    report, finished = rig_runner(lambda rig: drafted_answer(rig, question))
    assert report.skipped == "" and report.drafted > 0, report
    assert finished.text == base.text, "at temperature 0 the draft is the answer's own beginning"
    assert finished.usage.completion_tokens == base.usage.completion_tokens
    assert finished.usage.prompt_tokens == base.usage.prompt_tokens
    # The draft read the prompt; the answer re-reads only the draft's last token (sampled, not evaluated yet).
    assert finished.timings.prompt_eval_tokens <= 1 < base.timings.prompt_eval_tokens
    assert finished.timings.drafted_tokens == report.drafted and base.timings.drafted_tokens == 0
    assert finished.timings.draft_prompt_tokens == report.evaluated > 0 == base.timings.draft_prompt_tokens
    print(f"\nSmolLM2: drafted {report.drafted} tokens in {report.ms:.0f} ms; the answer's first text after "
          f"{finished.timings.ttft_ms:.0f} ms (without the draft {base.timings.ttft_ms:.0f} ms)")


def test_a_draft_of_another_question_is_not_used(rig_runner: Callable[..., Any]) -> None:
    question = "Is there a cafe in the building?"
    base = rig_runner(lambda rig: baseline(rig, question))

    async def scenario(rig: Rig) -> Finished:
        await elsewhere(rig)
        await rig.conversations.prefill(None, [], "Is there a cafe in the", draft=True)
        return (await ask(rig, question))[1]

    finished = rig_runner(scenario)
    assert finished.text == base.text
    assert 1 < finished.timings.prompt_eval_tokens < base.timings.prompt_eval_tokens  # the shared prefix stays


async def until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.001)):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError(f"still not so after {timeout_s} s")


async def while_drafting(rig: Rig, drafted: str, question: str) -> tuple[PrefillReport, Finished]:
    """A question asked as soon as the draft of `drafted` has the model."""
    await elsewhere(rig)
    await until(lambda: not rig.engine.gate.busy)  # the answer elsewhere hands the model back from a callback
    draft = asyncio.create_task(rig.engine.prefill(_request(drafted, "d"), draft=True))
    await until(lambda: rig.engine.gate.busy)
    async with rig.engine.generate(_request(question, "d")) as gen:
        async for _ in gen:
            pass
    assert gen.result is not None
    return await draft, gen.result


def test_a_question_waits_for_the_draft_of_its_answer_and_another_interrupts_it(
        rig_runner: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(draft_module, "MIN_CLAUSE_CHARS", 10_000)  # no clause ends it: the whole budget
    question, other = "Tell me about the history of the city museum.", "Where are the toilets?"
    same_report, same = rig_runner(lambda rig: while_drafting(rig, question, question))
    other_base = rig_runner(lambda rig: baseline(rig, other))
    other_report, other_answer = rig_runner(lambda rig: while_drafting(rig, question, other))
    assert same_report.drafted == draft_module.DRAFT_TOKENS and same.timings.prompt_eval_tokens <= 1, same_report
    assert other_report.drafted < draft_module.DRAFT_TOKENS, "the other question interrupted the draft"
    assert other_answer.text == other_base.text


def test_a_seeded_request_is_prefilled_but_not_drafted(rig_runner: Callable[..., Any]) -> None:
    seeded = dataclasses.replace(_request("Where is the shop?", "s"), sampling=dataclasses.replace(
        _request("", "").sampling, seed=7))
    report = rig_runner(lambda rig: rig.engine.prefill(seeded, draft=True))
    assert report.skipped == "" and report.drafted == 0 and report.evaluated > 0


# ---- the speech policy, with a fake prefill ----


class FakePrefill:
    def __init__(self, hold: bool = False) -> None:
        self.calls: list[str] = []
        self.drafts: list[str] = []
        self.cancelled: list[str] = []
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, text: str, draft: bool) -> str:
        self.calls.append(text)
        if draft:
            self.drafts.append(text)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
            return text
        except asyncio.CancelledError:
            self.cancelled.append(text)
            raise
        finally:
            self.running -= 1


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 10))  # type: ignore[arg-type]


def test_a_partial_is_prefilled_once_it_is_stable() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        fake = FakePrefill()
        policy = SpeechPrefill(fake, stable_s=0.1)
        policy.partial("Where")
        await asyncio.sleep(0.05)
        policy.partial("Where is")  # changed: the wait starts again
        await asyncio.sleep(0.07)
        early = list(fake.calls)
        await asyncio.sleep(0.08)
        policy.partial("Where is")  # the same text again is no change
        await asyncio.sleep(0.15)
        await policy.close()
        return early, fake.calls

    early, calls = run(scenario())
    assert early == []
    assert calls == ["Where is"]


def test_a_growing_partial_is_prefilled_but_its_last_word() -> None:
    async def scenario() -> list[str]:
        fake = FakePrefill()
        policy = SpeechPrefill(fake, stable_s=10.0, min_new_words=2)
        for text in ("What", "What time", "What time does", "What time does the", "What time does the museum"):
            policy.partial(text)
            await asyncio.sleep(0.01)
        await policy.close()
        return fake.calls

    assert run(scenario()) == ["What time", "What time does the"]


def test_one_prefill_in_flight_and_the_newest_text_next() -> None:
    """Prefills of a growing partial (not drafts, which a newer partial stops) wait for the one running."""
    async def scenario() -> tuple[FakePrefill, object]:
        fake = FakePrefill(hold=True)
        policy = SpeechPrefill(fake, stable_s=10.0, min_new_words=1)
        for text in ("Where is the", "Where is the shop", "Where is the shop open"):
            policy.partial(text)
            await asyncio.sleep(0.05)
        assert policy.in_flight and fake.calls == ["Where is"]
        fake.release.set()
        await asyncio.sleep(0.05)
        await policy.close()
        return fake, policy.last

    fake, last = run(scenario())
    assert fake.most == 1 and fake.drafts == [] and fake.cancelled == []
    assert fake.calls == ["Where is", "Where is the shop"], "the text that waited was replaced by the newer"
    assert last == "Where is the shop"


def test_a_final_transcript_cancels_the_prefill() -> None:
    async def scenario() -> tuple[FakePrefill, bool]:
        fake = FakePrefill(hold=True)
        policy = SpeechPrefill(fake, stable_s=0.01, min_new_words=10)
        policy.partial("Where is the")
        await asyncio.sleep(0.05)
        policy.partial("Where is the shop")  # waits for the one in flight
        policy.final("Where is the shop?")
        await asyncio.sleep(0.05)
        in_flight = policy.in_flight
        await policy.close()
        return fake, in_flight

    fake, in_flight = run(scenario())
    assert fake.calls == ["Where is the"] and fake.cancelled == ["Where is the"]
    assert not in_flight


def test_a_stable_partial_is_drafted_and_a_growing_one_only_prefilled() -> None:
    async def scenario() -> FakePrefill:
        fake = FakePrefill()
        policy = SpeechPrefill(fake, stable_s=0.05, min_new_words=2)
        for text in ("What time", "What time does the", "What time does the museum"):
            policy.partial(text)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await policy.close()
        return fake

    fake = run(scenario())
    assert fake.calls == ["What time does", "What time does the museum"]
    assert fake.drafts == ["What time does the museum"]


@pytest.mark.parametrize(("final", "kept"), [("Where is the shop", True), ("Where is the shop?", False)])
def test_the_final_transcript_keeps_only_the_draft_of_its_own_text(final: str, kept: bool) -> None:
    async def scenario() -> FakePrefill:
        fake = FakePrefill(hold=True)
        policy = SpeechPrefill(fake, stable_s=0.01, min_new_words=10)
        policy.partial("Where is the shop")
        await asyncio.sleep(0.05)
        policy.final(final)
        policy.cancel()  # the answer starting (barge-in) does not stop a kept draft either
        await asyncio.sleep(0.02)
        fake.release.set()
        await asyncio.sleep(0.02)
        await policy.close()
        return fake

    fake = run(scenario())
    assert fake.drafts == ["Where is the shop"]
    assert fake.cancelled == ([] if kept else ["Where is the shop"])


def test_a_new_partial_stops_the_draft_of_an_older_one() -> None:
    async def scenario() -> FakePrefill:
        fake = FakePrefill(hold=True)
        policy = SpeechPrefill(fake, stable_s=0.01, min_new_words=10)
        policy.partial("Where is the")
        await asyncio.sleep(0.05)
        policy.partial("Where is the shop")  # the visitor went on speaking
        await asyncio.sleep(0.01)
        fake.release.set()
        await asyncio.sleep(0.05)
        await policy.close()
        return fake

    fake = run(scenario())
    assert fake.cancelled == ["Where is the"]
    assert fake.drafts == ["Where is the", "Where is the shop"]


def test_a_settled_partial_is_drafted_at_once_and_only_once() -> None:
    async def scenario() -> tuple[list[str], FakePrefill]:
        fake = FakePrefill()
        policy = SpeechPrefill(fake, stable_s=None, min_new_words=10)
        policy.partial("Where is the shop")
        await asyncio.sleep(0.2)
        before = list(fake.calls)  # merely unchanged: without stable_s nothing is drafted
        policy.partial("Where is the shop", settled=True)
        await asyncio.sleep(0.01)  # at once, no waiting for the text to stay unchanged
        policy.partial("Where is the shop", settled=True)  # the same words settled again: drafted already
        await asyncio.sleep(0.02)
        await policy.close()
        return before, fake

    before, fake = run(scenario())
    assert before == []
    assert fake.calls == fake.drafts == ["Where is the shop"]


def test_a_settled_partial_is_drafted_after_a_plain_prefill_of_the_same_words() -> None:
    async def scenario() -> FakePrefill:
        fake = FakePrefill()
        policy = SpeechPrefill(fake, stable_s=None, min_new_words=1)
        policy.partial("Where is the")
        policy.partial("Where is the shop")  # prefills "Where is the" (all but the last word)
        await asyncio.sleep(0.02)
        policy.partial("Where is the", settled=True)  # Vosk's final result dropped "shop"
        await asyncio.sleep(0.02)
        await policy.close()
        return fake

    fake = run(scenario())
    assert fake.calls == ["Where is the", "Where is the"] and fake.drafts == ["Where is the"]


def test_close_ends_the_owner_task() -> None:
    async def scenario() -> int:
        before = len(asyncio.all_tasks())
        fake = FakePrefill(hold=True)
        policy = SpeechPrefill(fake, stable_s=0.01)
        policy.partial("Hello there")
        await asyncio.sleep(0.05)
        await policy.close()
        policy.partial("Hello there friend")  # after close: ignored
        await asyncio.sleep(0.05)
        return len(asyncio.all_tasks()) - before

    assert run(scenario()) == 0


def test_chinese_words_are_characters() -> None:
    assert head("博物馆几点开门") == "博物馆几点开"
    assert head("Where is 洗手间") == "Where is 洗手"
    assert head("Hello") == ""


# ---- what it saves on the default model ----


@pytest.mark.slow
@pytest.mark.skipif(not QWEN.is_file(), reason="the default Qwen model is not installed")
def test_measure_on_the_default_model(tmp_path: Path) -> None:
    async def scenario() -> tuple[Finished, list[PrefillReport], Finished]:
        settings = _settings(tmp_path)
        engine = LlamaEngine(settings, QWEN)
        await engine.load([SYSTEM])
        history = await History.open(tmp_path / "history.db")
        rig = Rig(engine, Conversations(LiveSettings(settings), engine, history), history)
        try:
            question = "What time does the museum open on Sunday mornings, and is there a discount for students?"
            base = await baseline(rig, question)
            reports, finished = await spoken(rig, [question[:40], question[:-12]], question)
            return base, reports, finished
        finally:
            await history.close()
            await engine.close()

    base, reports, finished = asyncio.run(scenario())
    print(f"\nQwen: answer read {base.timings.prompt_eval_tokens} prompt tokens ({base.timings.prompt_ms:.0f} ms, ttft "
          f"{base.timings.ttft_ms:.0f} ms) without prefill; prefill read {[r.evaluated for r in reports]} "
          f"({[r.ms for r in reports]} ms); the answer then {finished.timings.prompt_eval_tokens} "
          f"({finished.timings.prompt_ms:.0f} ms, ttft {finished.timings.ttft_ms:.0f} ms)")
    assert finished.text == base.text
    assert finished.timings.prompt_eval_tokens < base.timings.prompt_eval_tokens // 2
