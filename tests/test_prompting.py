"""Fitting a conversation into the context window, with a word tokenizer standing in for the model's."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from daemon.messages import ChatMessage, PromptTooLong
from daemon.prompting import fit_prompt


def render(messages: Sequence[ChatMessage]) -> str:
    return " ".join(f"<{m.role}> {m.content}" for m in messages)


def tokenize(text: str) -> list[int]:
    return [len(word) for word in text.split()]


SYSTEM = ChatMessage("system", "be kind")  # 3 tokens


def turns(n: int, words: int = 9) -> list[ChatMessage]:
    return [ChatMessage("user" if i % 2 == 0 else "assistant", " ".join([f"t{i}"] * words)) for i in range(n)]


def test_everything_fits() -> None:
    history = [*turns(4), ChatMessage("user", "q")]
    fitted = fit_prompt([SYSTEM, *history], render, tokenize, n_ctx=100, reply_budget=10)
    assert fitted.dropped_turns == 0 and len(fitted.tokens) == 3 + 4 * 10 + 2


def test_oldest_exchanges_drop_first_and_the_system_prompt_stays() -> None:
    history = [*turns(6), ChatMessage("user", "q")]
    seen: list[str] = []

    def recording_render(messages: Sequence[ChatMessage]) -> str:
        seen.append(render(messages))
        return seen[-1]

    fitted = fit_prompt([SYSTEM, *history], recording_render, tokenize, n_ctx=40, reply_budget=10)
    assert fitted.dropped_turns == 4  # two whole exchanges
    assert seen[-1].startswith("<system> be kind <user> t4")
    assert seen[-1].endswith("<user> q")


def test_a_question_that_cannot_fit_alone() -> None:
    question = ChatMessage("user", "word " * 50)
    with pytest.raises(PromptTooLong, match="needs 54 tokens"):
        fit_prompt([SYSTEM, *turns(2), question], render, tokenize, n_ctx=40, reply_budget=10)


def test_works_without_a_system_prompt() -> None:
    fitted = fit_prompt([*turns(4), ChatMessage("user", "q")], render, tokenize, n_ctx=25, reply_budget=5)
    assert fitted.dropped_turns == 4 and len(fitted.tokens) == 2
