"""The llama.cpp engine in-process on the real SmolLM2 model: cancellation, limits, cache reuse, UTF-8."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from daemon import llama_adapter
from daemon.engine import LlamaEngine
from daemon.messages import ChatMessage, Finished, GenerationRequest, PromptTooLong, Sampling
from daemon.settings import load_settings

T = TypeVar("T")
SYSTEM = ChatMessage("system", "You are a helpful assistant.")
STORY = ChatMessage("user", "Write a very long story about a lighthouse keeper and the sea.")


def greedy(max_tokens: int = 64, stop: tuple[str, ...] = ()) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=1, repeat_penalty=1.1, stop=stop)


def request(*messages: ChatMessage, sampling: Sampling | None = None) -> GenerationRequest:
    return GenerationRequest((SYSTEM, *messages), sampling or greedy())


@pytest.fixture(scope="module")
def engine_runner(test_model: Path) -> Iterator[Callable[[Callable[[LlamaEngine], Awaitable[T]]], T]]:
    """Runs coroutines against one loaded engine on one long-lived event loop."""
    loop = asyncio.new_event_loop()
    settings = load_settings({"n_ctx": "1024", "max_tokens": "400", "queue_size": "4"}, environ={})
    engine = LlamaEngine(settings, test_model)
    loop.run_until_complete(engine.load())

    def run(scenario: Callable[[LlamaEngine], Awaitable[T]]) -> T:
        return loop.run_until_complete(asyncio.wait_for(scenario(engine), 120))

    yield run  # type: ignore[misc]
    loop.run_until_complete(engine.close())
    loop.close()


async def collect(engine: LlamaEngine, req: GenerationRequest) -> tuple[list[str], Finished]:
    pieces: list[str] = []
    async with engine.generate(req) as gen:
        async for piece in gen:
            pieces.append(piece)
    assert gen.result is not None
    return pieces, gen.result


def test_cancel_stops_within_one_token(engine_runner: Callable[..., object]) -> None:
    async def scenario(engine: LlamaEngine) -> tuple[int, Finished]:
        async with engine.generate(request(STORY, sampling=greedy(400))) as gen:
            seen = 0
            async for _ in gen:
                seen += 1
                if seen == 5:
                    gen.cancel()
                    seen_at_cancel = seen
        assert gen.result is not None
        return seen_at_cancel, gen.result

    seen_at_cancel, result = engine_runner(scenario)  # type: ignore[misc]
    assert result.reason == "cancelled"
    # The token being computed when the flag was set may finish; nothing after it is produced.
    assert result.usage.completion_tokens <= seen_at_cancel + 1


def test_max_tokens_ends_with_length(engine_runner: Callable[..., object]) -> None:
    _, result = engine_runner(lambda e: collect(e, request(STORY, sampling=greedy(12))))  # type: ignore[misc]
    assert result.reason == "length"
    assert result.usage.completion_tokens == 12


def test_stop_string_cuts_the_answer(engine_runner: Callable[..., object]) -> None:
    _, full = engine_runner(lambda e: collect(e, request(STORY, sampling=greedy(60))))  # type: ignore[misc]
    words = full.text.split()
    stop = words[len(words) // 2]
    pieces, cut = engine_runner(  # type: ignore[misc]
        lambda e: collect(e, request(STORY, sampling=greedy(60, stop=(stop,)))))
    assert cut.reason == "stop"
    assert cut.text == full.text[: full.text.index(stop)]
    assert "".join(pieces) == cut.text


def test_follow_up_evaluates_only_new_tokens(engine_runner: Callable[..., object]) -> None:
    question = ChatMessage("user", "Name three colours.")
    _, first = engine_runner(lambda e: collect(e, request(question)))  # type: ignore[misc]
    follow = (question, ChatMessage("assistant", first.text), ChatMessage("user", "And three animals?"))
    _, second = engine_runner(lambda e: collect(e, request(*follow)))  # type: ignore[misc]
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + first.usage.completion_tokens
    assert second.timings.prompt_eval_tokens < 30 < second.usage.prompt_tokens


def test_one_generation_at_a_time(engine_runner: Callable[..., object]) -> None:
    async def scenario(engine: LlamaEngine) -> tuple[Finished, Finished]:
        (_, a), (_, b) = await asyncio.gather(collect(engine, request(STORY, sampling=greedy(40))),
                                              collect(engine, request(STORY, sampling=greedy(40))))
        return a, b

    a, b = engine_runner(scenario)  # type: ignore[misc]
    waited = max(a.timings.queue_ms, b.timings.queue_ms)
    first = a if a.timings.queue_ms < b.timings.queue_ms else b
    assert waited >= 0.8 * first.timings.total_ms, "the second waited for the first to finish"


def test_question_too_long_for_the_context(engine_runner: Callable[..., object]) -> None:
    huge = ChatMessage("user", "lighthouse " * 2000)
    with pytest.raises(PromptTooLong, match="tokens"):
        engine_runner(lambda e: collect(e, request(huge)))


def test_old_turns_are_dropped_to_fit(engine_runner: Callable[..., object]) -> None:
    filler = "The sea was grey and the wind was cold. " * 25
    history = [ChatMessage("user" if i % 2 == 0 else "assistant", f"{i}: {filler}") for i in range(8)]
    _, result = engine_runner(  # type: ignore[misc]
        lambda e: collect(e, request(*history, ChatMessage("user", "Summarise."), sampling=greedy(20))))
    assert result.dropped_turns >= 2
    assert result.usage.prompt_tokens + 400 <= 1024


def test_characters_split_across_tokens_are_sent_whole(engine_runner: Callable[..., object],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    raw: list[bytes] = []
    original = llama_adapter.Decoder._sample

    def recording(self: llama_adapter.Decoder, *args: object) -> Iterator[bytes]:
        for data in original(self, *args):  # type: ignore[arg-type]
            raw.append(data)
            yield data

    monkeypatch.setattr(llama_adapter.Decoder, "_sample", recording)
    question = ChatMessage("user", "请重复这句话：我爱北京天安门。")
    pieces, result = engine_runner(lambda e: collect(e, request(question, sampling=greedy(80))))  # type: ignore[misc]
    split = [data for data in raw if not _is_complete_utf8(data)]
    assert split, "the scenario must contain tokens that end inside a character"
    assert "".join(pieces) == b"".join(raw).decode("utf-8", errors="replace") == result.text
    assert "\ufffd" not in result.text


def _is_complete_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_an_answer_past_max_generation_seconds_stops_with_time_limit(engine_runner: Callable[..., object],
                                                                    test_model: Path) -> None:
    async def scenario(engine: LlamaEngine) -> Finished:
        limited = load_settings({"n_ctx": "1024", "max_tokens": "400", "queue_size": "4",
                                 "max_generation_seconds": "0.5"}, environ={})
        assert not await engine.reload(limited, test_model)  # applies to the next answer, no new model
        try:
            return (await collect(engine, request(STORY, sampling=greedy(400))))[1]
        finally:
            await engine.reload(load_settings({"n_ctx": "1024", "max_tokens": "400", "queue_size": "4"},
                                              environ={}), test_model)

    result = engine_runner(scenario)  # type: ignore[misc]
    assert result.reason == "time_limit"
    assert result.usage.completion_tokens < 400
    _, unlimited = engine_runner(lambda e: collect(e, request(STORY, sampling=greedy(30))))  # type: ignore[misc]
    assert unlimited.reason == "length", "the limit was for that answer's settings only"
